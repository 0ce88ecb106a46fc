"""A full pull cut into ranges walked side by side: ranges really in flight at once, every record read once, and a
pull stopped after any page resumed without losing or fetching again a page that landed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_assets.bench.ranges import connector as sandbox_connector
from resources.source import DONE, Cursor, SourceRecord, side_by_side
from sandbox.runner import SandboxServer
from tests.conftest import TEST_SANDBOX_CONFIG, world_records


def _record(record_id: str) -> SourceRecord:
    return SourceRecord(record_id, {"id": record_id})


def _counted(name: str, size: int, resume: Cursor | None) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
    """A range of `size` pages of one record each, resumable by page number."""
    for page in range((resume or {}).get("next", 0), size):
        yield [_record(f"{name}-{page}")], {"next": page + 1} if page + 1 < size else None


def test_ranges_are_in_flight_at_once() -> None:
    second_started = threading.Event()

    def waits_for_the_second(resume: Cursor | None) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        assert second_started.wait(10), "the first range waited alone: the ranges were walked one after another"
        yield [_record("first")], None

    def second(resume: Cursor | None) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        second_started.set()
        yield [_record("second")], None

    pages = list(side_by_side({"first": waits_for_the_second, "second": second}, {}, width=2))

    assert sorted(r.record_id for records, _ in pages for r in records) == ["first", "second"]
    assert pages[-1][1] == {"first": DONE, "second": DONE}


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    width=st.integers(1, 4),
    stop_after=st.integers(0, 40),
)
def test_a_pull_stopped_after_any_page_resumes_without_losing_or_repeating_one(
    sizes: list[int], width: int, stop_after: int
) -> None:
    walks = {str(n): partial(_counted, str(n), size) for n, size in enumerate(sizes)}
    every = {f"{n}-{page}" for n, size in enumerate(sizes) for page in range(size)}
    pages = side_by_side(walks, {}, width)
    landed: list[str | None] = []
    progress: dict[str, object] = {}
    for records, after in pages:
        if len(landed) == stop_after:
            break
        landed += [r.record_id for r in records]
        progress = after
    pages.close()  # as a killed run leaves it: pages fetched ahead of the last landed one are lost

    resumed = [r.record_id for records, _ in side_by_side(walks, progress, width) for r in records]

    assert sorted(landed + resumed) == sorted(every)  # none lost, none landed twice


def test_a_failing_range_fails_the_pull() -> None:
    def broken(resume: Cursor | None) -> Iterator[tuple[list[SourceRecord], Cursor | None]]:
        yield [_record("before")], {"next": 1}
        raise ValueError("the service answered nonsense")

    walks = {"broken": broken, "fine": partial(_counted, "fine", 3)}
    with pytest.raises(ValueError, match="nonsense"):
        list(side_by_side(walks, {}, width=2))


@pytest.mark.parametrize(("source", "stream", "state"), [("stripe", "invoices", "full"), ("klaviyo", "events", "pull")])
def test_a_full_pull_by_ranges_reads_every_record_once_and_resumes_after_any_page(
    world: Path, source: str, stream: str, state: str
) -> None:
    with SandboxServer(world, TEST_SANDBOX_CONFIG) as sandbox:
        connector = sandbox_connector(source, sandbox)
        spec = connector.streams[stream]
        pages = list(connector.extract(spec, None, True))
        halfway = len(pages) // 2
        resumed = list(connector.extract(spec, pages[halfway - 1].cursor, True))
        # A full pull begun by one cursor (before ranges) starts over by ranges: read again, nothing lost.
        legacy = {"started": pages[0].cursor[state]["started"], "after": "cus_1", "next": f"{sandbox.url}/x"}
        restarted = list(connector.extract(spec, {state: legacy}, True))

    read = [r.record_id for page in pages for r in page.records]
    listed = {record_id for record_id, (_, archived) in world_records(world, f"{source}.{stream}").items()
              if not archived}  # fmt: skip
    assert sorted(read) == sorted(listed)  # every record, once, items stamped outside the ranges' span included
    progress = [page.cursor[state]["ranges"] for page in pages[:-1]]
    carrying = {  # the range each page came from: the one whose progress it moved
        key for before, (after, page) in zip([{}, *progress], zip(progress, pages, strict=False), strict=False)
        for key in after if after[key] != before.get(key) and page.records
    }  # fmt: skip
    assert len(carrying) > 2, "the pull was not cut into ranges"
    landed = [r.record_id for page in pages[:halfway] for r in page.records]
    again = [r.record_id for page in resumed for r in page.records]
    assert sorted(landed + again) == sorted(read)  # a stop after any landed page: none lost, none fetched again
    assert "ranges" not in str(resumed[-1].cursor), "a finished pull leaves an incremental cursor"
    assert sorted(r.record_id for page in restarted for r in page.records) == sorted(read)
    assert "bounds" in restarted[0].cursor[state]
