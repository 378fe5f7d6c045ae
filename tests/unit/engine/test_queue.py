"""The per-API priority queue with lazy cancel."""

from __future__ import annotations

import itertools

from asyncnb.contract.status import Status
from asyncnb.engine.queue import WorkloadQueue
from asyncnb.engine.workload import WorkloadState

_ids = itertools.count()


def _workload(priority: int = 0, created_at: float = 0.0) -> WorkloadState:
    return WorkloadState(
        f"{next(_ids):032x}",
        "iris",
        created_at=created_at,
        content_type="application/json",
        priority=priority,
        body=b"{}",
    )


def _cancel(queue: WorkloadQueue, workload: WorkloadState) -> None:
    workload.status = Status.CANCELLED
    queue.discard(workload)


def test_empty_queue() -> None:
    queue = WorkloadQueue()
    assert len(queue) == 0
    assert queue.pop(10) == []
    assert queue.drain() == []
    assert queue.oldest_created_at() is None


def test_fifo_within_a_priority() -> None:
    queue = WorkloadQueue()
    items = [_workload() for _ in range(20)]
    for w in items:
        queue.push(w)
    assert len(queue) == 20
    assert queue.pop(20) == items
    assert len(queue) == 0


def test_higher_priority_first_then_fifo() -> None:
    queue = WorkloadQueue()
    low1, high1, mid, low2, high2, negative = (
        _workload(0),
        _workload(5),
        _workload(2),
        _workload(0),
        _workload(5),
        _workload(-3),
    )
    for w in (low1, high1, mid, low2, high2, negative):
        queue.push(w)
    assert queue.pop(10) == [high1, high2, mid, low1, low2, negative]


def test_pop_limit() -> None:
    queue = WorkloadQueue()
    items = [_workload() for _ in range(5)]
    for w in items:
        queue.push(w)
    assert queue.pop(2) == items[:2]
    assert len(queue) == 3
    assert queue.pop(0) == []
    assert len(queue) == 3
    assert queue.pop(2) == items[2:4]
    assert queue.pop(2) == items[4:]
    assert len(queue) == 0


def test_discard_drops_len_and_pop_skips() -> None:
    queue = WorkloadQueue()
    a, b, c = _workload(), _workload(), _workload()
    for w in (a, b, c):
        queue.push(w)
    _cancel(queue, b)
    assert len(queue) == 2
    assert queue.pop(10) == [a, c]
    assert len(queue) == 0


def test_cancelled_entries_do_not_count_against_the_limit() -> None:
    queue = WorkloadQueue()
    items = [_workload() for _ in range(6)]
    for w in items:
        queue.push(w)
    for w in items[:3]:
        _cancel(queue, w)
    assert len(queue) == 3
    assert queue.pop(2) == items[3:5]
    assert len(queue) == 1
    assert queue.drain() == items[5:]


def test_entries_already_taken_elsewhere_are_skipped() -> None:
    queue = WorkloadQueue()
    running, waiting = _workload(), _workload()
    queue.push(running)
    queue.push(waiting)
    running.chunk_key = "asyncnb-api-running"
    assert queue.pop(10) == [waiting]


def test_oldest_created_at_ignores_cancelled() -> None:
    queue = WorkloadQueue()
    old, new = _workload(created_at=100.0), _workload(created_at=200.0)
    queue.push(old)
    queue.push(new)
    assert queue.oldest_created_at() == 100.0
    _cancel(queue, old)
    assert queue.oldest_created_at() == 200.0


def test_drain_returns_everything_live() -> None:
    queue = WorkloadQueue()
    items = [_workload(priority=i % 3) for i in range(9)]
    for w in items:
        queue.push(w)
    _cancel(queue, items[4])
    drained = queue.drain()
    assert len(drained) == 8 and items[4] not in drained
    assert [w.priority for w in drained] == sorted((w.priority for w in drained), reverse=True)
    assert len(queue) == 0


def test_discarded_entry_is_skipped_even_before_its_status_changes() -> None:
    queue = WorkloadQueue()
    w = _workload()
    queue.push(w)
    queue.discard(w)  # engine.cancel order: discard, then (after an await) set the status
    assert queue.pop(10) == []
    assert len(queue) == 0
