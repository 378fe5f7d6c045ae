"""A per-API queue of workloads: higher priority first, then shared by the queue's policy.

- `FairQueue` ("fair", the default): within one priority level, workloads are taken
  round-robin across their submitters (`WorkloadState.submitted_by`), one workload per turn
  (deficit round-robin where every workload costs 1), and each submitter's own workloads stay
  first in, first out. A caller with 10,000 queued then delays a caller with one workload by
  about one chunk, not by the whole backlog. A submitter whose queue empties leaves the
  rotation with no credit kept: when it comes back it joins the rotation at the end.
- `FifoQueue` ("fifo"): first come first served over everyone, within a priority.

Both take a higher priority first, always: a level is drained (fairly, for "fair") before any
lower one is touched. Push and take cost O(1) for "fair" (O(log levels) when a priority level
appears or empties) and O(log n) for "fifo"; cancel is O(1) for both: a discarded workload
keeps its entry, which is skipped when its turn comes.
"""

from __future__ import annotations

import heapq
import itertools
import sys
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from collections.abc import Iterator

from ..contract.settings import QUEUE_POLICIES, QueuePolicy
from .workload import WorkloadState

# `oldest_created_at` looks at this many entries (it is asked of short queues only), at most
# a few of each submitter's, which are its oldest
_OLDEST_SCAN, _PEEK_PER_SUBMITTER = 64, 4


class WorkloadQueue(ABC):
    """The bookkeeping both policies share: the live count and lazy cancel.

    A policy keeps the entries (`_add`), says which one comes next (`_next`, which removes it)
    and lets `oldest_created_at` peek at a few (`_peek`). An entry is a workload pushed and not
    yet taken; a discarded workload keeps its entry until its turn comes.
    """

    def __init__(self) -> None:
        self._depth = 0  # live workloads: entries not discarded
        self._discarded: set[str] = set()  # ids of discarded workloads whose entry is still in

    def __len__(self) -> int:
        return self._depth

    def push(self, workload: WorkloadState) -> None:
        """Queue a workload: a new one, a requeued one, or one of a chunk Dask refused."""
        self._add(workload)
        self._depth += 1

    def discard(self, workload: WorkloadState) -> None:
        """Take a queued workload out; its entry is skipped when its turn comes."""
        if workload.id not in self._discarded:
            self._discarded.add(workload.id)
            self._depth -= 1

    def restore(self, workload: WorkloadState) -> None:
        """Undo a discard whose cancel could not be persisted.

        If a take already went past its entry while the cancel was pending, the workload is
        queued again (behind its submitter's others): a failed cancel never loses it. Call it
        once per `discard`, as `Engine.cancel` does.
        """
        if workload.id in self._discarded:
            self._discarded.discard(workload.id)
            self._depth += 1
        elif workload.queued:
            self.push(workload)

    def pop(self, limit: int) -> list[WorkloadState]:
        """Up to `limit` live workloads, in the policy's order; discarded ones are dropped."""
        taken: list[WorkloadState] = []
        while len(taken) < limit and (workload := self._next()) is not None:
            taken.append(workload)
        return taken

    def oldest_created_at(self) -> float | None:
        live = [
            w.created_at
            for w in itertools.islice(self._peek(), _OLDEST_SCAN)
            if w.queued and w.id not in self._discarded
        ]
        return min(live) if live else None

    def drain(self) -> list[WorkloadState]:
        """Every live workload, in the policy's order; the queue is empty afterwards."""
        return self.pop(sys.maxsize)

    def _dead(self, workload: WorkloadState) -> bool:
        """Whether an entry just removed is to be skipped; keeps the count of the live ones."""
        if workload.id in self._discarded:
            self._discarded.discard(workload.id)  # not counted since its discard
            return True
        self._depth -= 1
        return not workload.queued  # taken elsewhere already (pushed twice, say): dropped

    @abstractmethod
    def _add(self, workload: WorkloadState) -> None: ...

    @abstractmethod
    def _next(self) -> WorkloadState | None:
        """Remove and return the next live entry (dropping `_dead` ones), None when none is."""

    @abstractmethod
    def _peek(self) -> Iterator[WorkloadState]:
        """Entries near the front, without removing them (order need not be exact)."""


class FifoQueue(WorkloadQueue):
    """Higher priority first, then first come first served over every submitter."""

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[int, int, WorkloadState]] = []
        self._order = itertools.count()

    def _add(self, workload: WorkloadState) -> None:
        heapq.heappush(self._heap, (-workload.priority, next(self._order), workload))

    def _next(self) -> WorkloadState | None:
        while self._heap:
            workload = heapq.heappop(self._heap)[2]
            if not self._dead(workload):
                return workload
        return None

    def _peek(self) -> Iterator[WorkloadState]:
        return (workload for _, _, workload in self._heap)


class FairQueue(WorkloadQueue):
    """Higher priority first, then round-robin across submitters, FIFO within each."""

    def __init__(self) -> None:
        super().__init__()
        # per priority: the submitters in rotation order (the next to serve first), each with
        # its own entries in arrival order; a submitter is in a level only while it has entries
        self._levels: dict[int, OrderedDict[str, deque[WorkloadState]]] = {}
        self._priorities: list[int] = []  # heap of the negated priorities of `_levels`

    def _add(self, workload: WorkloadState) -> None:
        level = self._levels.get(workload.priority)
        if level is None:
            level = self._levels[workload.priority] = OrderedDict()
            heapq.heappush(self._priorities, -workload.priority)
        entries = level.get(workload.submitted_by)
        if entries is None:
            # new to the rotation, or back after its queue emptied: it waits its turn
            entries = level[workload.submitted_by] = deque()
        entries.append(workload)

    def _next(self) -> WorkloadState | None:
        while self._priorities:
            priority = -self._priorities[0]
            level = self._levels[priority]
            submitter, entries = next(iter(level.items()))
            workload = entries.popleft()
            live = not self._dead(workload)  # a dead entry takes no turn
            if not entries:
                del level[submitter]  # out of the rotation, no credit kept
                if not level:
                    del self._levels[priority]
                    heapq.heappop(self._priorities)
            elif live:
                level.move_to_end(submitter)  # its next one waits for everyone else's turn
            if live:
                return workload
        return None

    def _peek(self) -> Iterator[WorkloadState]:
        for level in self._levels.values():
            for entries in level.values():
                yield from itertools.islice(entries, _PEEK_PER_SUBMITTER)


def make_queue(policy: QueuePolicy = "fair") -> WorkloadQueue:
    if policy == "fair":
        return FairQueue()
    if policy == "fifo":
        return FifoQueue()
    raise ValueError(f"unknown queue policy {policy!r}; choose from {', '.join(QUEUE_POLICIES)}")
