"""Golden records on the identity graph: person profiles, B2B accounts and email addresses.

Everything here reads only the graph's contract tables (`identity.record_profiles`, `identity.identifiers`,
`identity.identifier_profiles`), staging and its own tables, so the graph may change how it links records freely.
Which source wins each person trait is declared in TRAITS, gathered into candidates by `traits_sql`
and decided by `choose_survivors` (trust order, and the agreement rule of rules.yaml); the other rules
(statuses, metric names, mail domains) are constants passed to the SQL in `sql/` as parameters.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import email_validator
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets import changes, freshness, glossary
from cdp_assets.glossary import ENDED_STATUSES, MRR_STATUSES, RUNNING_STATUSES
from cdp_assets.identity import normalise, profile_changes
from cdp_assets.identity.rules import AgreementRule
from cdp_assets.identity.rules import load as load_rules
from cdp_assets.raw import OWNER
from cdp_assets.staging import staging_key, staging_table
from cdp_assets.warehouse_access import columns, has_tables
from resources import SOURCES, primary_key


@dataclass(frozen=True)
class Candidate:
    """One place a trait may come from: a SQL expression over the stream's staging row `s`, or over
    `i`, the record's normalised identifier of type `id_type` in identity.identifiers. A witness's value never wins
    by trust; it only counts towards the value a profile's records agree on (sql/survivors.sql)."""

    stream: str  # "source.stream" as in identity.record_profiles
    expr: str
    id_type: str | None = None
    witness: bool = False


def column(stream: str, expr: str) -> Candidate:
    return Candidate(stream, expr)


def identifier(stream: str, id_type: str) -> Candidate:
    return Candidate(stream, "i.value", id_type)


def witness(stream: str, expr: str) -> Candidate:
    return Candidate(stream, expr, witness=True)


HUBSPOT, STRIPE, ZENDESK = "hubspot.contacts", "stripe.customers", "zendesk.users"
KLAVIYO, MIXPANEL = "klaviyo.profiles", "mixpanel.events"
# Zendesk keeps one full name; Stripe's `name` is sometimes the company, so it never names a person: it only
# witnesses which spelling of a name the records agree on.
FIRST_WORD = "CASE WHEN contains(trim(s.name), ' ') THEN split_part(trim(s.name), ' ', 1) END"
LAST_WORDS = "CASE WHEN contains(trim(s.name), ' ') THEN substr(trim(s.name), strpos(trim(s.name), ' ') + 1) END"

# Survivorship: per trait, its candidates in order of trust. The winner is the first non-blank value of a live
# record (a deleted record's only when no live record has one), of the profile's own (an identifier value it shares or
# another profile holds only when it has none, see NOT_OWN), by this order, then the latest source_updated_at;
# unless the agreement rule of rules.yaml (`survivorship`) corrects a misspelt trusted value (sql/survivors.sql).
# Sales keeps the CRM current, so it leads for who someone is and where they work; billing leads for the address
# people pay from; marketing's self-entered profile leads for location settings; the product knows its own user id.
TRAITS: dict[str, tuple[Candidate, ...]] = {
    "email": (
        identifier(HUBSPOT, "email"),
        identifier(STRIPE, "email"),
        identifier(ZENDESK, "email"),
        identifier(KLAVIYO, "email"),
        identifier(MIXPANEL, "email"),
    ),
    "first_name": (
        column(HUBSPOT, "s.first_name"),
        column(KLAVIYO, "s.first_name"),
        column(ZENDESK, FIRST_WORD),
        witness(STRIPE, FIRST_WORD),
    ),
    "last_name": (
        column(HUBSPOT, "s.last_name"),
        column(KLAVIYO, "s.last_name"),
        column(ZENDESK, LAST_WORDS),
        witness(STRIPE, LAST_WORDS),
    ),
    "phone": (
        identifier(HUBSPOT, "phone"),
        identifier(STRIPE, "phone"),
        identifier(ZENDESK, "phone"),
        identifier(KLAVIYO, "phone"),
    ),
    "company": (column(HUBSPOT, "s.company_name"), column(KLAVIYO, "s.organization")),
    "job_title": (column(HUBSPOT, "s.job_title"), column(KLAVIYO, "s.title")),
    "city": (column(STRIPE, "s.address_city"), column(HUBSPOT, "s.city"), column(KLAVIYO, "s.city")),
    "country": (column(HUBSPOT, "s.country"), column(KLAVIYO, "s.country")),  # a name, as both sources send it
    "country_code": (column(STRIPE, "s.address_country"),),  # ISO 3166-1 alpha-2, as only Stripe sends it
    "time_zone": (column(KLAVIYO, "s.time_zone"),),  # IANA; Zendesk's Rails names are another vocabulary
    "locale": (column(KLAVIYO, "s.locale"), column(ZENDESK, "s.locale")),
    "product_user_id": (
        column(MIXPANEL, "s.user_id"),
        column(STRIPE, "s.product_user_id"),
        column(ZENDESK, "s.external_id"),
        column(KLAVIYO, "s.external_id"),
    ),
    "email_marketing_consent": (column(KLAVIYO, "s.email_marketing_consent"),),
}

CLOSED_TICKET_STATUSES = ("solved", "closed", "deleted")
# HubSpot lifecycle stages from least to most advanced; a running subscription lifts a profile to "customer".
LIFECYCLE_FUNNEL = (
    "other",
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
)
# Klaviyo metric names behind each engagement count; a bounce was a send too.
EMAIL_METRICS = {
    "send_metrics": ["Received Email", "Bounced Email"],
    "open_metrics": ["Opened Email"],
    "click_metrics": ["Clicked Email"],
    "bounce_metrics": ["Bounced Email"],
}
# Domains (glob patterns) that say nothing about an employer.
FREE_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "yahoo.*", "ymail.com", "rocketmail.com", "outlook.*", "hotmail.*", "live.*",
    "msn.com", "icloud.com", "me.com", "mac.com", "aol.com", "aim.com", "protonmail.*", "proton.me", "pm.me",
    "zoho.com", "mail.com", "email.com", "fastmail.*", "hey.com", "tutanota.*", "yandex.*", "mail.ru", "qq.com",
    "163.com", "126.com", "gmx.*", "web.de", "t-online.de", "freenet.de", "arcor.de", "orange.fr", "wanadoo.fr",
    "free.fr", "sfr.fr", "laposte.net", "btinternet.com", "sky.com", "virginmedia.com", "ntlworld.com",
    "talktalk.net", "rogers.com", "shaw.ca", "sympatico.ca", "videotron.ca", "bell.net", "comcast.net",
    "verizon.net", "att.net", "sbcglobal.net", "cox.net", "charter.net",
)  # fmt: skip
DISPOSABLE_DOMAINS = (
    "mailinator.com", "yopmail.*", "guerrillamail.*", "sharklasers.com", "grr.la", "10minutemail.*", "temp-mail.*",
    "tempmail.*", "trashmail.*", "dispostable.com", "getnada.com", "maildrop.cc", "throwawaymail.com",
    "mailnesia.com", "mintemail.com", "fakeinbox.com", "spamgourmet.com", "mohmal.com", "emailondeck.com",
)  # fmt: skip

SQL = Path(__file__).parent / "sql"
CANDIDATE_SQL = (
    "SELECT $trait_{n} AS trait, {trust} AS trust, {witness} AS witness, {shared} AS shared, rp.profile_id, rp.stream,"
    " rp.record_id, nullif(trim(CAST({expr} AS VARCHAR)), '') AS value, s.source_updated_at AS changed_at,"
    " s.is_deleted"
    f" FROM {profile_changes.SCOPE} rp JOIN {{table}} s ON s.{{key}} = rp.record_id{{identifiers}}"
    " WHERE rp.stream = $stream_{n}"
)
IDENTIFIERS_JOIN = (
    " JOIN {identifiers} i ON i.stream = rp.stream AND i.record_id = rp.record_id AND i.id_type = $id_type_{n}"
)
# A value is the profile's own when identity placed it in the profile and did not judge it shared
# (identity.identifier_profiles). One it shares (a team's mailbox, a household's phone) reaches others too, and one
# identity placed in another profile (a record whose link to it was refused) keys that profile: either survives only
# when the profile has no value of its own for the trait (a sync with a key_type then leaves such a row out when the
# key is shared, or another profile's row carries it: sync/plan.py).
NOT_OWN = (
    "NOT EXISTS (SELECT 1 FROM {identifier_profiles} o WHERE o.id_type = i.id_type AND o.value = i.value"
    " AND o.profile_id = rp.profile_id AND NOT o.shared)"
)
IDENTIFIERS, IDENTIFIER_PROFILES = "identity.identifiers", "identity.identifier_profiles"
# What a following build's candidates read instead of each table: its rows for the build's records (profiles), taken
# once, rather than found again by a join over the whole table in each of the dozens of candidates.
SCOPED_SQL = {
    IDENTIFIERS: f"SELECT i.* FROM {IDENTIFIERS} i SEMI JOIN {{scope}} s USING (stream, record_id)",
    IDENTIFIER_PROFILES: f"SELECT * FROM {IDENTIFIER_PROFILES} WHERE profile_id IN (SELECT profile_id FROM {{scope}})",
}
STAGED_SQL = "SELECT * FROM {table} WHERE {key} IN (SELECT record_id FROM {scope} WHERE stream = $stream)"
# Per trait: its value, and where it came from, when that changed and which survivorship rule chose it.
PROVENANCE = {"value": "", "stream": "_source", "record_id": "_record_id", "changed_at": "_at", "rule": "_rule"}
PIVOT_SQL = (
    "CREATE OR REPLACE TEMP TABLE _profile_traits AS SELECT profile_id, {columns} FROM _trait_winners GROUP BY 1"
)
# The graph keys a record by its staging primary key, except product events: by `$insert_id`, Mixpanel's dedup key.
RECORD_ID_COLUMNS = {MIXPANEL: "insert_id"}
# Streams each asset reads from staging, beside the graph.
PERSON_STAGING = (
    ("stripe", "customers"), ("stripe", "subscriptions"), ("stripe", "invoices"), ("hubspot", "contacts"),
    ("zendesk", "users"), ("zendesk", "tickets"), ("klaviyo", "profiles"), ("klaviyo", "events"),
    ("klaviyo", "metrics"), ("mixpanel", "events"),
)  # fmt: skip
ACCOUNT_STAGING = (("hubspot", "companies"), ("hubspot", "contacts"), ("hubspot", "contact_companies"))
EMAIL_FOLLOWER = "identity.email_addresses"
PROFILES_KEY = AssetKey(["identity", "person_profiles"])
ACCOUNTS, ACCOUNT_PEOPLE = "identity.accounts", "identity.account_people"
DOMAINS, DOMAINS_SOURCE = "identity.company_domains", "staging.hubspot__companies"
# Each company domain an accounts build met, in the form an address at it takes, under a fingerprint of the normaliser
# that made it: a build normalises only the domains it has not met (one call per domain is most of a build's time).
DOMAINS_FINGERPRINT = changes.code_fingerprint([Path(normalise.__file__)],
                                               f"email_validator {email_validator.__version__}")
DOMAINS_SQL = f"""
CREATE TABLE IF NOT EXISTS {DOMAINS} (fingerprint VARCHAR NOT NULL, domain VARCHAR NOT NULL, clean_domain VARCHAR);
CREATE OR REPLACE TEMP TABLE _company_domains AS
SELECT domain, clean_domain FROM {DOMAINS}
WHERE fingerprint = $fingerprint AND domain IN (SELECT domain FROM {DOMAINS_SOURCE})"""
# The profiles whose accounts an accounts build changed (a 64-bit hash of each row, as staging's replay compares rows),
# logged as ACCOUNT_PEOPLE: those whose links to accounts changed, and those linked, before or after, to an account
# whose own fields changed ({fields}: the columns of TEMP _accounts, what the CRM and domains say of it). An account's
# sums over its people (people, MRR, tickets) change with any of them and are not logged: a view reading them is
# made whole every run.
ACCOUNT_CHANGES_SQL = f"""
WITH linked AS (
    (SELECT profile_id, hash(p) FROM {ACCOUNT_PEOPLE} p EXCEPT ALL SELECT profile_id, hash(p) FROM _account_people p)
    UNION ALL
    (SELECT profile_id, hash(p) FROM _account_people p EXCEPT ALL SELECT profile_id, hash(p) FROM {ACCOUNT_PEOPLE} p)
),
changed_accounts AS (
    (SELECT account_id, hash({{fields}}) FROM {ACCOUNTS}
     EXCEPT ALL SELECT account_id, hash({{fields}}) FROM _account_rows)
    UNION ALL
    (SELECT account_id, hash({{fields}}) FROM _account_rows
     EXCEPT ALL SELECT account_id, hash({{fields}}) FROM {ACCOUNTS})
)
SELECT DISTINCT profile_id AS key, NULL::JSON AS before FROM (
    SELECT profile_id FROM linked
    UNION ALL
    SELECT profile_id FROM {ACCOUNT_PEOPLE} WHERE account_id IN (SELECT account_id FROM changed_accounts)
    UNION ALL
    SELECT profile_id FROM _account_people WHERE account_id IN (SELECT account_id FROM changed_accounts))"""
HOLDERS = "identity.email_holders"  # each record holding an address, as the last build read it
# The addresses a following build makes again: those a record of an affected profile holds now or held at the last
# build (identity.email_holders), so an address a record dropped is made again too.
AFFECTED_ADDRESSES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _affected_addresses AS
SELECT email FROM {HOLDERS} WHERE profile_id IN (FROM {profile_changes.AFFECTED})
UNION
SELECT i.value FROM identity.identifiers i JOIN identity.record_profiles rp USING (stream, record_id)
WHERE i.id_type = 'email' AND rp.profile_id IN (FROM {profile_changes.AFFECTED})"""
# Every record holding one of them, on whatever profile: an address's row is made from all its holders.
ADDRESS_RECORDS_SQL = """
SELECT * FROM identity.record_profiles WHERE (stream, record_id) IN (
    SELECT stream, record_id FROM identity.identifiers
    WHERE id_type = 'email' AND value IN (FROM _affected_addresses))"""


CONTACT_COMPANIES = "hubspot__contact_companies"
# The accounts whose companies or domain, what links people to them, differ from the last build's (TEMP _accounts,
# the universe made whole, against ACCOUNTS), as they are now and as they were.
MOVED_ACCOUNTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _moved_accounts AS
WITH now AS (SELECT account_id, domain, coalesce(hubspot_company_ids, []) AS companies FROM _accounts),
was AS (SELECT account_id, domain, hubspot_company_ids AS companies FROM {ACCOUNTS})
(FROM now EXCEPT FROM was) UNION (FROM was EXCEPT FROM now)"""
# The profiles whose links to accounts a following build makes again: those person profiles or email addresses
# logged (their records, liveness, associations' contacts or addresses changed); every holder of an address one of
# them holds (a bounce changes each holder's link, and only the address's owner is logged); the owners of contacts
# whose company associations changed, now and before ({contacts}: changes.linked); and the people of each moved
# account, linked before or linking now by a company or a work address at its domain.
ACCOUNT_SCOPE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _account_scope AS
WITH logged AS (SELECT key AS profile_id FROM {changes.FOLLOWED} WHERE producer IN ($profiles, $addresses)),
contacts AS ({{contacts}}),
moved_companies AS (SELECT unnest(companies) AS company_id FROM _moved_accounts),
contact_companies AS (SELECT contact_id, unnest(company_ids) AS company_id FROM staging.{CONTACT_COMPANIES})
SELECT profile_id FROM logged
UNION
SELECT profile_id FROM {HOLDERS} WHERE email IN (SELECT email FROM {HOLDERS} WHERE profile_id IN (FROM logged))
UNION
SELECT rp.profile_id FROM identity.record_profiles rp
WHERE rp.stream = 'hubspot.contacts' AND (rp.record_id IN (FROM contacts) OR rp.record_id IN (
    SELECT contact_id FROM contact_companies WHERE company_id IN (FROM moved_companies)))
UNION
SELECT profile_id FROM {ACCOUNT_PEOPLE} WHERE account_id IN (SELECT account_id FROM _moved_accounts)
UNION
SELECT h.profile_id FROM {HOLDERS} h JOIN {EMAIL_FOLLOWER} e USING (email)
WHERE e.domain IN (SELECT domain FROM _moved_accounts)"""


def stream_table(stream: str) -> tuple[str, str]:
    """The staging table of a "source.stream" name and the column holding the graph's record_id."""
    source, name = stream.split(".")
    spec = SOURCES[source].streams[name]
    return staging_table(source, spec.entity), RECORD_ID_COLUMNS.get(stream, spec.primary_key)


def scoped_tables(conn: duckdb.DuckDBPyConnection, traits: dict[str, tuple[Candidate, ...]]) -> dict[str, str]:
    """For a following build: TEMP copies of the rows of the build's records (profile_changes.SCOPE) in each table
    the candidates of `traits` read; returns the copy's name by the table's."""
    tables = {}
    for table, sql in SCOPED_SQL.items():
        tables[table] = f"_scoped_{table.split('.')[1]}"
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {tables[table]} AS {sql.format(scope=profile_changes.SCOPE)}")
    for stream in sorted({candidate.stream for candidates in traits.values() for candidate in candidates}):
        table, key = stream_table(stream)
        if table in tables:  # one copy holds one stream's records
            raise ValueError(f"two trait streams read {table}: its scoped copy would hold one stream's records")
        tables[table] = f"_scoped_{table.split('.')[1]}"
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {tables[table]} AS "
                     + STAGED_SQL.format(table=table, key=key, scope=profile_changes.SCOPE), {"stream": stream})
    return tables


def traits_sql(traits: dict[str, tuple[Candidate, ...]], tables: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The query gathering every trait candidate of the rules, reading each table as `tables` names it (its scoped
    copy) or itself, and its parameters (traits, streams, identifier types)."""
    branches, params, n = [], {}, 0
    for trait, candidates in traits.items():
        for trust, candidate in enumerate(candidates):
            table, key = stream_table(candidate.stream)
            params[f"trait_{n}"], params[f"stream_{n}"] = trait, candidate.stream
            joins = ""
            if candidate.id_type:
                params[f"id_type_{n}"] = candidate.id_type
                joins = IDENTIFIERS_JOIN.format(n=n, identifiers=tables.get(IDENTIFIERS, IDENTIFIERS))
            shared = NOT_OWN.format(identifier_profiles=tables.get(IDENTIFIER_PROFILES, IDENTIFIER_PROFILES))
            branches.append(
                CANDIDATE_SQL.format(
                    trust=trust,
                    witness=candidate.witness,
                    shared=shared if candidate.id_type else "false",
                    expr=candidate.expr,
                    table=tables.get(table, table),
                    key=key,
                    identifiers=joins,
                    n=n,
                )
            )
            n += 1
    template = (SQL / "traits.sql").read_text()
    return template.format(candidates="\nUNION ALL\n".join(branches)), params


def choose_survivors(conn: duckdb.DuckDBPyConnection, agreement: AgreementRule) -> None:
    """_trait_winners: per profile and trait, the candidate of _trait_candidates that survives, and its rule."""
    conn.execute(
        (SQL / "survivors.sql").read_text(),
        {
            "agreement_traits": list(agreement.traits),
            "min_records": agreement.min_records,
            "max_edits": agreement.max_edits,
            "min_length": agreement.min_length,
        },
    )


def pivot_traits(conn: duckdb.DuckDBPyConnection, traits: dict[str, tuple[Candidate, ...]]) -> None:
    """_profile_traits: one row per profile, a value column and provenance columns per trait."""
    columns = ",\n    ".join(
        f"any_value({field}) FILTER (WHERE trait = $trait_{k}) AS {name}{suffix}"
        for k, name in enumerate(traits)
        for field, suffix in PROVENANCE.items()
    )
    conn.execute(PIVOT_SQL.format(columns=columns), {f"trait_{k}": name for k, name in enumerate(traits)})


def prepare(conn: duckdb.DuckDBPyConnection, as_of: datetime) -> None:
    """The temp tables both person profiles and email addresses read, over the records of the build's scope
    (profile_changes.SCOPE): records with liveness, email events (past or not at `as_of`)."""
    conn.execute((SQL / "person_records.sql").read_text())
    conn.execute((SQL / "email_events.sql").read_text(), {**EMAIL_METRICS, "as_of": as_of})


def build_person_profiles(conn: duckdb.DuckDBPyConnection) -> changes.Position:
    """Make the profiles the change log reaches again (profile_changes.py), or all of them; their rows replace the
    old ones, and the log's position is kept, in one transaction. Returns the build's position."""
    position = profile_changes.scope(conn, [f"{source}__{entity}" for source, entity in PERSON_STAGING])
    prepare(conn, position.as_of)
    sql, params = traits_sql(TRAITS, scoped_tables(conn, TRAITS) if position.whole is None else {})
    conn.execute(sql, params)
    choose_survivors(conn, load_rules().agreement)
    pivot_traits(conn, TRAITS)
    glossary.install(conn)
    conn.execute(
        (SQL / "person_profiles.sql").read_text(),
        {
            "running_statuses": list(RUNNING_STATUSES),
            "mrr_statuses": list(MRR_STATUSES),
            "ended_statuses": list(ENDED_STATUSES),
            "closed_ticket_statuses": list(CLOSED_TICKET_STATUSES),
            "lifecycle_funnel": list(LIFECYCLE_FUNNEL),
            "as_of": position.as_of,
        },
    )
    with changes.keeping(conn, position, f"SELECT profile_id AS key FROM {profile_changes.AFFECTED}"):
        changes.replace_rows(conn, position, "identity.person_profiles", "_person_profiles", "profile_id",
                             f"FROM {profile_changes.AFFECTED}", "profile_id")
    return position


def build_email_addresses(conn: duckdb.DuckDBPyConnection) -> changes.Position:
    """Make again the addresses the change log reaches (held now or at the last build by a record of a profile it
    reaches: profile_changes.py), from every record holding them, or all addresses; their rows and holders replace
    the old ones, and the log's position is kept, in one transaction. Returns the build's position."""
    position = profile_changes.affected(conn, EMAIL_FOLLOWER, [f"{source}__{entity}" for source, entity in
                                                               PERSON_STAGING], (EMAIL_FOLLOWER, HOLDERS))
    if position.whole is None:
        conn.execute(AFFECTED_ADDRESSES_SQL)
        profile_changes.records_scope(conn, ADDRESS_RECORDS_SQL)
    else:
        profile_changes.whole_scope(conn)
    prepare(conn, position.as_of)
    conn.execute(
        (SQL / "email_addresses.sql").read_text(),
        {"free_mail_domains": list(FREE_MAIL_DOMAINS), "disposable_domains": list(DISPOSABLE_DOMAINS)},
    )
    if position.whole is None:  # the profiles of the addresses made again, before and after (logged for consent)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _address_profiles AS SELECT profile_id FROM {EMAIL_FOLLOWER}"
                     " WHERE email IN (FROM _affected_addresses) UNION SELECT profile_id FROM _email_addresses"
                     " WHERE email IN (FROM _affected_addresses)")
    with changes.keeping(conn, position, "SELECT profile_id AS key FROM _address_profiles"):
        for table in (EMAIL_FOLLOWER, HOLDERS):
            changes.replace_rows(conn, position, table, f"_{table.split('.')[1]}", "email",
                                 "FROM _affected_addresses", "email")
    return position


def build_accounts(conn: duckdb.DuckDBPyConnection) -> changes.Position:
    """Accounts and their people replace the old ones together or not at all, with the profiles whose accounts
    changed logged for the views that follow them (ACCOUNT_CHANGES_SQL; everything, on a whole build or when the
    tables' columns changed). The accounts and their sums over people are made whole (a row per company or work
    domain); people's links to them, most of a build, again only for the profiles the log reaches (ACCOUNT_SCOPE_SQL),
    or for all when a producer rewrote whole, the code changed or there is no earlier build. Company domains are
    normalised in Python by the normaliser that gave addresses their domains, each distinct one once: those an
    earlier build met are read from DOMAINS. Returns the build's position."""
    conn.execute(DOMAINS_SQL, {"fingerprint": DOMAINS_FINGERPRINT})
    met = [d for (d,) in conn.execute(f"SELECT DISTINCT domain FROM {DOMAINS_SOURCE} WHERE domain <> ''"
                                      " AND domain NOT IN (SELECT domain FROM _company_domains)").fetchall()]
    conn.execute("INSERT INTO _company_domains SELECT unnest($domains::VARCHAR[]), unnest($clean::VARCHAR[])",
                 {"domains": met, "clean": [normalise.domain(d) for d in met]})
    conn.execute((SQL / "accounts_base.sql").read_text())
    position = changes.follow(conn, ACCOUNTS, [profile_changes.FOLLOWER, EMAIL_FOLLOWER, CONTACT_COMPANIES],
                              profile_changes.FINGERPRINT, (ACCOUNTS, ACCOUNT_PEOPLE))
    if position.whole is None:
        conn.execute(MOVED_ACCOUNTS_SQL)
        table = staging_table(*CONTACT_COMPANIES.split("__"))
        contacts, params = changes.linked(table, primary_key(CONTACT_COMPANIES), CONTACT_COMPANIES, "contact_id", 0)
        conn.execute(ACCOUNT_SCOPE_SQL.format(contacts=contacts),
                     {**params, "profiles": profile_changes.FOLLOWER, "addresses": EMAIL_FOLLOWER})
        profile_changes.records_scope(conn, "SELECT * FROM identity.record_profiles"
                                            " WHERE profile_id IN (FROM _account_scope)")
    else:
        profile_changes.whole_scope(conn)
    conn.execute((SQL / "account_people.sql").read_text())
    if position.whole is None and columns(conn, ACCOUNT_PEOPLE) != columns(conn, "_scope_account_people"):
        position = position.rebuilt("identity.account_people has other columns")  # as an older release left it
        profile_changes.whole_scope(conn)
        conn.execute((SQL / "account_people.sql").read_text())
    kept = "" if position.whole is not None else (
        f"FROM {ACCOUNT_PEOPLE} ANTI JOIN _account_scope USING (profile_id) UNION ALL BY NAME ")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _account_people AS {kept}FROM _scope_account_people")
    conn.execute((SQL / "accounts.sql").read_text())
    same = all(has_tables(conn, *table.split(".")) and columns(conn, table) == columns(conn, rows)
               for table, rows in ((ACCOUNT_PEOPLE, "_account_people"), (ACCOUNTS, "_account_rows")))  # fmt: skip
    account_columns = dict(columns(conn, "_account_rows"))
    own = [f'"{name}"' for name, _ in columns(conn, "_accounts") if name in account_columns]
    with changes.keeping(conn, position):
        changes.log(conn, ACCOUNT_PEOPLE, ACCOUNT_CHANGES_SQL.format(fields=", ".join(own)) if same else None)
        changes.replace_rows(conn, position, ACCOUNT_PEOPLE, "_account_people", "profile_id", "FROM _account_scope",
                             "account_id, profile_id")  # the scope's rows only, when following
        conn.execute(f"CREATE OR REPLACE TABLE {ACCOUNTS} AS FROM _account_rows ORDER BY account_id")
        conn.execute(f"CREATE OR REPLACE TABLE {DOMAINS} AS SELECT $fingerprint AS fingerprint, * FROM _company_domains"
                     " ORDER BY domain", {"fingerprint": DOMAINS_FINGERPRINT})
    return position


def measures(conn: duckdb.DuckDBPyConnection, sql: str) -> dict[str, float | int]:
    """One row of numbers, as materialisation metadata named by its columns."""
    cursor = conn.execute(sql)
    names = [description[0] for description in cursor.description]
    row = cursor.fetchone() or (None,) * len(names)
    return {
        name: round(float(value), 6) if isinstance(value, float) else int(value or 0)
        for name, value in zip(names, row, strict=True)
    }


def fill_rates_sql() -> str:
    return ", ".join(f'avg(({trait} IS NOT NULL)::INT) AS "fill_rate.{trait}"' for trait in TRAITS)


def identity_asset(
    name: str, description: str, deps: list[AssetKey]
) -> Callable[[Callable[[AssetExecutionContext], MaterializeResult]], AssetsDefinition]:
    return asset(
        key=AssetKey(["identity", name]),
        group_name="identity",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=deps,
        description=description,
        required_resource_keys={"warehouse"},
        freshness_policy=freshness.HOURLY,
    )


def build_profile_assets(graph_key: AssetKey, identifiers_key: AssetKey) -> list[AssetsDefinition]:
    """Person profiles, email addresses and accounts, built on the graph asset `graph_key` (and for the first two,
    the records' identifiers: `identifiers_key`)."""

    def reads(*entities: tuple[str, str]) -> list[AssetKey]:
        return [graph_key, *(staging_key(source, entity) for source, entity in entities)]

    @identity_asset(
        "person_profiles",
        "For marketing, sales and support tools: one row per person (profile_id of the identity graph), the golden "
        "record. Each trait (email, name, phone, company, job title, city, country, time zone, locale, product user "
        "id, consent) is chosen by survivorship rules (source trust, then recency, live records first; a value most "
        "records agree on beats a trusted misspelling of it) and carries `<trait>_source`, `<trait>_record_id`, "
        "`<trait>_at` (when the value changed at its source) and `<trait>_rule` (`trust` or `agreement`). Computed: "
        "lifetime revenue and MRR in cents with their currency, plan and subscription status, lifecycle stage, first "
        "and last seen, first-touch channel, open tickets, Klaviyo email engagement, and how many records, sources "
        "and emails stand behind the person.",
        [*reads(*PERSON_STAGING), identifiers_key],
    )
    def person_profiles(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            position = build_person_profiles(conn)
            made = conn.execute(f"SELECT count(*) FROM {profile_changes.AFFECTED}").fetchall()[0][0] if (
                position.whole is None) else None  # fmt: skip
            metadata = measures(
                conn,
                "SELECT count(*) AS profiles, avg(is_active::INT) AS active_share,"
                " avg((running_subscriptions > 0)::INT) AS customer_share,"
                " count(*) FILTER (WHERE lifecycle_stage = 'churned') AS churned,"
                " avg((len(sources) > 1)::INT) AS multi_source_share, avg(records) AS records_per_profile,"
                " count(*) FILTER (WHERE open_tickets > 0) AS with_open_tickets,"
                f" {fill_rates_sql()} FROM identity.person_profiles",
            )
        if position.whole:
            context.log.info(f"every person profile made again: {position.whole}")
        return MaterializeResult(metadata={**metadata, "followed_changes": position.whole is None,
                                           "profiles_made": metadata["profiles"] if made is None else made})

    @identity_asset(
        "email_addresses",
        "For email marketing and deliverability: one row per normalised email address, with the profile it belongs "
        "to, its domain classified as free mail, disposable or work, where and when it was seen, its Klaviyo "
        "engagement (sends, opens, clicks, bounces, last open, hard bounce), its marketing consent, and the UTC hour "
        "it most often opens or clicks (`best_send_hour`). A person's work and home addresses are separate rows.",
        # Every person stream: the addresses a record of a profile the change log reaches held, read through each.
        [*reads(*PERSON_STAGING), identifiers_key],
    )
    def email_addresses(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            position = build_email_addresses(conn)
            made = conn.execute("SELECT count(*) FROM _affected_addresses").fetchall()[0][0] if (
                position.whole is None) else None  # fmt: skip
            metadata = measures(
                conn,
                "SELECT count(*) AS addresses, avg(is_work::INT) AS work_share,"
                " avg(is_free_mail::INT) AS free_mail_share, count(*) FILTER (WHERE is_disposable) AS disposable,"
                " count(*) FILTER (WHERE hard_bounced) AS hard_bounced,"
                " avg((best_send_hour IS NOT NULL)::INT) AS with_send_hour_share,"
                " count(*) FILTER (WHERE profiles > 1) AS in_several_profiles"
                " FROM identity.email_addresses",
            )
        if position.whole:
            context.log.info(f"every email address made again: {position.whole}")
        return MaterializeResult(metadata={**metadata, "followed_changes": position.whole is None,
                                           "addresses_made": metadata["addresses"] if made is None else made})

    @identity_asset(
        "accounts",
        "For sales and account management: one row per B2B account in `identity.accounts` (HubSpot companies by "
        "domain, plus work-email domains no CRM company has; never free-mail or disposable domains), with a stable "
        "`account_id` derived from the domain, its firmographics, people, MRR per currency and open tickets. "
        "`identity.account_people` holds one row per account and person with the evidence (`via`: HubSpot "
        "association, work-email domain) and the person's primary account (`is_primary`).",
        [
            *reads(*ACCOUNT_STAGING),
            PROFILES_KEY,
            AssetKey(["identity", "email_addresses"]),
        ],
    )
    def accounts(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            position = build_accounts(conn)
            relinked = None if position.whole is not None else conn.execute(
                "SELECT count(*) FROM _account_scope").fetchall()[0][0]
            metadata = measures(
                conn,
                "SELECT count(*) AS accounts, count(*) FILTER (WHERE origin = 'hubspot') AS crm_accounts,"
                " count(*) FILTER (WHERE origin = 'email_domain') AS email_domain_accounts,"
                " count(*) FILTER (WHERE people = 0) AS accounts_without_people,"
                " (SELECT count(DISTINCT profile_id) FROM identity.account_people) AS linked_people,"
                " (SELECT avg((profile_id IN (SELECT profile_id FROM identity.account_people))::INT)"
                "  FROM identity.person_profiles) AS linked_profile_share"
                " FROM identity.accounts",
            )
        if position.whole is not None:
            context.log.info(f"every profile's accounts made again: {position.whole}")
        return MaterializeResult(metadata={**metadata, "followed_changes": position.whole is None,
                                           "profiles_relinked": metadata["linked_people"] if relinked is None
                                           else relinked})

    return [person_profiles, email_addresses, accounts]
