"""`cdp identity link` on person files: as good as Splink alone on a generated file, deterministic ids join,
csv and parquet read, bad input refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from cdp_assets.cli import main
from cdp_assets.identity import link_check
from cdp_assets.identity.rules import load as load_rules
from sandbox import person_file

PEOPLE = 300


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("person_file")
    records, truth = person_file.generate(PEOPLE, seed=21)
    path = folder / "people.csv"
    person_file.write(records, path)
    return path, truth.rename(columns={"rec_id": "record_id"})


@pytest.fixture(scope="module")
def linked(generated: tuple[Path, pd.DataFrame]) -> Path:
    path, _ = generated
    output = path.parent / "linked"
    main(["identity", "link", "--input", str(path), "--map", link_check.FEBRL_MAP, "--train", "--output", str(output)])
    return output


def test_link_is_as_good_as_splink_alone(generated: tuple[Path, pd.DataFrame], linked: Path) -> None:
    path, truth = generated
    clusters = pd.read_csv(linked / "clusters.csv", dtype={"record_id": str})
    pairs = pd.read_csv(linked / "pairs.csv")
    assert set(clusters["record_id"]) == set(truth["record_id"])
    assert set(pairs["decision"]) <= {"merge", "review"} and (pairs["decision"] == "merge").any()
    with duckdb.connect() as conn:
        ours = link_check.pairwise(conn, clusters, truth, 0)
        baseline = link_check.pairwise(conn, link_check.splink_alone(conn, path, load_rules().merge_at), truth, 0)
    assert ours.f1 is not None and baseline.f1 is not None
    assert ours.f1 >= baseline.f1 - 0.01, (ours, baseline)


def test_a_shared_national_id_joins_records_read_from_parquet(linked: Path, tmp_path: Path) -> None:
    records = pd.DataFrame({
        "id": ["a", "b", "c"],
        "given": ["maria", "john", "oliver"],
        "family": ["garcia", "okafor", "schmidt"],
        "born": ["1980-02-03", "1955-11-30", "1991-07-14"],
        "ssn": ["4410032", "4410032", "7781100"],
    })
    path = tmp_path / "people.parquet"
    records.to_parquet(path, index=False)
    output = tmp_path / "out"
    main(["identity", "link", "--input", str(path), "--map",
          "id=record_id,given=first_name,family=last_name,born=date_of_birth,ssn=national_id",
          "--model", str(linked / "model.json"), "--output", str(output), "--format", "parquet"])
    cluster_of = pd.read_parquet(output / "clusters.parquet").set_index("record_id")["cluster_id"]
    assert cluster_of["a"] == cluster_of["b"] != cluster_of["c"]


@pytest.mark.parametrize("email", ["info@acme.com", "desk.acme@acme.com"])
def test_a_shared_email_links_no_one(tmp_path: Path, email: str) -> None:
    """Three people on one address (a role mailbox, or one whose records disagree on who they are) stay apart, as
    in the pipeline, while two records of one person join through their own address alone (their names and dates
    of birth would not join them)."""
    path = tmp_path / "people.csv"
    path.write_text(
        "id,given,family,born,mail\n"
        f"a,ann,lee,1980-01-02,{email}\nb,boris,novak,1972-05-09,{email}\nc,chen,wu,1990-11-23,{email}\n"
        "d,maria,garcia,1985-03-04,maria.garcia@mailbox.org\ne,m,garcia-lopez,,maria.garcia@mailbox.org\n"
    )
    output = tmp_path / "out"
    main(["identity", "link", "--input", str(path), "--map",
          "id=record_id,given=first_name,family=last_name,born=date_of_birth,mail=email", "--output", str(output)])
    cluster_of = pd.read_csv(output / "clusters.csv", dtype={"record_id": str}).set_index("record_id")["cluster_id"]
    assert cluster_of[["a", "b", "c"]].nunique() == 3
    assert cluster_of["d"] == cluster_of["e"] and cluster_of["d"] not in set(cluster_of[["a", "b", "c"]])


def test_a_file_of_names_alone_is_linked_and_trained_on(tmp_path: Path) -> None:
    """No identifier column at all, and two records to train on: the engine still runs (the prior stays a
    probability) and writes every record's cluster and what the model was trained on."""
    path = tmp_path / "people.csv"
    path.write_text("id,given,family,town\na,katherine,obrien,leeds\nb,katharine,obrien,leeds\n")
    output = tmp_path / "out"
    main(["identity", "link", "--input", str(path), "--map", "id=record_id,given=first_name,family=last_name,town=city",
          "--train", "--output", str(output)])
    clusters = pd.read_csv(output / "clusters.csv", dtype={"record_id": str})
    assert sorted(clusters["record_id"]) == ["a", "b"]
    assert json.loads((output / "model.json").read_text())["trained_on"]["records"] == 2


@pytest.mark.parametrize(
    ("mapping", "content", "message"),
    [
        ("given=first_name,family=surname", "given,family\nann,lee\n", "unknown field 'surname'"),
        ("given=first_name,born=date_of_birth", "given,family\nann,lee\n", "column 'born' not in"),
        ("given=first_name", "given,family\n", "holds no records"),
        ("given", "given,family\nann,lee\n", "column=field"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(tmp_path: Path, mapping: str, content: str, message: str) -> None:
    path = tmp_path / "people.csv"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(["identity", "link", "--input", str(path), "--map", mapping, "--output", str(tmp_path / "out")])
    assert message in str(exit_.value.code)
    assert not (tmp_path / "out").exists()
