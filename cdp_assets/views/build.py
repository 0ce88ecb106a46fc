"""How each team view is built: the temp tables it needs, its SQL file in `sql/`, and its parameters."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets import glossary, lineage
from cdp_assets.privacy import consent
from cdp_assets.views import audiences, following, timeline
from cdp_assets.views.policy import Policy
from cdp_assets.warehouse_access import has_tables, named

SQL = Path(__file__).parent / "sql"
EMAIL_PURPOSE = "email_marketing"  # the purpose an email address's own subscription speaks to
ANALYTICS_PURPOSE = "analytics"  # the purpose product usage needs


def run_sql(conn: duckdb.DuckDBPyConnection, name: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Run `sql/<name>.sql` with the parameters it names; fetch from the result."""
    return execute(conn, (SQL / f"{name}.sql").read_text(), params)


def execute(conn: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Run `sql` with those of `params` it names."""
    return conn.execute(sql, named(sql, params))


# The currencies to convert: of people and accounts; of Stripe's billing, by party.
FX_CURRENCIES = ("SELECT unnest(map_keys(revenue_cents_by_currency)) AS currency FROM identity.person_profiles"
                 " UNION ALL SELECT unnest(map_keys(mrr_cents_by_currency)) FROM identity.accounts")
BILLING_CURRENCIES = ("SELECT unnest(map_keys(mrr_cents_by_currency)) AS currency FROM _billing_parties"
                      " UNION ALL SELECT unnest(map_keys(revenue_cents_by_currency)) FROM _billing_parties")


def prepare_fx(conn: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    conn.execute("CREATE OR REPLACE TEMP TABLE _fx (currency VARCHAR PRIMARY KEY, rate DOUBLE)")
    conn.executemany("INSERT INTO _fx VALUES (?, ?)", list(policy.rates.items()))
    require_rates(conn, FX_CURRENCIES)


def require_rates(conn: duckdb.DuckDBPyConnection, currencies_sql: str) -> None:
    """A currency with no reporting rate stops the build rather than dropping out of a total."""
    missing = conn.execute(
        f"SELECT list(DISTINCT currency ORDER BY currency) FROM ({currencies_sql})"
        " WHERE currency NOT IN (SELECT currency FROM _fx)"
    ).fetchall()[0][0]
    if missing:
        raise ValueError(f"no reporting rate for currencies {missing}: add them under reporting.rates in policy.yaml")


def prepare_territories(conn: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    conn.execute("CREATE OR REPLACE TEMP TABLE _territories (country VARCHAR PRIMARY KEY, territory VARCHAR)")
    conn.executemany("INSERT INTO _territories VALUES (?, ?)", list(policy.territories.items()))


def prepare_money(conn: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    prepare_fx(conn, policy)
    run_sql(conn, "_money", {})


def prepare_billing(conn: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    """`_billing_parties`: each party's billing from Stripe's staging tables, in the glossary's terms (after fx)."""
    glossary.install(conn)
    run_sql(conn, "_billing", glossary.params())
    require_rates(conn, BILLING_CURRENCIES)


PREPARE: dict[str, Callable[[duckdb.DuckDBPyConnection, Policy], None]] = {
    "fx": prepare_fx,
    "billing": prepare_billing,
    "money": prepare_money,
    "territories": prepare_territories,
}


# The SQL each prepare step runs, which its reads are derived from.
PREPARE_SQL: dict[str, tuple[str, ...]] = {
    "fx": (FX_CURRENCIES,),
    "money": (FX_CURRENCIES, (SQL / "_money.sql").read_text()),
    "billing": (glossary.MACROS.read_text(), (SQL / "_billing.sql").read_text(), BILLING_CURRENCIES),
    "territories": (),
}
# The audiences' tables: the facts of each person their conditions read (sql/audience_facts.sql), and the members.
AUDIENCE_FACTS, AUDIENCE_MEMBERS = "_audience_facts", "_audience_members"
# Each view's prepare steps (none: a view not named).
PREPARED = {
    "marketing_audiences": ("money",),
    "marketing_channel_performance": ("money",),
    "account_360": ("fx", "billing", "territories"),
    "executive_cohorts": ("fx", "billing"),
}


def dependencies(name: str) -> tuple[str, ...]:
    """The assets the view `name` reads ("layer/name"), derived from what its build runs: its SQL, its prepare
    steps' and its builder's (the change log it follows, the audiences' clocks, the timeline's records)."""
    sql = [(SQL / f"{name}.sql").read_text(), *(text for step in PREPARED.get(name, ()) for text in PREPARE_SQL[step])]
    reads: tuple[str, ...] = ()
    if name == "marketing_audiences":  # the audiences as audiences.yaml declares them, their conditions and clocks
        rules = audiences.load()
        sql += [(SQL / "audience_facts.sql").read_text(),
                audiences.members_sql(rules, set(consent.load().purposes), AUDIENCE_FACTS, AUDIENCE_MEMBERS)[0]]
        sql += [clocked[0] for clocked in [audiences.clocked_sql(rules)] if clocked is not None]
    if name == timeline.FOLLOWER.split(".")[1]:
        reads = timeline.READS
    elif name in following.FOLLOWING:
        reads = following.FOLLOWING[name].reads
    return lineage.assets_of((lineage.tables_read(*sql) | set(reads)) - {f"views.{name}"})


def params(policy: Policy) -> dict[str, Any]:
    rules = consent.load()
    rules.known(EMAIL_PURPOSE, ANALYTICS_PURPOSE)
    return {
        "reporting_currency": policy.reporting_currency,
        "default_territory": policy.default_territory,
        "email_purpose": EMAIL_PURPOSE,
        "analytics_purpose": ANALYTICS_PURPOSE,
        "view_profiles": following.SCOPE,  # the profiles a following view's build makes (`query_table`)
        **glossary.params(),
    }


def build(conn: duckdb.DuckDBPyConnection, policy: Policy, name: str) -> dict[str, Any]:
    """Build one view; returns metadata particular to it."""
    for step in PREPARED.get(name, ()):
        PREPARE[step](conn, policy)
    if name == "marketing_audiences":
        return build_audiences(conn)
    if name == timeline.FOLLOWER.split(".")[1]:
        return timeline.build(conn)
    if name in following.FOLLOWING:
        position = following.scope(conn, name)
        run_sql(conn, name, params(policy))
        return following.write(conn, name, position)
    run_sql(conn, name, params(policy))
    return {}


def build_audiences(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Memberships from audiences.yaml for the profiles the change log reaches and those whose clock passed since the
    last build (or for every profile); a member keeps `member_since` while they stay in the audience."""
    name = "marketing_audiences"
    position = following.scope(conn, name)
    rules = audiences.load()
    clocked = audiences.clocked_sql(rules)
    if clocked is not None:  # run by a whole build too (reading nothing), so a clock that cannot run fails every build
        following.widen(conn, position, *clocked)
    run_sql(conn, "audience_facts", {"view_profiles": following.SCOPE})
    sql, members_params = audiences.members_sql(rules, set(consent.load().purposes), AUDIENCE_FACTS, AUDIENCE_MEMBERS)
    conn.execute(sql, members_params)
    # The rows the build replaces: those of the profiles it makes, or every row (a retired profile's too).
    previous = f"SELECT profile_id, audience, member_since FROM views.{name}"
    if not has_tables(conn, "views", name):
        previous = "SELECT NULL::VARCHAR AS profile_id, NULL::VARCHAR AS audience, NULL::TIMESTAMPTZ AS member_since" \
                   " LIMIT 0"  # fmt: skip
    elif position.whole is None:
        previous += " WHERE profile_id IN (FROM query_table($view_profiles))"
    execute(conn, f"CREATE OR REPLACE TEMP TABLE _previous_members AS {previous}", {"view_profiles": following.SCOPE})
    run_sql(conn, name, {})
    made = following.write(conn, name, position)
    # Who entered and left, over the profiles made (every one in a whole build): no other row changed.
    entered, left, refused = conn.execute(
        "SELECT"
        " (SELECT count(*) FROM _marketing_audiences ANTI JOIN _previous_members USING (profile_id, audience)),"
        " (SELECT count(*) FROM _previous_members ANTI JOIN _marketing_audiences USING (profile_id, audience)),"
        " (SELECT count(*) FROM _audience_members ANTI JOIN _marketing_audiences USING (profile_id, audience))"
    ).fetchall()[0]
    sizes = conn.execute(
        f"SELECT split_part(audience, ':', 1), count(*) FROM views.{name} GROUP BY 1 ORDER BY 1"
    ).fetchall()
    # Who consent leaves out is a level over every person: a whole build counts it, a following one cannot.
    return {
        **made,
        "entered": entered,
        "left": left,
        **({"left_out_for_consent": refused} if position.whole is not None else {}),
        **{f"members.{audience}": count for audience, count in sizes},
    }
