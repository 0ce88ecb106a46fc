"""Dagster's own storage forgets a person deleted on request too.

No address or phone reaches it (a view shows sample rows only when pseudonymous, error texts are redacted), but ids
do: a view's sample rows and a check's list of profiles name profile ids, and a redacted error text can name a
record or a destination id. With the instance's SQLite storage (the default, under DAGSTER_HOME), every text cell
of its databases that names the subject (matched as `sync.runs` messages are: a whole token, here of 8 characters
or more) has those values replaced; JSON documents (Dagster's serialised events) only in their string values, so
they stay well formed; run ids are never touched. Each database changed is then VACUUMed with `secure_delete` on
and its write-ahead log truncated, so no freed page keeps the old text. Captured step output (compute logs) is
rewritten the same way. Another storage (Postgres) is not reached.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from cdp_assets.privacy.erasure import SCRUBBED

# Shorter values (a HubSpot contact id, a year) are also whole tokens of Dagster's own texts, such as a sensor's
# cursor; the ids that reach its storage (profile, Stripe, Zendesk, Klaviyo ids) are longer.
MIN_LENGTH = 8
SQLITE = b"SQLite format 3\x00"
RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
BUSY_SECONDS = 60.0  # the daemon and the webserver write the same databases


def subject_pattern(named: set[str]) -> re.Pattern[str] | None:
    values = sorted({v.lower() for v in named if len(v) >= MIN_LENGTH}, key=len, reverse=True)
    if not values:
        return None
    return re.compile(rf"(?<![0-9a-z])(?:{'|'.join(map(re.escape, values))})(?![0-9a-z])", re.IGNORECASE)


def scrubbed_text(text: str, pattern: re.Pattern[str]) -> str:
    """`text` with the subject's values replaced: in a JSON document, only inside its string values."""
    if text[:1] in "{[":
        try:
            document = json.loads(text)
        except ValueError:
            pass
        else:
            scrubbed = _scrubbed(document, pattern)
            return text if scrubbed == document else json.dumps(scrubbed, separators=(",", ":"))
    return text if RUN_ID.fullmatch(text) else pattern.sub(SCRUBBED, text)


def _scrubbed(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return value if RUN_ID.fullmatch(value) else pattern.sub(SCRUBBED, value)
    if isinstance(value, list):
        return [_scrubbed(item, pattern) for item in value]
    if isinstance(value, dict):
        return {key: _scrubbed(item, pattern) for key, item in value.items()}
    return value


def scrub_database(path: Path, pattern: re.Pattern[str], values: list[str]) -> int:
    """Cells of one SQLite database rewritten; the database VACUUMed when any was."""
    conn = sqlite3.connect(path, timeout=BUSY_SECONDS)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        changed = 0
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE"
                                             " 'sqlite_%'")]  # fmt: skip
        for table in tables:
            for column in [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]:
                # Found by SQLite first (C speed over every row), then matched as whole tokens in Python.
                found = " OR ".join(f'instr(lower("{column}"), ?) > 0' for _ in values)
                rows = conn.execute(f'SELECT rowid, "{column}" FROM "{table}" WHERE typeof("{column}") = \'text\''
                                    f" AND ({found})", values).fetchall()  # fmt: skip
                for rowid, text in rows:
                    if (new := scrubbed_text(text, pattern)) != text:
                        conn.execute(f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?', (new, rowid))
                        changed += 1
        conn.commit()
        if changed:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return changed
    finally:
        conn.close()


def scrub_file(path: Path, pattern: re.Pattern[str]) -> int:
    """A captured output file rewritten (whole, then renamed) when it names the subject."""
    text = path.read_text(errors="replace")
    new = pattern.sub(SCRUBBED, text)
    if new == text:
        return 0
    partial = path.with_name(path.name + ".part")
    partial.write_text(new)
    os.replace(partial, path)
    return 1


def forget(root: Path, named: set[str], current_run: str) -> int:
    """Scrub every SQLite database and captured output under the instance's folder `root` (the current run's output
    aside: it is being written, and names no one); cells and files rewritten."""
    pattern = subject_pattern(named)
    if pattern is None or not root.is_dir():
        return 0
    values = sorted({v.lower() for v in named if len(v) >= MIN_LENGTH})
    changed = 0
    for path in sorted(root.rglob("*")):
        if not path.is_file() or current_run in path.parts:
            continue
        with path.open("rb") as f:
            header = f.read(len(SQLITE))
        if header == SQLITE:
            changed += scrub_database(path, pattern, values)
        elif "compute_logs" in path.parts:
            changed += scrub_file(path, pattern)
    return changed
