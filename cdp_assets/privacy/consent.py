"""Consent per person and purpose, built from what each source knows (`consent.yaml`).

`privacy.consent_ledger` keeps every statement with its time, source, subject and the addresses it binds, on the
person it can be attributed to (never through a shared login or device), refusals read from quarantined records
included; `privacy.consent` decides one state per profile and purpose from the current ones (failing closed),
`privacy.address_consent` which of the person's addresses each purpose may use, `privacy.purposes` the purposes each
person allows and `privacy.consented_addresses` the one address a destination receives per person and purpose. Views
read them to say, per row, which purposes the row may be used for and which address it carries; built once a run
here rather than by each view. The ledger is made whole and written by difference; consent follows the change log
(cdp_assets/changes.py): the profiles whose statements changed, those person profiles and email addresses made
again, and those holding an address a changed refusal binds.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import yaml
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets import changes
from cdp_assets.identity import profile_changes
from cdp_assets.identity import rules as identity_rules
from cdp_assets.identity.profiles import EMAIL_FOLLOWER, measures
from cdp_assets.privacy import paths, subject
from cdp_assets.raw import OWNER, raw_key, raw_table
from cdp_assets.staging import candidates_sql, staging_key
from cdp_assets.warehouse_access import columns, has_tables, transaction
from resources import SOURCES
from resources.source import StreamSpec

SQL = Path(__file__).parent / "sql"
LEDGER = "privacy.consent_ledger"
FOLLOWER = "privacy.consent"
# The tables the consent step writes, each by profile, with the order a whole build writes it in.
TABLES = {
    FOLLOWER: "profile_id, purpose",
    "privacy.address_consent": "profile_id, email, purpose",
    "privacy.purposes": "profile_id",
    "privacy.consented_addresses": "profile_id, purpose",
}
FINGERPRINT = changes.code_fingerprint(
    [SQL / "consent.sql", SQL / "address_consent.sql", SQL / "purposes.sql", Path(__file__).with_name("consent.yaml"),
     Path(__file__)], f"duckdb {duckdb.__version__}")  # fmt: skip
# The profiles whose statements changed (by a 64-bit hash of each row, as staging's replay compares rows), and in
# the log the addresses their refusals bind, before and after: a refusal denies its address on every profile.
LEDGER_CHANGES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _ledger_changes AS
WITH kept AS (SELECT profile_id, hash(l) AS h FROM {LEDGER} l),
     made AS (SELECT profile_id, hash(l) AS h FROM _consent_ledger l)
SELECT DISTINCT profile_id FROM ((FROM kept EXCEPT ALL FROM made) UNION ALL (FROM made EXCEPT ALL FROM kept))"""
LEDGER_LOG_SQL = f"""
SELECT c.profile_id AS key,
       to_json({{'refused': coalesce(list(DISTINCT r.email) FILTER (WHERE r.email IS NOT NULL), [])}}) AS before
FROM _ledger_changes c
LEFT JOIN (SELECT profile_id, unnest(addresses) AS email FROM {LEDGER} WHERE choice = 'denied'
           UNION ALL
           SELECT profile_id, unnest(addresses) FROM _consent_ledger WHERE choice = 'denied') r USING (profile_id)
GROUP BY c.profile_id"""
# The profiles a following consent build decides again: those the ledger, person profiles or email addresses logged,
# and those holding an address a changed refusal binds.
SCOPE_SQL = f"""
CREATE OR REPLACE TEMP TABLE _consent_scope AS
SELECT key AS profile_id FROM {changes.FOLLOWED}
UNION
SELECT profile_id FROM identity.email_addresses WHERE email IN (
    SELECT unnest(json_extract_string(before, '$.refused[*]')) FROM {changes.FOLLOWED} WHERE producer = $ledger)"""
WHOLE_SCOPE_SQL = "CREATE OR REPLACE TEMP TABLE _consent_scope AS SELECT profile_id FROM identity.person_profiles"
LEDGER_KEY = AssetKey(["privacy", "consent_ledger"])
CONSENT_KEY = AssetKey(["privacy", "consent"])
ADDRESSES_KEY = AssetKey(["identity", "email_addresses"])
BASES = ("opt_in", "opt_out")
READS = (("klaviyo", "profiles"), ("hubspot", "contacts"), ("mixpanel", "events"))
# Of the quarantined records of an entity, those that can state a choice (consent_ledger.sql reads no other).
STATING = {"mixpanel__events": "event_name = $product_event"}
SUBJECT_TYPES = ("user_id", "device_id")  # a product statement's subject: a login or device that may be shared


@dataclass(frozen=True)
class ConsentRules:
    purposes: dict[str, str]  # purpose -> basis
    descriptions: dict[str, str]
    sources: dict[str, Any]

    def ledger_params(self) -> dict[str, Any]:
        listing, opt_out, product = (
            self.sources["klaviyo_list_subscription"],
            self.sources["hubspot_email_opt_out"],
            self.sources["mixpanel_consent_event"],
        )
        self.known(listing["purpose"], *opt_out["purposes"], *product["properties"].values())
        return {
            "list_purpose": listing["purpose"],
            "list_granted": listing["granted"],
            "list_denied": listing["denied"],
            "opt_out_purposes": opt_out["purposes"],
            "product_event": product["event"],
            "product_properties": list(product["properties"]),
            "product_purposes": list(product["properties"].values()),
        }

    def known(self, *purposes: str) -> None:
        unknown = set(purposes) - set(self.purposes)
        if unknown:
            raise ValueError(f"consent.yaml: sources name purposes it does not declare: {sorted(unknown)}")


@cache
def load(path: Path = Path(__file__).parent / "consent.yaml") -> ConsentRules:
    data = yaml.safe_load(path.read_text())
    purposes = {name: spec["basis"] for name, spec in data["purposes"].items()}
    bad = {name: basis for name, basis in purposes.items() if basis not in BASES}
    if bad:
        raise ValueError(f"consent.yaml: basis must be one of {BASES}: {bad}")
    descriptions = {name: spec["description"] for name, spec in data["purposes"].items()}
    return ConsentRules(purposes, descriptions, data["sources"])


def _stream(source: str, entity: str) -> StreamSpec:
    """The stream of `source` that stages `entity`."""
    return next(stream for stream in SOURCES[source].streams.values() if stream.entity == entity)


def read_quarantined(conn: duckdb.DuckDBPyConnection, product_event: str) -> None:
    """What the ledger reads beside staging: `_held__<source>__<entity>`, the quarantined records of each stream it
    reads, typed by staging's own reader (a field that can be read is read; the field at fault is NULL);
    `_payload_identifiers`, the person identifiers carried by the payloads of those that can state a choice (of the
    product's events, its consent events alone: most quarantined events state nothing), read and normalised as
    privacy requests read them (`paths.identify`); and `_subject_crossings`, the logins and devices records of several
    profiles carry (the one rule of shared values, `shared_values.sql`), the only values the ledger asks that of."""
    conn.execute(subject.SETUP_SQL)
    subject.shared_values(conn, SUBJECT_TYPES)
    rules = identity_rules.load()
    for source, entity in READS:
        stream = _stream(source, entity)
        held = f"{source}__{entity}"
        conn.execute(
            f"CREATE OR REPLACE TEMP VIEW _held_raw__{held} AS SELECT * FROM {raw_table(source, stream.name)}"
            f" WHERE landing_id IN (SELECT raw_landing_id FROM quarantine.{held})"
        )
        conn.execute(*candidates_sql(source, stream, f"_held_raw__{held}", into=f"_held__{held}"))
        stating = STATING.get(held, "true")
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _held_stating__{held} AS SELECT * FROM _held_raw__{held}"
                     f" WHERE landing_id IN (SELECT landing_id FROM _held__{held} WHERE {stating})",
                     {"product_event": product_event} if "$product_event" in stating else None)
        paths.identify(conn, f"_held_stating__{held}", f"{source}.{stream.name}", rules)


def build_ledger(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> int | None:
    """Make every statement again (consent_ledger.sql); write only the profiles whose statements changed, logged for
    consent, or the whole ledger on its first build. Returns how many profiles changed (None: written whole)."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS privacy")
    params = rules.ledger_params()
    read_quarantined(conn, params["product_event"])
    conn.execute((SQL / "consent_ledger.sql").read_text(), {**params, "subject_types": list(SUBJECT_TYPES)})
    # Written by difference onto a ledger of the same columns; whole when there is none (or its columns changed).
    kept = has_tables(conn, *LEDGER.split(".")) and columns(conn, LEDGER) == columns(conn, "_consent_ledger")
    with transaction(conn):
        if kept:
            conn.execute(LEDGER_CHANGES_SQL)
            changes.log(conn, LEDGER, LEDGER_LOG_SQL)
            conn.execute(f"DELETE FROM {LEDGER} WHERE profile_id IN (FROM _ledger_changes)")
            conn.execute(f"INSERT INTO {LEDGER} BY NAME FROM _consent_ledger"
                         " WHERE profile_id IN (FROM _ledger_changes)")
        else:
            changes.log(conn, LEDGER, None)
            conn.execute(f"CREATE OR REPLACE TABLE {LEDGER} AS FROM _consent_ledger"
                         " ORDER BY profile_id, purpose, stated_at")
    return conn.execute("SELECT count(*) FROM _ledger_changes").fetchall()[0][0] if kept else None


def build_consent(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> changes.Position:
    """Decide consent again for the profiles the log reaches (those whose statements, golden record or addresses
    changed, and those holding an address a changed refusal binds), or for all; their rows in the four tables
    replace the old ones, and the log's position is kept, in one transaction. Returns the build's position."""
    position = changes.follow(conn, FOLLOWER, [LEDGER, profile_changes.FOLLOWER, EMAIL_FOLLOWER], FINGERPRINT,
                              TABLES)
    if position.whole is None:
        conn.execute(SCOPE_SQL, {"ledger": LEDGER})
    else:
        conn.execute(WHOLE_SCOPE_SQL)
    conn.execute(
        (SQL / "consent.sql").read_text(),
        {"purposes": list(rules.purposes), "bases": list(rules.purposes.values())},
    )
    conn.execute((SQL / "address_consent.sql").read_text())
    conn.execute((SQL / "purposes.sql").read_text())
    with changes.keeping(conn, position, "SELECT profile_id AS key FROM _consent_scope"):
        for table, order in TABLES.items():
            changes.replace_rows(conn, position, table, f"_{table.split('.')[1]}", "profile_id",
                                 "FROM _consent_scope", order)
    return position


def build_consent_assets(
    graph_key: AssetKey, profiles_key: AssetKey, identifiers_key: AssetKey
) -> list[AssetsDefinition]:
    # Beside staging, the raw records staging quarantined (their statements of refusal count: `read_quarantined`),
    # and the identifiers their payloads and the shared values are judged by.
    @asset(
        key=LEDGER_KEY,
        group_name="privacy",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[
            graph_key, profiles_key, identifiers_key,
            *(staging_key(source, entity) for source, entity in READS),
            *(raw_key(source, _stream(source, entity).name) for source, entity in READS),
        ],
        description=(
            "For auditors and the consent engine: every consent statement a source holds (Klaviyo list "
            "subscriptions, HubSpot email opt-outs, product consent events), with its purpose, choice, time, "
            "source record, subject (the address or login it is about) and the addresses it binds, on the profile "
            "of the person it can be attributed to (never through a shared login or device). Refusals read from "
            "quarantined records are marked `quarantined`; `is_current` marks the statements that still hold. "
            "Made whole each run; only the profiles whose statements changed are written, and logged for consent."
        ),
        required_resource_keys={"warehouse"},
    )
    def consent_ledger(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            changed = build_ledger(conn, load())
            metadata = measures(
                conn,
                "SELECT count(*) AS statements, count(*) FILTER (WHERE is_current) AS current_statements,"
                " count(*) FILTER (WHERE is_current AND choice = 'denied') AS current_refusals,"
                " count(*) FILTER (WHERE quarantined) AS refusals_from_quarantine,"
                " count(DISTINCT profile_id) AS profiles FROM privacy.consent_ledger",
            )
        written = {"written_whole": True} if changed is None else {"written_whole": False, "profiles_changed": changed}
        return MaterializeResult(metadata={"dagster/row_count": metadata["statements"], **metadata, **written})

    @asset(
        key=CONSENT_KEY,
        group_name="privacy",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[LEDGER_KEY, profiles_key, ADDRESSES_KEY],
        description=(
            "For every view and sync that uses personal data: one row per person profile and purpose (email "
            "marketing, advertising, analytics, sales outreach) with its state (granted, denied, no_choice), "
            "whether the purpose is allowed, and the statement that decided it. The most restrictive current "
            "choice wins and disagreeing records are marked `is_conflict`. Also `privacy.address_consent`: per "
            "email address of the person and purpose, whether it may be used (an opt-in purpose only on an address "
            "a grant binds); `privacy.purposes`, the purposes each person allows; `privacy.consented_addresses`, "
            "the one address per person and purpose a destination receives. Purposes and bases: "
            "`cdp_assets/privacy/consent.yaml`. An hourly run decides again only the profiles whose statements, "
            "golden record or addresses changed, and those holding an address a changed refusal binds."
        ),
        required_resource_keys={"warehouse"},
    )
    def consent(context: AssetExecutionContext) -> MaterializeResult:
        rules = load()
        with context.resources.warehouse.get_connection() as conn:
            position = build_consent(conn, rules)
            [(decided,)] = conn.execute("SELECT count(DISTINCT profile_id) FROM _consent").fetchall()
            totals = measures(conn, "SELECT count(*) AS row_count, count(*) FILTER (WHERE is_conflict) AS conflicts"
                                    " FROM privacy.consent")
            shares = conn.execute(
                "SELECT purpose, avg(allowed::INT) FROM privacy.consent GROUP BY purpose ORDER BY purpose"
            ).fetchall()
        return MaterializeResult(
            metadata={
                "dagster/row_count": totals["row_count"],
                "conflicts": totals["conflicts"],
                "followed_changes": position.whole is None,
                "profiles_decided": decided,
                **{f"allowed_share.{purpose}": round(share, 6) for purpose, share in shares},
            }
        )

    return [consent_ledger, consent]
