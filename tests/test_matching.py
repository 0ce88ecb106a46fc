"""The matcher as data (rules.yaml `matching:` and each source's `person:` mapping) on person data of any shape.

The records are written into staging tables of a real DuckDB file in the shape the rules map (a warehouse of
people the project did not generate), then go through `matching.build_records`, `train` and `score`: real Splink
on DuckDB. Names and places are drawn from short lists here, not from the sandbox.
"""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.identity import basis, comparisons, matching, rules, shared

FIRST = ["william", "robert", "elizabeth", "margaret", "james", "mary", "john", "susan", "thomas", "katherine",
         "anna", "peter", "laura", "michael", "olga", "pablo", "chen", "amir", "sofia", "lucas"]
LAST = ["smith", "jones", "taylor", "brown", "garcia", "muller", "nguyen", "okafor", "kowalski", "rossi",
        "dubois", "silva", "kim", "patel", "novak", "haddad", "larsen", "moreau", "ivanova", "walsh"]
CITIES = ["leeds", "austin", "lyon", "porto", "denver", "bristol"]
HUBSPOT = ("contact_id", "first_name", "last_name", "street_address", "postal_code", "date_of_birth", "city",
           "country", "company_name")
KLAVIYO = ("profile_id", "first_name", "last_name", "street_address", "postal_code", "city", "country", "locale",
           "organization")
STAGING = f"""
CREATE SCHEMA staging; CREATE SCHEMA identity;
CREATE TABLE staging.hubspot__companies (name VARCHAR);
CREATE TABLE staging.stripe__customers (customer_id VARCHAR, name VARCHAR, address_line1 VARCHAR,
    address_postal_code VARCHAR, address_city VARCHAR, address_country VARCHAR);
CREATE TABLE staging.zendesk__users (user_id VARCHAR, name VARCHAR, locale VARCHAR);
CREATE TABLE staging.hubspot__contacts ({", ".join(f"{c} VARCHAR" for c in HUBSPOT)});
CREATE TABLE staging.klaviyo__profiles ({", ".join(f"{c} VARCHAR" for c in KLAVIYO)});
CREATE TABLE identity.identifiers (stream VARCHAR, record_id VARCHAR, id_type VARCHAR, value VARCHAR);
"""


def warehouse(path: Path, people: int, seed: int = 1) -> duckdb.DuckDBPyConnection:
    """Each person as a HubSpot contact and a Klaviyo profile (surname mistyped now and then, address in capitals,
    no date of birth, which Klaviyo does not carry); a third also as a second HubSpot contact with the date of
    birth's day and month swapped. No email or phone is shared by any two records."""
    rnd = random.Random(seed)
    conn = duckdb.connect(str(path))
    conn.execute(STAGING)
    hubspot, klaviyo = [], []
    for p in range(people):
        first, last, city = rnd.choice(FIRST), rnd.choice(LAST), rnd.choice(CITIES)
        year, month, day = rnd.randint(1940, 2000), rnd.randint(1, 12), rnd.randint(1, 12)
        street = f"{rnd.randint(1, 200)} {rnd.choice(['high', 'oak', 'elm', 'mill'])} street"
        postcode = str(rnd.randint(10000, 99999))
        hubspot.append((f"h{p}", first.title(), last.title(), street, postcode, f"{year}-{month:02}-{day:02}",
                        city.title(), "GB", None))
        typo = last[:-1] + "x" if rnd.random() < 0.2 else last
        klaviyo.append((f"k{p}", first, typo, street.upper(), postcode, city, None, "en-GB", None))
        if p % 3 == 0:
            hubspot.append((f"d{p}", first, last, street, postcode, f"{year}-{day:02}-{month:02}", city, "GB", None))
    for table, rows in (("hubspot__contacts", hubspot), ("klaviyo__profiles", klaviyo)):
        if rows:
            conn.executemany(f"INSERT INTO staging.{table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    return conn


def clusters(conn: duckdb.DuckDBPyConnection, groups: dict[str, int] | None = None) -> None:
    """`_record_clusters`: each record its own cluster, or the cluster `groups` gives its record id."""
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE _record_clusters AS SELECT stream, record_id, "
        "coalesce(map($keys, $values)[record_id], 1000000 + row_number() OVER ())::BIGINT AS cluster_id FROM ("
        "SELECT 'hubspot.contacts' AS stream, contact_id AS record_id FROM staging.hubspot__contacts UNION ALL "
        "SELECT 'klaviyo.profiles', profile_id FROM staging.klaviyo__profiles)",
        {"keys": list(groups or {"": 0}), "values": list((groups or {"": 0}).values())},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[duckdb.DuckDBPyConnection, Path]]:
    folder = tmp_path_factory.mktemp("matching")
    conn = warehouse(folder / "warehouse.duckdb", people=300)
    clusters(conn)
    matching.build_records(conn)
    model = folder / "model.json"
    matching.train(conn, model, {"source": "file", "seed": 1})
    yield conn, model
    conn.close()


def test_training_without_shared_identifiers_records_what_it_was_trained_on(trained) -> None:
    _, model = trained
    saved = json.loads(model.read_text())
    trained_on = saved[matching.TRAINED_ON]
    assert trained_on["source"] == "file" and trained_on["seed"] == 1 and trained_on["records"] == 700
    assert {"date_of_birth", "postal_code", "street_address", "last_name"} <= set(trained_on["fields"])
    assert "email" not in trained_on["fields"] and "phone" not in trained_on["fields"]
    # 300 people in 700 records: 300 + 100 + 100 + 100 = 600 true pairs among 244,650; blocking finds most.
    assert 0.5 * 600 / 244_650 < trained_on["prior"] <= 1.1 * 600 / 244_650
    names = {c["output_column_name"] for c in saved["comparisons"]}
    assert {"name", "date_of_birth", "place", "country"} <= names
    assert not names & {"email", "phone", "employer"}  # no email, phone or company anywhere: dropped


def test_engine_leaves_out_what_the_records_lack(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    conn.execute("CREATE TABLE people (unique_id VARCHAR, cluster_id BIGINT, first_name VARCHAR, last_name VARCHAR,"
                 " full_name VARCHAR, given_name VARCHAR, date_of_birth DATE, city VARCHAR)")
    conn.execute("INSERT INTO people VALUES ('a', 1, 'ann', 'lee', 'ann lee', 'ann', NULL, 'leeds'),"
                 " ('b', 2, 'ann', 'lee', 'ann lee', 'ann', NULL, NULL)")
    built = comparisons.build(conn, rules.load().matcher, "people")
    names = {c.create_output_column_name() for c in built.comparisons}
    assert names == {"name", "place"}  # dob all NULL; email, phone, address, postcode, company absent
    place = next(c for c in built.comparisons if c.create_output_column_name() == "place").get_comparison("duckdb")
    assert [level.label_for_charts for level in place.comparison_levels[1:-1]] == ["same city"]
    sqls = [rule.get_blocking_rule("duckdb").blocking_rule_sql for rule in built.blocking]
    assert sqls and not any("date_of_birth" in sql or "phone" in sql or "email" in sql for sql in sqls)
    assert any("first_name" in sql and "last_name" in sql for sql in sqls)  # the swap rule stays
    assert built.fields == ["city", "first_name", "full_name", "given_name", "last_name"]


@pytest.mark.parametrize("people", [0, 1, 2])
def test_training_on_no_pair_does_not_fail(tmp_path: Path, people: int) -> None:
    conn = warehouse(tmp_path / "w.duckdb", people=people)
    conn.execute("DELETE FROM staging.klaviyo__profiles")
    conn.execute("DELETE FROM staging.hubspot__contacts WHERE contact_id LIKE 'd%'")  # one record, or none
    clusters(conn)
    assert matching.build_records(conn) == people
    model = tmp_path / "model.json"
    matching.train(conn, model, {"source": "file"})
    assert json.loads(model.read_text())[matching.TRAINED_ON]["records"] == people
    basis.count(conn, model)
    assert matching.score(conn, 0.5, model).empty


def test_a_masked_value_lowers_a_score_and_never_raises_it() -> None:
    """A masked email or phone (shared.py: a hash of its record) agrees with nothing and lands on its comparison's
    last level, ELSE. A region's partners (identity/increment.py) are scored with no value masked, as an upper bound
    of any score its records can reach masked: that holds while ELSE weighs least of the levels a value can reach."""
    model = json.loads(matching.MODEL_PATH.read_text())
    masked = {name for _, names in shared.MASKS.values() for name in names}
    reading = [c for c in model["comparisons"]
               if any(f"{name}_l" in level["sql_condition"] for level in c["comparison_levels"] for name in masked)]
    assert {c["output_column_name"] for c in reading} == {"email", "phone"}
    for comparison in reading:
        levels = [level for level in comparison["comparison_levels"] if not level.get("is_null_level")]
        weights = [level["m_probability"] / level["u_probability"] for level in levels
                   if level.get("m_probability") and level.get("u_probability")]
        assert levels[-1]["sql_condition"] == "ELSE"
        for level in levels[:-1]:  # each compares a masked column of both records: a hash of one meets none
            assert any(f"{name}_l" in level["sql_condition"] and f"{name}_r" in level["sql_condition"]
                       for name in masked), level
        assert levels[-1]["m_probability"] / levels[-1]["u_probability"] == min(weights), comparison


def test_hard_pairs_score_above_a_random_pair(trained, tmp_path: Path) -> None:
    """A nickname, a name written surname first and a date of birth with day and month swapped, each beside a
    record of the same person, against two people who share only a city: scored through the trained model."""
    _, model = trained
    conn = warehouse(tmp_path / "w.duckdb", people=0)
    rows = [
        ("n1", "William", "Hartley", "12 Oak Street", "40123", "1971-03-09", "Leeds"),
        ("n2", "Bill", "Hartley", "12 oak street", "40123", None, "Leeds"),
        ("s1", "Marta", "Kowalczyk", "5 Mill Lane", "70011", "1985-11-02", "Lyon"),
        ("s2", "Kowalczyk", "Marta", "5 Mill Lane", "70011", None, "Lyon"),
        ("t1", "Ines", "Barros", "9 Elm Road", "12345", "1990-04-07", "Porto"),
        ("t2", "Ines", "Barros", None, None, "1990-07-04", "Porto"),
        ("u1", "Ines", "Barros", "9 Elm Road", "12345", "1990-04-07", "Porto"),
        ("u2", "Ines", "Barros", None, None, "1993-09-21", "Porto"),
        ("r1", "Paul", "Okafor", "3 High Street", "55555", "1960-01-20", "Denver"),
        ("r2", "Grace", "Lindqvist", "77 Pine Avenue", "99999", "1999-12-31", "Denver"),
    ]
    conn.executemany("INSERT INTO staging.hubspot__contacts VALUES (?, ?, ?, ?, ?, ?, ?, 'GB', NULL)", rows)
    clusters(conn, {record: ord(record[0]) for record, *_ in rows})  # each pair one cluster
    matching.build_records(conn)
    basis.count(conn, model)
    scored = matching.score(conn, 0.0, model, within_clusters=True)
    weight = {row.unique_id_l.split(":")[1][0]: row.match_weight for row in scored.itertuples()}
    assert set(weight) == {"n", "s", "t", "u", "r"}
    assert min(weight["n"], weight["s"], weight["t"]) > weight["r"] + 5, weight
    assert weight["t"] > weight["u"] + 1, weight  # a transposed date of birth is evidence, another date is not
    across = matching.score(conn, 0.0, model)  # the two Ines Barros pairs meet across clusters, no pair within one
    assert not across.empty and (across["unique_id_l"].str[17] != across["unique_id_r"].str[17]).all()


def test_pairs_score_on_the_basis_counted_not_on_the_clusters_of_the_moment(trained, tmp_path: Path) -> None:
    """How common a name is, is counted once (basis.py) and every scoring reads that count: a pair scores the same
    however its neighbours are clustered when it is scored, until the basis is counted again."""
    _, model = trained
    conn = warehouse(tmp_path / "w.duckdb", people=0)
    rows = [("p1", "Ines", "Barros", "9 Elm Road", "12345", "1990-04-07", "Porto"),
            ("p2", "Ines", "Barros", None, None, None, "Porto"),
            *((f"o{i}", "Ines", "Barros", f"{i} Mill Lane", f"7000{i}", f"196{i}-01-0{i + 1}", "Lyon")
              for i in range(4))]
    conn.executemany("INSERT INTO staging.hubspot__contacts VALUES (?, ?, ?, ?, ?, ?, ?, 'GB', NULL)", rows)

    def pair_weight() -> float:
        scored = matching.score(conn, 0.0, model)
        pair = scored[(scored["unique_id_l"] + scored["unique_id_r"]).str.contains("p1") & (
            scored["unique_id_l"] + scored["unique_id_r"]).str.contains("p2")]
        return float(pair["match_weight"].iloc[0])

    clusters(conn)  # six people named Ines Barros: a common name
    matching.build_records(conn)
    basis.count(conn, model)
    common = pair_weight()
    clusters(conn, {"p1": 1, "o0": 1, "o1": 1, "o2": 1, "o3": 1, "p2": 2})  # now in two clusters only
    matching.build_records(conn)
    assert pair_weight() == common
    conn.execute("INSERT INTO staging.hubspot__contacts VALUES ('q1', 'Quinn', 'Avery', NULL, NULL, NULL, 'Oslo', "
                 "'NO', NULL)")  # one record more: the prior is still rescaled to the six counted
    clusters(conn, {"p1": 1, "o0": 1, "o1": 1, "o2": 1, "o3": 1, "p2": 2})
    assert matching.build_records(conn) == 7 and pair_weight() == common
    basis.count(conn, model)  # counted again: a name of two people says more
    assert pair_weight() > common


# Letters with and without accents (Latin-1 and Extended-A), spaces and punctuation, as names are typed.
NAMES = st.text(st.characters(max_codepoint=0x17F, categories=("Lu", "Ll", "Zs", "Pd", "Po")), max_size=24)


@pytest.fixture(scope="module")
def normaliser() -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect()
    conn.execute(matching.person_text_macro())
    yield conn
    conn.close()


@settings(max_examples=60, deadline=None)
@given(NAMES)
def test_name_normal_form(normaliser: duckdb.DuckDBPyConnection, name: str) -> None:
    def normal(text: str) -> str | None:
        return normaliser.execute("SELECT person_text($x)", {"x": text}).fetchall()[0][0]

    result = normal(name)
    assert result == normal(unicodedata.normalize("NFD", name)) == normal(unicodedata.normalize("NFC", name))
    assert normal(result or "") == result  # idempotent
    if result is not None:
        assert result == result.strip() and "  " not in result and result == result.lower()
        assert not any(unicodedata.combining(ch) for ch in unicodedata.normalize("NFD", result))
