"""No temporary table crosses a module: one a module (a Python file, with the SQL files it runs) makes or reads is
read by that module alone, so that no link between modules hides in a name on a shared connection. What another
module needs of it is handed over (a name passed as an argument, a function's result), which an import or a call
shows.

Temporary tables are found in the code's text by their names, as SQL reads and writes them (after FROM, JOIN, INTO,
TABLE, VIEW or UPDATE: `_<name>` or `eval_<name>`, or a `{CONSTANT}` naming one, which must resolve) and as
`register("<name>", ...)` makes them. A name built any other way (`{a if b else c}`, lower-case SQL) goes unseen.
CROSSINGS are those not yet taken apart (issue 26); the list must stay exact, so one taken apart is struck from it,
and a new one fails.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cdp_assets", "resources", "schedules")
# SQL's keywords are written in capitals here; a name as a constant may be another module's (`{changes.FOLLOWED}`).
NAMED = re.compile(r"\b(?:FROM|JOIN|INTO|TABLE|VIEW|UPDATE)\s+(?:IF NOT EXISTS\s+)?"
                   r"(_\w+|eval_\w+|\{(?:\w+\.)?[A-Z_]+\})")
REGISTERED = re.compile(r"\bregister\(\s*[\"'](\w+)[\"']")
SQL_FILE = re.compile(r"[\"'](\w+)\.sql[\"']|run_sql\(\s*\w+,\s*[\"'](\w+)[\"']")
# The views' SQL files are run by a view's name (views/build.py `run_sql`), not named in code.
RUN_BY_NAME = {"cdp_assets/views/sql": "cdp_assets/views/build.py"}
# The temporary tables not yet taken apart, with the modules naming each (under cdp_assets/ but for resources/ and
# schedules/).
CROSSINGS: dict[str, set[str]] = {
    "_affected_profiles": {"identity/lifecycle.py", "identity/profile_changes.py", "identity/profiles.py",
        "views/timeline.py"},
    "_followed": {"changes.py", "identity/increment.py", "identity/profile_changes.py", "identity/profiles.py",
        "privacy/consent.py", "views/following.py"},
    "_graph_identifiers": {"identity/resolution.py", "identity/shared.py"},
    "_match_records": {"bench/splink_alone.py", "identity/basis.py", "identity/increment.py", "identity/matching.py",
        "identity/resolution.py", "identity/shared.py"},
    "_nodes": {"identity/rebuild.py", "identity/resolution.py", "identity/shared.py"},
    "_payload_identifiers": {"privacy/consent.py", "privacy/paths.py", "privacy/subject.py"},
    "_person_source": {"identity/basis.py", "identity/increment.py", "identity/matching.py"},
    "_record_clusters": {"bench/splink_alone.py", "identity/basis.py", "identity/increment.py", "identity/matching.py",
        "identity/misses.py", "identity/resolution.py"},
    "_record_labels": {"identity/resolution.py", "identity/shared.py"},
    "_record_nodes": {"identity/resolution.py", "identity/shared.py"},
    "_region_profiles": {"bench/reach.py", "identity/increment.py", "identity/resolution.py"},
    "_region_records": {"identity/increment.py", "identity/resolution.py"},
    "_scope_records": {"identity/lifecycle.py", "identity/profile_changes.py", "identity/profiles.py",
        "views/timeline.py"},
    "_shared": {"identity/resolution.py", "identity/shared.py"},
    "_shared_holders": {"identity/shared.py", "privacy/subject.py"},
    "_shared_verdicts": {"identity/shared.py", "privacy/subject.py"},
    "_subject_crossings": {"privacy/consent.py", "privacy/subject.py"},
    "_subject_landings": {"privacy/erasure.py", "privacy/requests.py", "privacy/subject.py"},
    "_subject_profiles": {"privacy/cli.py", "privacy/erasure.py", "privacy/requests.py", "privacy/subject.py"},
    "_subject_records": {"privacy/erasure.py", "privacy/subject.py"},
    "_subject_values": {"privacy/erasure.py", "privacy/requests.py", "privacy/subject.py", "privacy/suppression.py"},
    "eval_cases": {"identity/evaluation.py", "identity/link_check.py"},
    "eval_truth": {"identity/evaluation.py", "identity/link_check.py", "identity/misses.py"},
}


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level string constants: NAME = "..." and NAME, OTHER = "...", "..."."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign):
            pairs = [(node.target, node.value)]
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                and isinstance(node.value, ast.Tuple):
            pairs = list(zip(node.targets[0].elts, node.value.elts, strict=False))
        elif isinstance(node, ast.Assign):
            pairs = [(target, node.value) for target in node.targets]
        else:
            continue
        found.update({target.id: value.value for target, value in pairs if isinstance(target, ast.Name)
                      and isinstance(value, ast.Constant) and isinstance(value.value, str)})  # fmt: skip
    return found


def _modules() -> dict[str, str]:
    """Each Python module's text with the SQL files it runs."""
    pys = {str(p.relative_to(ROOT)): p.read_text() for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    sqls = {str(p.relative_to(ROOT)): p.read_text() for package in PACKAGES for p in (ROOT / package).rglob("*.sql")}
    texts = dict(pys)
    for sql_path, sql in sqls.items():
        folder, stem = str(Path(sql_path).parent), Path(sql_path).stem
        home = str(Path(folder).parent) if Path(folder).name == "sql" else folder
        runners = [py for py, text in pys.items() if str(Path(py).parent) == home
                   and stem in {a or b for a, b in SQL_FILE.findall(text)}]  # fmt: skip
        for runner in runners or [RUN_BY_NAME[folder]]:
            texts[runner] += "\n" + sql
    return texts


def crossings() -> dict[str, set[str]]:
    """Every temporary table more than one module names, with the modules naming it."""
    texts = _modules()
    constants = {path: _constants(ast.parse((ROOT / path).read_text())) for path in texts}

    def resolve(path: str, name: str) -> str:
        """A `{CONSTANT}` or `{module.CONSTANT}` in `path`'s text: the module's own, or the one of that name."""
        *module, constant = name.strip("{}").split(".")
        if not module and constant in constants[path]:
            return constants[path][constant]
        values = {found[constant] for other, found in constants.items() if constant in found
                  and (not module or Path(other).stem == module[0])}  # fmt: skip
        return values.pop() if len(values) == 1 else ""

    naming: dict[str, set[str]] = defaultdict(set)
    for path, text in texts.items():
        for name in [*NAMED.findall(text), *REGISTERED.findall(text)]:
            table = resolve(path, name) if name.startswith("{") else name
            assert table, f"{path}: {name} names no one string constant, so what it names cannot be told"
            if table.startswith("_") or table.startswith("eval_"):
                naming[table.rstrip("_")].add(path.removeprefix("cdp_assets/"))
    return {table: paths for table, paths in naming.items() if len(paths) > 1}


def test_no_temporary_table_crosses_a_module() -> None:
    found = crossings()
    new = {table: paths - CROSSINGS.get(table, set()) for table, paths in found.items()}
    assert not any(new.values()), f"a temporary table named by another module: { {t: m for t, m in new.items() if m} }"
    gone = {table: paths - found.get(table, set()) for table, paths in CROSSINGS.items()}
    assert not any(gone.values()), f"no longer named there, strike them: { {t: m for t, m in gone.items() if m} }"
