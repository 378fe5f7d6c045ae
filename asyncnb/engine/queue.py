"""A per-API priority queue: higher priority first, then first come first served."""

from __future__ import annotations

import heapq
import itertools

from .workload import WorkloadState


class WorkloadQueue:
    """Cancel is O(1): a cancelled entry is skipped when it reaches the top."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, WorkloadState]] = []
        self._order = itertools.count()
        self._depth = 0
        self._discarded: set[str] = set()

    def __len__(self) -> int:
        return self._depth

    def push(self, workload: WorkloadState) -> None:
        heapq.heappush(self._heap, (-workload.priority, next(self._order), workload))
        self._depth += 1

    def discard(self, workload: WorkloadState) -> None:
        """Take a queued workload out; its heap entry is skipped when it reaches the top."""
        if workload.id not in self._discarded:
            self._discarded.add(workload.id)
            self._depth -= 1

    def restore(self, workload: WorkloadState) -> None:
        """Undo a discard whose cancel could not be persisted."""
        if workload.id in self._discarded:
            self._discarded.discard(workload.id)
            self._depth += 1

    def pop(self, limit: int) -> list[WorkloadState]:
        taken: list[WorkloadState] = []
        while self._heap and len(taken) < limit:
            _, _, workload = heapq.heappop(self._heap)
            if workload.id in self._discarded:
                self._discarded.discard(workload.id)
                continue
            if workload.queued:
                taken.append(workload)
                self._depth -= 1
        return taken

    def oldest_created_at(self) -> float | None:
        live = [
            w.created_at for _, _, w in self._heap[:64] if w.queued and w.id not in self._discarded
        ]
        return min(live) if live else None

    def drain(self) -> list[WorkloadState]:
        return self.pop(len(self._heap))
