"""How real records get a true value wrong or differently: typed addresses, nicknames, accents, dates, streets.

Pure functions of a value and a random stream; sandbox.hard decides which record gets which.
"""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import date

# Given names and the short forms people go by (English, German and French, as the world's countries).
NICKNAMES: dict[str, tuple[str, ...]] = {
    "William": ("Bill", "Will", "Billy"), "Robert": ("Bob", "Rob", "Bobby"), "Richard": ("Rick", "Dick", "Rich"),
    "James": ("Jim", "Jimmy"), "John": ("Jack", "Johnny"), "Michael": ("Mike", "Mick"), "Thomas": ("Tom", "Tommy"),
    "Christopher": ("Chris",), "Joseph": ("Joe", "Joey"), "Daniel": ("Dan", "Danny"), "Matthew": ("Matt",),
    "Anthony": ("Tony",), "Charles": ("Charlie", "Chuck"), "Edward": ("Ed", "Ted", "Eddie"),
    "Alexander": ("Alex",), "Andrew": ("Andy", "Drew"), "Benjamin": ("Ben",), "Samuel": ("Sam",),
    "Nicholas": ("Nick",), "Jonathan": ("Jon",), "Timothy": ("Tim",), "Steven": ("Steve",), "Stephen": ("Steve",),
    "Gregory": ("Greg",), "Jeffrey": ("Jeff",), "Kenneth": ("Ken",), "Ronald": ("Ron",), "Donald": ("Don",),
    "Douglas": ("Doug",), "Gerald": ("Jerry",), "Lawrence": ("Larry",), "Raymond": ("Ray",), "Peter": ("Pete",),
    "Frederick": ("Fred",), "Philip": ("Phil",), "Zachary": ("Zach",), "Joshua": ("Josh",), "Jacob": ("Jake",),
    "Nathan": ("Nate",), "Nathaniel": ("Nate",), "Patrick": ("Pat",), "David": ("Dave",), "Henry": ("Harry", "Hank"),
    "Harold": ("Harry",), "Francis": ("Frank",), "Vincent": ("Vince",), "Walter": ("Walt",), "Albert": ("Al",),
    "Elizabeth": ("Liz", "Beth", "Betty"), "Margaret": ("Maggie", "Peggy", "Meg"), "Katherine": ("Kate", "Kathy"),
    "Catherine": ("Kate", "Cathy"), "Kathleen": ("Kathy",), "Jennifer": ("Jen", "Jenny"), "Patricia": ("Pat", "Trish"),
    "Susan": ("Sue",), "Deborah": ("Deb", "Debbie"), "Debra": ("Deb",), "Rebecca": ("Becky",), "Jessica": ("Jess",),
    "Victoria": ("Vicky", "Tori"), "Christine": ("Chris", "Tina"), "Christina": ("Tina",), "Samantha": ("Sam",),
    "Alexandra": ("Alex",), "Abigail": ("Abby",), "Kimberly": ("Kim",), "Pamela": ("Pam",), "Barbara": ("Barb",),
    "Cynthia": ("Cindy",), "Sandra": ("Sandy",), "Judith": ("Judy",), "Melissa": ("Mel",), "Amanda": ("Mandy",),
    "Stephanie": ("Steph",), "Jacqueline": ("Jackie",), "Valerie": ("Val",), "Theresa": ("Terri",),
    "Johannes": ("Hannes",), "Friedrich": ("Fritz",), "Katharina": ("Kathi",), "Elisabeth": ("Lisa", "Sissi"),
    "Maximilian": ("Max",), "Stefanie": ("Steffi",), "Susanne": ("Susi",), "Andreas": ("Andi",),
    "Franziska": ("Franzi",), "Gabriele": ("Gabi",), "Joachim": ("Achim",), "Heinrich": ("Heinz",),
    "Wilhelm": ("Willi",), "Johann": ("Hans",), "Josef": ("Sepp",), "Magdalena": ("Lena",), "Bernhard": ("Bernd",),
    "Nicolas": ("Nico",), "Frédéric": ("Fred",), "Christophe": ("Chris",), "Alexandre": ("Alex",),
    "Dominique": ("Dom",), "Isabelle": ("Isa",), "Stéphanie": ("Steph",), "Philippe": ("Phil",),
    "Valérie": ("Val",), "Véronique": ("Véro",), "Emmanuel": ("Manu",), "Sébastien": ("Seb",),
    "Marguerite": ("Margot",), "Joséphine": ("Josie",), "Timothée": ("Tim",), "Mathieu": ("Mat",),
}
# The common slips of webmail domains, and of top-level domains otherwise.
DOMAIN_TYPOS: dict[str, tuple[str, ...]] = {
    "gmail.com": ("gmial.com", "gmai.com", "gamil.com", "gmail.co", "gmail.con", "gmal.com"),
    "yahoo.com": ("yaho.com", "yahooo.com", "yahoo.con"), "hotmail.com": ("hotmal.com", "hotmial.com"),
    "outlook.com": ("outlok.com", "outlook.con"), "icloud.com": ("iclod.com", "icloud.con"),
}
TLD_TYPOS = {"com": ("con", "cm", "co", "comm"), "de": ("dee", "d"), "fr": ("fe", "frr"), "io": ("oi",),
             "ca": ("cs",), "co.uk": ("co.k", "couk", "co.uk.")}
PLUS_TAGS = ("news", "shop", "work", "billing", "promo", "crm", "2024", "spam", "deals")
DOTTED_DOMAINS = ("gmail.com", "googlemail.com")  # Gmail ignores dots in the local part
STREET_WORDS = (("Street", "St"), ("Avenue", "Ave"), ("Road", "Rd"), ("Drive", "Dr"), ("Lane", "Ln"),
                ("Suite", "Ste"), ("Apartment", "Apt"), ("straße", "str."), ("Straße", "Str."), ("boulevard", "bd"),
                ("avenue", "av."), ("rue", "r."))


def mistyped_email(rng: random.Random, email: str) -> str:
    """A domain slip (gmial.com, .con) or two neighbouring letters of the local part swapped."""
    local, _, domain = email.partition("@")
    if rng.random() < 0.5 or len(local) < 2:
        lower = domain.lower()
        if lower in DOMAIN_TYPOS:
            return f"{local}@{rng.choice(DOMAIN_TYPOS[lower])}"
        for tld, slips in TLD_TYPOS.items():
            if lower.endswith(f".{tld}"):
                return f"{local}@{domain[: -len(tld)]}{rng.choice(slips)}"
    swaps = [i for i in range(len(local) - 1) if local[i] != local[i + 1]]
    if not swaps:  # nothing to swap ("aa"): a doubled letter instead
        return f"{local}{local[-1:]}@{domain}"
    i = rng.choice(swaps)
    return f"{local[:i]}{local[i + 1]}{local[i]}{local[i + 2 :]}@{domain}"


def tagged_email(rng: random.Random, email: str) -> str:
    """The same mailbox by another address: a +tag, or (Gmail) the dots of the local part moved."""
    local, _, domain = email.partition("@")
    if domain.lower() in DOTTED_DOMAINS and rng.random() < 0.5:
        plain = local.replace(".", "")
        if plain != local or len(plain) < 3:
            return f"{plain}@{domain}"
        i = rng.randrange(1, len(plain) - 1)
        return f"{plain[:i]}.{plain[i:]}@{domain}"
    return f"{local}+{rng.choice(PLUS_TAGS)}@{domain}"


def nickname(rng: random.Random, first: str) -> str | None:
    """A short form the person goes by, if their name has a known one."""
    forms = NICKNAMES.get(first)
    return rng.choice(forms) if forms else None


def initial(rng: random.Random, first: str) -> str:
    return first[:1] + rng.choice((".", ""))


def decomposed(name: str) -> str:
    """The name in NFD: accents as separate combining marks, as macOS and some forms send them."""
    return unicodedata.normalize("NFD", name)


def without_accents(name: str) -> str:
    """The name as an ASCII-only system keeps it (Zoé -> Zoe)."""
    return "".join(ch for ch in unicodedata.normalize("NFD", name) if not unicodedata.combining(ch))


def birth_date_text(rng: random.Random, born: date, error: bool) -> str:
    """YYYY-MM-DD, or when ``error`` with day and month swapped (if that still differs) or one digit wrong."""
    text = born.isoformat()
    if not error:
        return text
    if born.day <= 12 and born.day != born.month and rng.random() < 0.5:
        return f"{born.year:04d}-{born.day:02d}-{born.month:02d}"
    positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    i = rng.choice(positions)
    digit = rng.choice([d for d in "0123456789" if d != text[i]])
    return text[:i] + digit + text[i + 1 :]


def house(street: str, number: int) -> str:
    """The pool's street with this household's own house number, so neighbours do not share an address."""
    if re.search(r"\d", street):
        return re.sub(r"\d+", str(number), street, count=1)
    return f"{number} {street}"


def misrendered_address(rng: random.Random, street: str, postcode: str) -> tuple[str, str]:
    """A street abbreviated or recased, or a postcode with a digit wrong or its space dropped."""
    kind = rng.randrange(3)
    if kind == 0:
        for long, short in STREET_WORDS:
            if long in street:
                return street.replace(long, short, 1), postcode
        return street.upper(), postcode
    if kind == 1:
        return street.lower(), postcode
    if " " in postcode and rng.random() < 0.5:
        return street, postcode.replace(" ", "")
    digits = [i for i, ch in enumerate(postcode) if ch.isdigit()]
    if not digits:
        return street, postcode.lower()
    i = rng.choice(digits)
    return street, postcode[:i] + str((int(postcode[i]) + rng.randint(1, 9)) % 10) + postcode[i + 1 :]
