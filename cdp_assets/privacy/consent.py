"""Consent per person and purpose, built from what each source knows (`consent.yaml`).

`privacy.consent_ledger` keeps every statement with its time, source, subject and the addresses it binds, on the
person it can be attributed to (never through a shared login or device), refusals read from quarantined records
included; `privacy.consent` decides one state per profile and purpose from the current ones (failing closed),
`privacy.address_consent` which of the person's addresses each purpose may use, `privacy.purposes` the purposes each
person allows and `privacy.consented_addresses` the one address a destination receives per person and purpose. Views
read them to say, per row, which purposes the row may be used for and which address it carries; built once a run
here rather than by each view.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import yaml
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets.identity import rules as identity_rules
from cdp_assets.identity.profiles import measures
from cdp_assets.privacy import paths, subject
from cdp_assets.raw import OWNER, raw_table
from cdp_assets.staging import candidates_sql, staging_key
from resources import SOURCES

SQL = Path(__file__).parent / "sql"
LEDGER_KEY = AssetKey(["privacy", "consent_ledger"])
CONSENT_KEY = AssetKey(["privacy", "consent"])
ADDRESSES_KEY = AssetKey(["identity", "email_addresses"])
BASES = ("opt_in", "opt_out")
READS = (("klaviyo", "profiles"), ("hubspot", "contacts"), ("mixpanel", "events"))


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


def read_quarantined(conn: duckdb.DuckDBPyConnection) -> None:
    """What the ledger reads beside staging: `_held__<source>__<entity>`, the quarantined records of each stream it
    reads, typed by staging's own reader (a field that can be read is read; the field at fault is NULL);
    `_payload_identifiers`, the person identifiers their payloads carry, read and normalised as privacy requests
    read them (`paths.identify`); and `_subject_crossings`, the values records of several profiles carry (the one
    rule of shared values, `shared_values.sql`)."""
    conn.execute(subject.SETUP_SQL)
    subject.shared_values(conn)
    rules = identity_rules.load()
    for source, entity in READS:
        stream = next(s for s in SOURCES[source].streams.values() if s.entity == entity)
        held = f"{source}__{entity}"
        conn.execute(
            f"CREATE OR REPLACE TEMP VIEW _held_raw__{held} AS SELECT * FROM {raw_table(source, stream.name)}"
            f" WHERE landing_id IN (SELECT raw_landing_id FROM quarantine.{held})"
        )
        sql, params = candidates_sql(source, stream, f"_held_raw__{held}")
        conn.execute(sql, params)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE _held__{held} AS SELECT * FROM _candidates")
        paths.identify(conn, f"_held_raw__{held}", f"{source}.{stream.name}", rules)


def build_ledger(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS privacy")
    read_quarantined(conn)
    conn.execute((SQL / "consent_ledger.sql").read_text(), rules.ledger_params())


def build_consent(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> None:
    conn.execute(
        (SQL / "consent.sql").read_text(),
        {"purposes": list(rules.purposes), "bases": list(rules.purposes.values())},
    )
    conn.execute((SQL / "address_consent.sql").read_text())
    conn.execute((SQL / "purposes.sql").read_text())


def build_consent_assets(graph_key: AssetKey, profiles_key: AssetKey) -> list[AssetsDefinition]:
    @asset(
        key=LEDGER_KEY,
        group_name="privacy",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[graph_key, *(staging_key(source, entity) for source, entity in READS)],
        description=(
            "For auditors and the consent engine: every consent statement a source holds (Klaviyo list "
            "subscriptions, HubSpot email opt-outs, product consent events), with its purpose, choice, time, "
            "source record, subject (the address or login it is about) and the addresses it binds, on the profile "
            "of the person it can be attributed to (never through a shared login or device). Refusals read from "
            "quarantined records are marked `quarantined`; `is_current` marks the statements that still hold."
        ),
        required_resource_keys={"warehouse"},
    )
    def consent_ledger(context: AssetExecutionContext) -> MaterializeResult:
        with context.resources.warehouse.get_connection() as conn:
            build_ledger(conn, load())
            metadata = measures(
                conn,
                "SELECT count(*) AS statements, count(*) FILTER (WHERE is_current) AS current_statements,"
                " count(*) FILTER (WHERE is_current AND choice = 'denied') AS current_refusals,"
                " count(*) FILTER (WHERE quarantined) AS refusals_from_quarantine,"
                " count(DISTINCT profile_id) AS profiles FROM privacy.consent_ledger",
            )
        return MaterializeResult(metadata={"dagster/row_count": metadata["statements"], **metadata})

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
            "`cdp_assets/privacy/consent.yaml`."
        ),
        required_resource_keys={"warehouse"},
    )
    def consent(context: AssetExecutionContext) -> MaterializeResult:
        rules = load()
        with context.resources.warehouse.get_connection() as conn:
            build_consent(conn, rules)
            totals = measures(conn, "SELECT count(*) AS row_count, count(*) FILTER (WHERE is_conflict) AS conflicts"
                                    " FROM privacy.consent")
            shares = conn.execute(
                "SELECT purpose, avg(allowed::INT) FROM privacy.consent GROUP BY purpose ORDER BY purpose"
            ).fetchall()
        return MaterializeResult(
            metadata={
                "dagster/row_count": totals["row_count"],
                "conflicts": totals["conflicts"],
                **{f"allowed_share.{purpose}": round(share, 6) for purpose, share in shares},
            }
        )

    return [consent_ledger, consent]
