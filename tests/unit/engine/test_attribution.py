"""Per-submitter counts: what /metrics, the API record and the dashboard show of who submits."""

from __future__ import annotations

from asyncnb.contract.status import Status
from asyncnb.engine.attribution import OTHERS, SubmitterCounts


def test_counts_per_submitter_busiest_first() -> None:
    counts = SubmitterCounts()
    for _ in range(3):
        counts.submitted("bob")
    counts.submitted("owner")
    counts.finished("bob", Status.COMPLETED)
    counts.finished("bob", Status.FAILED)
    counts.finished("owner", Status.CANCELLED)
    assert counts.public() == [
        {"submitted_by": "bob", "submitted": 3, "completed": 1, "failed": 1, "cancelled": 0,
         "unfinished": 1},
        {"submitted_by": "owner", "submitted": 1, "completed": 0, "failed": 0, "cancelled": 1,
         "unfinished": 0},
    ]  # fmt: skip


def test_names_are_bounded_newcomers_count_as_others() -> None:
    counts = SubmitterCounts(limit=3)
    for name in ("a", "b", "c", "d", "e"):
        counts.submitted(name)
    counts.finished("e", Status.COMPLETED)
    rows = counts.rows()
    assert set(rows) == {"a", "b", "c", OTHERS}  # three names, then everyone else
    assert rows[OTHERS]["submitted"] == 2 and rows[OTHERS]["completed"] == 1
    counts.submitted("a")  # names already counted keep their own row
    assert counts.rows()["a"]["submitted"] == 2
