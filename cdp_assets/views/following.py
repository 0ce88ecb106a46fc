"""Team views that follow the change log (cdp_assets/changes.py) by profile: an hourly build makes again only the rows
of the profiles a table it reads logged as made again or changed (person profiles, lifecycles, consent, accounts,
email addresses), and moves every other row to the run's moment (`as_of`, the lifecycle's), as the lifecycle does.

Only views whose rows depend on nothing but those tables' rows of the same profile follow, and on other tables only
where a change to them for a profile's own records makes person profiles log that profile (the graph's records and
identifiers, the person streams' staged rows: identity/profile_changes.py); a join to a table none of the producers
reads would need its producer among those the view follows. A view judging times against the moment itself follows
only when it says when time passing changes a row (the audiences' clocks, audiences.yaml): those profiles are made
again too. One that sums over people (an account's engaged contacts, the funnel) is made whole every run. A whole
rewrite of a table a view reads, a change to its SQL, to this module, to how views are built or to their policy, or
a first build makes the whole view again.

A following view logs the profiles it made (`views.<name>`; a whole build, a rewrite of everything), so that what
reads it follows it in turn: a view built on other views (marketing contacts) and the syncs (sync/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import duckdb

from cdp_assets import changes, glossary
from cdp_assets.identity import lifecycle, profile_changes
from cdp_assets.identity.profiles import ACCOUNT_PEOPLE, EMAIL_FOLLOWER
from cdp_assets.privacy import consent
from cdp_assets.warehouse_access import named

SCOPE = "_view_profiles"  # TEMP (profile_id): the profiles whose rows a build makes
PEOPLE_PRODUCERS = (profile_changes.FOLLOWER, lifecycle.FOLLOWER, consent.FOLLOWER, ACCOUNT_PEOPLE)


def logged_as(name: str) -> str:
    """The producer a following view's builds are logged as (its table)."""
    return f"views.{name}"


@dataclass(frozen=True)
class Following:
    producers: tuple[str, ...]  # the tables read whose logged keys are the profiles whose rows to make again
    rows_of: str  # the table whose profiles a whole build makes rows for
    order: str  # the order a whole build writes its rows in
    code: tuple[str, ...] = ()  # files of this folder that make it besides its SQL (`sql/<name>.sql`)

    @property
    def reads(self) -> tuple[str, ...]:
        """What `scope` reads: the log of its producers, the lifecycle's moment, and a whole build's profiles."""
        return (*self.producers, lifecycle.FOLLOWER, self.rows_of)


# Each following view by name; its SQL (`sql/<name>.sql`) makes TEMP `_<name>` for the profiles of SCOPE.
FOLLOWING = {
    "customer_360": Following(PEOPLE_PRODUCERS, "identity.person_profiles", "profile_id"),
    "product_usage_people": Following(PEOPLE_PRODUCERS, "identity.person_lifecycle", "profile_id"),
    "marketing_email_addresses": Following((EMAIL_FOLLOWER, consent.FOLLOWER), "identity.email_addresses", "email"),
    "marketing_audiences": Following(
        (profile_changes.FOLLOWER, lifecycle.FOLLOWER, consent.FOLLOWER), "identity.person_profiles",
        "audience, profile_id", ("audiences.py", "audiences.yaml", "sql/audience_facts.sql", "sql/_money.sql"),
    ),
    "marketing_contacts": Following(
        (profile_changes.FOLLOWER, lifecycle.FOLLOWER, consent.FOLLOWER, logged_as("marketing_email_addresses"),
         logged_as("marketing_audiences")), "identity.person_profiles", "profile_id",
    ),
}
FOLDER = Path(__file__).parent


def fingerprint(name: str) -> str:
    """What makes the view `name`: its SQL and code, how views are built, their policy (its loader and its
    parameters) and the glossary."""
    return changes.code_fingerprint(
        [FOLDER / "sql" / f"{name}.sql", *(FOLDER / path for path in FOLLOWING[name].code), Path(__file__),
         FOLDER / "build.py", FOLDER / "policy.py", FOLDER / "policy.yaml", glossary.MACROS, Path(glossary.__file__)],
        f"duckdb {duckdb.__version__}",
    )


FINGERPRINTS = {name: fingerprint(name) for name in FOLLOWING}


def scope(conn: duckdb.DuckDBPyConnection, name: str) -> changes.Position:
    """TEMP SCOPE for the view `name`: the profiles its producers logged since its last build, or all of them.
    Returns the position to keep after the build, at the lifecycle's moment, which the view's rows are judged by
    (its `since` the moment of the last build, for a view whose rows the clock changes)."""
    following, table = FOLLOWING[name], logged_as(name)
    position = changes.follow(conn, table, list(following.producers), FINGERPRINTS[name], (table,))
    [(moment,)] = conn.execute(f"SELECT any_value(as_of) FROM {lifecycle.FOLLOWER}").fetchall()
    position = replace(position, as_of=moment or position.as_of)  # no lifecycle yet: no row is judged by one
    if position.whole is None:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT DISTINCT key AS profile_id"
                     f" FROM {changes.FOLLOWED}")  # fmt: skip
    else:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT DISTINCT profile_id FROM {following.rows_of}")
    return position


def widen(conn: duckdb.DuckDBPyConnection, position: changes.Position, profiles: str,
          params: dict[str, Any]) -> None:
    """Add to SCOPE the profiles the query `profiles` selects between the position's moments (`$since`, `$as_of`),
    when it follows its changes; run by a whole build too, reading nothing, so a query that cannot run fails every
    build."""
    sql = f"INSERT INTO {SCOPE} SELECT profile_id FROM ({profiles}) WHERE $following EXCEPT FROM {SCOPE}"
    conn.execute(sql, named(sql, {**params, "since": position.since, "as_of": position.as_of,
                                  "following": position.whole is None}))


def write(conn: duckdb.DuckDBPyConnection, name: str, position: changes.Position) -> dict[str, Any]:
    """The rows of TEMP `_<name>` replace those of the SCOPE's profiles (or the whole view), every other row takes
    the run's moment, and the log's position is kept and the profiles made logged (or a rewrite of everything), in one
    transaction. Returns the build's metadata."""
    table = f"views.{name}"
    with changes.keeping(conn, position, f"SELECT profile_id AS key FROM {SCOPE}"):
        changes.replace_rows(conn, position, table, f"_{name}", "profile_id", f"FROM {SCOPE}", FOLLOWING[name].order)
        if position.whole is None:
            conn.execute(f"UPDATE {table} SET as_of = $as_of", {"as_of": position.as_of})
    if position.whole is not None:
        return {"followed_changes": False}
    [(made,)] = conn.execute(f"SELECT count(*) FROM {SCOPE}").fetchall()
    return {"followed_changes": True, "profiles_made": made}
