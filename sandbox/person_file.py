"""A labelled person file of another shape than the sandbox world: FEBRL-like records, no email, no phone.

Written apart from the world generator (it shares no list, rate or routine with people.py or spelling.py), so
`cdp identity link` can be compared with Splink alone on data the matcher was not shaped around. Each person is
an original record; some get duplicates, each duplicate corrupted field by field at the rates of `Corruption`
(documented below, one setting per rate). Typos may hit any position of a value, first letter included. Truth
(rec_id -> person_id) is written to its own file, never beside the records.

    python -m sandbox.person_file --people 10000 --seed 3 --output people.csv --truth truth.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


GIVEN_NAMES = _words(
    "olivia amelia isla ava mia grace chloe ella charlotte sophie emily ruby zoe lily harper evie sienna "
    "matilda willow jasmine hannah lucy georgia scarlett layla ivy eleanor alice ellie stella audrey hazel "
    "sarah jessica rebecca laura rachel natalie megan kate claire fiona joanne karen michelle nicole tanya "
    "vanessa yvonne oliver noah jack william leo lucas thomas henry charlie james ethan liam mason hudson "
    "archie harrison isaac samuel max alexander lachlan jacob joshua benjamin daniel ryan nathan luke dylan "
    "riley cooper angus hamish callum connor declan fraser gordon hugh ian keith lewis malcolm neil owen "
    "patrick quentin rhys stuart trent vaughan wesley xavier yusuf zachary adrian bruce craig dean elliot "
    "felix graham harvey jarrod kieran marcus nigel oscar phillip rodney simon travis victor warren aaron "
    "blake"
)
SURNAMES = _words(
    "smith jones williams brown wilson taylor johnson white martin anderson thompson nguyen thomas walker "
    "harris lee ryan robinson kelly king davis wright evans roberts green hall wood jackson clarke patel khan "
    "lewis james phillips mitchell campbell murphy young allen scott turner edwards hill morris baker morgan "
    "ward cooper collins carter bennett shaw parker cook bell watson murray price stewart hughes kennedy gray "
    "reid bailey fraser hamilton graham russell wallace mcdonald ross henderson palmer dixon grant rose "
    "marshall webb simpson barnes fisher holmes knight hunt black elliott hudson porter spencer payne lane "
    "burke duncan mason ferguson hart matthews gibson chapman lawrence ellis fox stone tran pham le huang "
    "chen wang zhang liu singh sharma kaur papadopoulos rossi russo ferrari esposito bianchi romano colombo "
    "nowak kowalski novak horvat schmidt schneider fischer weber meyer wagner becker schulz hoffmann oconnor "
    "obrien doherty gallagher quinn lynch brennan byrne nolan healy whelan mccarthy sullivan vandenberg "
    "jansen devries bakker visser smit meijer mulder bos vos peters hendriks dekker brouwer"
)
STREETS = _words(
    "acacia banksia bottlebrush wattle jacaranda waratah grevillea boronia kurrajong ironbark blackwood "
    "riverview hillcrest lakeside seaview parkland ridge valley meadow orchard vineyard harbour ocean "
    "victoria albert george elizabeth king queen william church station railway high main bridge mill school "
    "market park garden forest river beach cliff bay point heath moor oak elm ash pine cedar willow"
)
STREET_TYPES = ("street", "road", "avenue", "crescent", "place", "drive", "court", "lane", "parade", "terrace")
# Suburbs with their state; each gets one postcode, so postcode, suburb and state agree on an original record.
SUBURBS = (
    "NSW:bankstown,blacktown,parramatta,chatswood,hornsby,penrith,liverpool,manly,bondi,randwick,ryde,"
    "wollongong,newcastle,gosford,orange,dubbo,tamworth,bathurst,albury,lismore,"
    "VIC:geelong,ballarat,bendigo,frankston,dandenong,carlton,fitzroy,richmond,brunswick,box hill,"
    "ringwood,mildura,shepparton,warrnambool,traralgon,"
    "QLD:toowoomba,cairns,townsville,mackay,rockhampton,bundaberg,ipswich,logan,redcliffe,caloundra,"
    "SA:glenelg,norwood,unley,elizabeth,salisbury,mount gambier,whyalla,"
    "WA:fremantle,joondalup,rockingham,mandurah,bunbury,geraldton,kalgoorlie,"
    "TAS:hobart,launceston,devonport,burnie,ACT:belconnen,tuggeranong,woden,gungahlin,NT:darwin,palmerston"
)
KEYBOARD_NEIGHBOURS = dict(  # a slip of the finger lands on a neighbouring key
    zip(
        "qwertyuiopasdfghjklzxcvbnm",
        _words(
            "wa qes wrd etf ryg tuh yij uok ipl ol qsz awdx sefc drgv fthb gyjn hukm jil kol xs zdc xfv cgb vhn bjm nk"
        ),
        strict=True,
    )
)


@dataclass(frozen=True)
class Corruption:
    """Rates of the file; each is a share of duplicates (per field where it names one), except the first two.

    duplicated: share of people with at least one duplicate record; extra_duplicate: chance each further
    duplicate is added (geometric, at most `max_duplicates`). typo: one edit (substitute a neighbouring key,
    insert, delete, transpose neighbours) at any position of a name, street, suburb; missing: a field left
    blank; name_swap: given name and surname exchanged; dob_*: a date of birth with day and month swapped, one
    digit changed, or the year off by one; postcode_digit: one digit of the postcode changed; moved: a new
    street, number, suburb, postcode and state (the person moved); id_typo: one digit of the national id
    changed; id_missing: the national id left blank (also applied to originals); initial: the given name cut to
    its initial."""

    duplicated: float = 0.5
    extra_duplicate: float = 0.3
    max_duplicates: int = 4
    typo: float = 0.15
    missing: float = 0.07
    name_swap: float = 0.03
    initial: float = 0.02
    dob_swap: float = 0.03
    dob_digit: float = 0.05
    dob_year: float = 0.02
    postcode_digit: float = 0.04
    street_number_digit: float = 0.04
    moved: float = 0.05
    id_typo: float = 0.05
    id_missing: float = 0.15


COLUMNS = [
    "rec_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
]
TEXT_FIELDS = ("given_name", "surname", "address_1", "suburb")


def _suburbs() -> list[tuple[str, str, str]]:
    """(suburb, state, postcode): postcodes in each state's range, one per suburb."""
    first_digit = {"NSW": 2, "ACT": 2, "VIC": 3, "QLD": 4, "SA": 5, "WA": 6, "TAS": 7, "NT": 0}
    rows, state = [], ""
    for item in SUBURBS.split(","):
        state_part, _, name = item.rpartition(":")
        state = state_part or state
        rows.append((name, state, f"{first_digit[state]}{100 + 37 * len(rows) % 900:03d}"))
    return rows


def _zipf(rng: np.random.Generator, values: list[str] | tuple[str, ...], size: int) -> np.ndarray:
    """Draws with a few common values and a long tail, as names and places are."""
    weights = 1.0 / np.arange(1, len(values) + 1) ** 0.8
    order = rng.permutation(len(values))
    return np.asarray(values, dtype=object)[order][rng.choice(len(values), size=size, p=weights / weights.sum())]


def _typo(rng: np.random.Generator, text: str) -> str:
    if not text:
        return text
    i = int(rng.integers(len(text)))
    kind = rng.integers(4)
    if kind == 0 and text[i] in KEYBOARD_NEIGHBOURS:
        return text[:i] + str(rng.choice(list(KEYBOARD_NEIGHBOURS[text[i]]))) + text[i + 1 :]
    if kind == 1:
        return text[:i] + str(rng.choice(list(string.ascii_lowercase))) + text[i:]
    if kind == 2 and len(text) > 3:
        return text[:i] + text[i + 1 :]
    if i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text + text[-1]


def _digit(rng: np.random.Generator, digits: str) -> str:
    if not digits:
        return digits
    i = int(rng.integers(len(digits)))
    return digits[:i] + str((int(digits[i]) + int(rng.integers(1, 10))) % 10) + digits[i + 1 :]


def _people(rng: np.random.Generator, people: int) -> pd.DataFrame:
    places = _suburbs()
    place = rng.integers(len(places), size=people)
    born = pd.Timestamp("1940-01-01") + pd.to_timedelta(rng.integers(0, 365 * 65, size=people), unit="D")
    return pd.DataFrame(
        {
            "person_id": np.arange(people),
            "given_name": _zipf(rng, GIVEN_NAMES, people),
            "surname": _zipf(rng, SURNAMES, people),
            "street_number": rng.integers(1, 400, size=people).astype(str),
            "address_1": [
                f"{s} {t}" for s, t in zip(_zipf(rng, STREETS, people), _zipf(rng, STREET_TYPES, people), strict=True)
            ],
            "suburb": [places[p][0] for p in place],
            "postcode": [places[p][2] for p in place],
            "state": [places[p][1] for p in place],
            "date_of_birth": [d.strftime("%Y%m%d") for d in born],
            "soc_sec_id": (1_000_000 + rng.choice(8_999_999, size=people, replace=False)).astype(str),
        }
    )


def _corrupt(rng: np.random.Generator, record: dict[str, str], rates: Corruption) -> dict[str, str]:
    out = dict(record)
    if rng.random() < rates.moved:
        suburb, state, postcode = _suburbs()[int(rng.integers(len(_suburbs())))]
        out.update(
            suburb=suburb,
            state=state,
            postcode=postcode,
            street_number=str(rng.integers(1, 400)),
            address_1=f"{rng.choice(STREETS)} {rng.choice(STREET_TYPES)}",
        )
    if rng.random() < rates.name_swap:
        out["given_name"], out["surname"] = out["surname"], out["given_name"]
    if rng.random() < rates.initial:
        out["given_name"] = out["given_name"][:1]
    for name in TEXT_FIELDS:
        if rng.random() < rates.typo:
            out[name] = _typo(rng, out[name])
    dob = out["date_of_birth"]
    if rng.random() < rates.dob_swap and int(dob[6:]) <= 12:
        dob = dob[:4] + dob[6:] + dob[4:6]
    if rng.random() < rates.dob_digit:
        dob = dob[:4] + _digit(rng, dob[4:])  # the year's century stays plausible
    if rng.random() < rates.dob_year:
        dob = str(int(dob[:4]) + int(rng.choice([-1, 1]))) + dob[4:]
    out["date_of_birth"] = dob
    for name, rate in (
        ("postcode", rates.postcode_digit),
        ("street_number", rates.street_number_digit),
        ("soc_sec_id", rates.id_typo),
    ):
        if rng.random() < rate:
            out[name] = _digit(rng, out[name])
    for name in (*TEXT_FIELDS, "street_number", "postcode", "state", "date_of_birth"):
        if rng.random() < rates.missing:
            out[name] = ""
    return out


def generate(people: int, seed: int, rates: Corruption = Corruption()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(records, truth): records in COLUMNS with text values ("" = missing), shuffled; truth (rec_id, person_id)."""
    rng = np.random.default_rng(seed)
    originals = _people(rng, people)
    rows = []
    for person in originals.to_dict("records"):
        person_id = person.pop("person_id")
        copies = 0
        if rng.random() < rates.duplicated:
            copies = 1
            while copies < rates.max_duplicates and rng.random() < rates.extra_duplicate:
                copies += 1
        rows.append((person_id, person))
        rows += [(person_id, _corrupt(rng, person, rates)) for _ in range(copies)]
    for _, record in rows:
        if rng.random() < rates.id_missing:
            record["soc_sec_id"] = ""
    order = rng.permutation(len(rows))
    records = pd.DataFrame([rows[i][1] for i in order])
    records.insert(0, "rec_id", [f"r{i:07d}" for i in range(len(rows))])
    truth = pd.DataFrame({"rec_id": records["rec_id"], "person_id": [rows[i][0] for i in order]})
    return records[COLUMNS], truth


def write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--output", type=Path, required=True, help="records, .csv or .parquet")
    parser.add_argument("--truth", type=Path, required=True, help="rec_id,person_id")
    for rate in dataclasses.fields(Corruption):
        parser.add_argument(f"--{rate.name.replace('_', '-')}", type=type(rate.default), default=rate.default)
    args = parser.parse_args(argv)
    rates = Corruption(**{rate.name: getattr(args, rate.name) for rate in dataclasses.fields(Corruption)})
    records, truth = generate(args.people, args.seed, rates)
    write(records, args.output)
    write(truth, args.truth)
    print(f"{len(records):,} records of {args.people:,} people -> {args.output}; truth -> {args.truth}")


if __name__ == "__main__":
    main()
