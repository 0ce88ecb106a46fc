"""Consent per person and purpose, built from what each source knows (`consent.yaml`).

`privacy.consent_ledger` keeps every statement with its time, source and subject; `privacy.consent` decides
one state per profile and purpose from the current ones. Views read `privacy.consent` to say, per row, which
purposes the row may be used for.
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import yaml
from dagster import AssetExecutionContext, AssetKey, AssetsDefinition, MaterializeResult, asset

from cdp_assets.identity.profiles import measures
from cdp_assets.raw import OWNER
from cdp_assets.staging import staging_key

SQL = Path(__file__).parent / "sql"
LEDGER_KEY = AssetKey(["privacy", "consent_ledger"])
CONSENT_KEY = AssetKey(["privacy", "consent"])
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


def build_ledger(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS privacy")
    conn.execute((SQL / "consent_ledger.sql").read_text(), rules.ledger_params())


def build_consent(conn: duckdb.DuckDBPyConnection, rules: ConsentRules) -> None:
    conn.execute(
        (SQL / "consent.sql").read_text(),
        {"purposes": list(rules.purposes), "bases": list(rules.purposes.values())},
    )


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
            "source record and subject (the address or login it is about), on the person's profile. "
            "`is_current` marks the statements that still hold."
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
                " count(DISTINCT profile_id) AS profiles FROM privacy.consent_ledger",
            )
        return MaterializeResult(metadata={"dagster/row_count": metadata["statements"], **metadata})

    @asset(
        key=CONSENT_KEY,
        group_name="privacy",
        kinds={"duckdb"},
        owners=[OWNER],
        deps=[LEDGER_KEY, profiles_key],
        description=(
            "For every view and sync that uses personal data: one row per person profile and purpose (email "
            "marketing, advertising, analytics, sales outreach) with its state (granted, denied, no_choice), "
            "whether the purpose is allowed, and the statement that decided it. The most restrictive current "
            "choice wins and disagreeing records are marked `is_conflict`. Purposes and bases: "
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
