"""The per-API queue: priorities first, then fair (round-robin across submitters) or FIFO, with
lazy cancel; and fairness through the real engine and dispatcher on the fake backend."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from asyncnb.contract.settings import QueuePolicy
from asyncnb.contract.status import Status
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.queue import FairQueue, FifoQueue, WorkloadQueue, make_queue
from asyncnb.engine.workload import WorkloadState

from .harness import deploy, engine, submit, until

_ids = itertools.count()
POLICIES: tuple[QueuePolicy, ...] = ("fair", "fifo")


def _workload(
    priority: int = 0, created_at: float = 0.0, submitted_by: str = "owner"
) -> WorkloadState:
    return WorkloadState(
        f"{next(_ids):032x}",
        "iris",
        created_at=created_at,
        content_type="application/json",
        priority=priority,
        body=b"{}",
        submitted_by=submitted_by,
    )


def _by(submitter: str, count: int, priority: int = 0) -> list[WorkloadState]:
    return [_workload(priority, submitted_by=submitter) for _ in range(count)]


def _cancel(queue: WorkloadQueue, workload: WorkloadState) -> None:
    workload.status = Status.CANCELLED
    queue.discard(workload)


def _push(queue: WorkloadQueue, *groups: list[WorkloadState]) -> None:
    for group in groups:
        for workload in group:
            queue.push(workload)


def _who(workloads: list[WorkloadState]) -> str:
    return "".join(w.submitted_by for w in workloads)


# what both policies do ------------------------------------------------------------------------


def test_make_queue_picks_the_policy() -> None:
    assert isinstance(make_queue(), FairQueue)
    assert isinstance(make_queue("fair"), FairQueue)
    assert isinstance(make_queue("fifo"), FifoQueue)
    with pytest.raises(ValueError, match="fair, fifo"):
        make_queue("lifo")  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", POLICIES)
def test_empty_queue(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    assert len(queue) == 0
    assert queue.pop(10) == []
    assert queue.drain() == []
    assert queue.oldest_created_at() is None


@pytest.mark.parametrize("policy", POLICIES)
def test_one_submitter_is_served_first_in_first_out(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    items = [_workload() for _ in range(20)]
    _push(queue, items)
    assert len(queue) == 20
    assert queue.pop(20) == items
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_higher_priority_first_then_fifo(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    low1, high1, mid, low2, high2, negative = (
        _workload(0),
        _workload(5),
        _workload(2),
        _workload(0),
        _workload(5),
        _workload(-3),
    )
    _push(queue, [low1, high1, mid, low2, high2, negative])
    assert queue.pop(10) == [high1, high2, mid, low1, low2, negative]


@pytest.mark.parametrize("policy", POLICIES)
def test_pop_limit(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    items = [_workload() for _ in range(5)]
    _push(queue, items)
    assert queue.pop(2) == items[:2]
    assert len(queue) == 3
    assert queue.pop(0) == []
    assert len(queue) == 3
    assert queue.pop(2) == items[2:4]
    assert queue.pop(2) == items[4:]
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_discard_drops_len_and_pop_skips(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    a, b, c = _workload(), _workload(), _workload()
    _push(queue, [a, b, c])
    _cancel(queue, b)
    _cancel(queue, b)  # twice is once
    assert len(queue) == 2
    assert queue.pop(10) == [a, c]
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_cancelled_entries_do_not_count_against_the_limit(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    items = [_workload() for _ in range(6)]
    _push(queue, items)
    for w in items[:3]:
        _cancel(queue, w)
    assert len(queue) == 3
    assert queue.pop(2) == items[3:5]
    assert len(queue) == 1
    assert queue.drain() == items[5:]


@pytest.mark.parametrize("policy", POLICIES)
def test_entries_already_taken_elsewhere_are_skipped_and_not_counted(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    running, waiting = _workload(), _workload()
    _push(queue, [running, waiting])
    running.chunk_key = "asyncnb-api-running"
    assert queue.pop(10) == [waiting]
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_oldest_created_at_ignores_cancelled(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    old = _workload(created_at=100.0, submitted_by="a")
    new = _workload(created_at=200.0, submitted_by="b")
    newer = _workload(created_at=300.0, submitted_by="a")
    _push(queue, [old, new, newer])
    assert queue.oldest_created_at() == 100.0
    _cancel(queue, old)
    assert queue.oldest_created_at() == 200.0


@pytest.mark.parametrize("policy", POLICIES)
def test_drain_returns_everything_live(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    items = [_workload(priority=i % 3, submitted_by="ab"[i % 2]) for i in range(9)]
    _push(queue, items)
    _cancel(queue, items[4])
    drained = queue.drain()
    assert len(drained) == 8 and items[4] not in drained
    assert [w.priority for w in drained] == sorted((w.priority for w in drained), reverse=True)
    assert len(queue) == 0 and queue.pop(10) == []


@pytest.mark.parametrize("policy", POLICIES)
def test_discarded_entry_is_skipped_even_before_its_status_changes(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    w = _workload()
    queue.push(w)
    queue.discard(w)  # engine.cancel order: discard, then (after an await) set the status
    assert queue.pop(10) == []
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_restore_undoes_a_discard_in_place(policy: QueuePolicy) -> None:
    queue = make_queue(policy)
    a, b, c = _workload(), _workload(), _workload()
    _push(queue, [a, b, c])
    queue.discard(b)  # the cancel could not be persisted: the status stays in_queue
    assert len(queue) == 2
    queue.restore(b)
    assert len(queue) == 3
    assert queue.pop(10) == [a, b, c]
    assert len(queue) == 0


@pytest.mark.parametrize("policy", POLICIES)
def test_restore_after_a_pop_went_past_the_entry_queues_it_again(policy: QueuePolicy) -> None:
    """A dispatch may run while a cancel's write is pending; a failed cancel loses nothing."""
    queue = make_queue(policy)
    a, b, c = _workload(), _workload(), _workload()
    _push(queue, [a, b, c])
    queue.discard(b)
    assert queue.pop(2) == [a, c]
    assert len(queue) == 0
    queue.restore(b)
    assert len(queue) == 1
    assert queue.pop(10) == [b]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_requeued_workload_runs_again(policy: QueuePolicy) -> None:
    """As `Dispatcher.requeue` does after a failed attempt, and a refused submit's push-back."""
    queue = make_queue(policy)
    items = [_workload() for _ in range(4)]
    _push(queue, items)
    chunk = queue.pop(2)
    for workload in chunk:
        workload.chunk_key = "asyncnb-api-1"
    assert len(queue) == 2
    for workload in chunk:  # back to the queue
        workload.chunk_key = None
        queue.push(workload)
    assert len(queue) == 4
    assert queue.pop(10) == [*items[2:], *chunk]
    assert len(queue) == 0


def test_fifo_serves_a_flood_before_a_later_caller() -> None:
    queue = make_queue("fifo")
    flood, lone = _by("A", 100), _by("B", 1)
    _push(queue, flood, lone)
    assert queue.pop(100) == flood
    assert queue.pop(10) == lone


# fairness ----------------------------------------------------------------------------------


def test_a_lone_workload_comes_within_the_first_chunk_after_a_flood() -> None:
    queue = make_queue("fair")
    flood, lone = _by("A", 1000), _by("B", 1)
    _push(queue, flood, lone)
    chunk = queue.pop(50)
    assert lone[0] in chunk
    assert chunk.index(lone[0]) == 1  # A's first, then B's turn
    assert len(queue) == 1000 - 49


def test_a_chunk_taken_from_a_flood_holds_every_other_callers_one() -> None:
    queue = make_queue("fair")
    flood = _by("A", 5000)
    _push(queue, flood)
    queue.pop(64)  # A alone: the rotation has A only
    lone = _by("B", 1)
    _push(queue, lone)
    chunk = queue.pop(50)
    assert chunk.count(lone[0]) == 1 and chunk.index(lone[0]) <= 1


def test_three_submitters_are_interleaved_and_each_stays_fifo() -> None:
    queue = make_queue("fair")
    a, b, c = _by("a", 5), _by("b", 3), _by("c", 1)
    _push(queue, a, b, c)
    taken = queue.pop(9)
    assert _who(taken) == "abcababaa"
    for mine in (a, b, c):
        assert [w for w in taken if w in mine] == mine


def test_the_rotation_carries_over_from_one_pop_to_the_next() -> None:
    queue = make_queue("fair")
    _push(queue, _by("a", 4), _by("b", 4), _by("c", 4))
    assert _who(queue.pop(2)) == "ab"
    assert _who(queue.pop(4)) == "cabc"
    assert _who(queue.pop(10)) == "abcabc"


def test_priorities_come_first_and_each_level_is_shared_fairly() -> None:
    queue = make_queue("fair")
    low_a, low_b = _by("a", 3), _by("b", 3)
    high_a, high_b = _by("a", 4, priority=5), _by("b", 1, priority=5)
    _push(queue, low_a, high_a, low_b, high_b)
    taken = queue.pop(11)
    assert taken[:5] == [high_a[0], high_b[0], *high_a[1:]]
    assert taken[5:] == [low_a[0], low_b[0], low_a[1], low_b[1], low_a[2], low_b[2]]


def test_a_higher_priority_pushed_later_still_goes_first() -> None:
    queue = make_queue("fair")
    _push(queue, _by("a", 10))
    queue.pop(3)
    urgent = _by("c", 1, priority=1)
    _push(queue, urgent)
    assert queue.pop(1) == urgent


def test_a_submitter_that_comes_back_gets_no_burst_of_credit() -> None:
    queue = make_queue("fair")
    _push(queue, _by("a", 10), _by("b", 1))
    assert _who(queue.pop(4)) == "abaa"  # b's queue emptied: b leaves the rotation
    _push(queue, _by("b", 5))  # b comes back with five at once
    assert _who(queue.pop(6)) == "ababab"  # a turn each, not five of b's in a row


def test_discarded_workloads_take_no_turn() -> None:
    queue = make_queue("fair")
    a, b, c = _by("a", 3), _by("b", 3), _by("c", 3)
    _push(queue, a, b, c)
    for workload in b:
        _cancel(queue, workload)
    _cancel(queue, a[0])
    assert len(queue) == 5
    taken = queue.pop(3)
    assert taken == [a[1], c[0], a[2]]
    assert len(queue) == 2
    assert queue.pop(10) == c[1:]
    assert len(queue) == 0


def test_restore_keeps_the_workload_in_its_submitters_place() -> None:
    queue = make_queue("fair")
    a, b = _by("a", 3), _by("b", 2)
    _push(queue, a, b)
    queue.discard(b[0])
    queue.restore(b[0])
    assert queue.pop(10) == [a[0], b[0], a[1], b[1], a[2]]


def test_a_requeued_workload_goes_behind_its_own_submitters_others_only() -> None:
    queue = make_queue("fair")
    a, b = _by("a", 3), _by("b", 3)
    _push(queue, a, b)
    failed = queue.pop(1)[0]  # a[0] ran and failed: requeued
    assert failed is a[0]
    queue.push(failed)
    assert queue.pop(10) == [b[0], a[1], b[1], a[2], b[2], a[0]]


def test_len_follows_pushes_pops_discards_and_restores() -> None:
    queue = make_queue("fair")
    a, b = _by("a", 50), _by("b", 50)
    _push(queue, a, b)
    assert len(queue) == 100
    for workload in a[:10]:
        queue.discard(workload)
    assert len(queue) == 90
    queue.restore(a[0])
    assert len(queue) == 91
    taken = queue.pop(30)
    assert len(taken) == 30 and len(queue) == 61
    assert len(queue.drain()) == 61 and len(queue) == 0


# through the engine: the real dispatcher, one worker slot, the fake backend --------------------

FLOOD, CHUNK = 200, 8


async def _flood_then_one(policy: QueuePolicy) -> tuple[int, int]:
    """A floods, B submits one once A's first chunks are out; the chunks then run one by one.
    How many of A's workloads ran before B's, and how many were queued when B came."""
    backend = FakeBackend(workers=1)
    gateway = engine(backend, max_chunk=CHUNK, queue_policy=policy)
    await gateway.start()
    state = await deploy(gateway, max_concurrency=1)
    flood = [await submit(gateway, state, submitted_by="A") for _ in range(FLOOD)]
    await until(lambda: len(backend.pending()) == 2)  # one slot: a running chunk + a prefetched
    lone = await submit(gateway, state, submitted_by="B")
    by_id = {w.id: w for w in [*flood, lone]}
    queued_then = len(state.queue) - 1
    before = 0
    while lone.status is not Status.COMPLETED:
        task = (await until(backend.pending))[0]
        task.start()
        task.succeed()
        await gateway.wait(by_id[task.ids[-1]], 10)
        before += task.ids.index(lone.id) if lone.id in task.ids else len(task.ids)
    await gateway.close()
    return before, queued_then


def test_a_lone_caller_waits_about_one_chunk_behind_a_flood_under_fair() -> None:
    before, queued = asyncio.run(_flood_then_one("fair"))
    assert queued == FLOOD - 2 * CHUNK
    # the chunk running when B came and the one prefetched behind it, then A's turn, then B's
    assert before == 2 * CHUNK + 1


def test_a_lone_caller_waits_for_the_whole_flood_under_fifo() -> None:
    before, queued = asyncio.run(_flood_then_one("fifo"))
    assert queued == FLOOD - 2 * CHUNK
    assert before == FLOOD
