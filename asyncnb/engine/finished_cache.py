"""Recently finished workloads, kept in memory so that polls and results skip storage."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .workload import WorkloadState


class FinishedCache:
    """Finish order, bounded by count and by the bytes of inline results (up to 1 MiB each);
    the oldest are evicted first and read back from storage when asked for again."""

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._workloads: OrderedDict[str, WorkloadState] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._workloads)

    def __reversed__(self) -> Iterator[str]:
        return reversed(self._workloads)

    def __getitem__(self, workload_id: str) -> WorkloadState:
        return self._workloads[workload_id]

    def get(self, workload_id: str) -> WorkloadState | None:
        return self._workloads.get(workload_id)

    def remember(self, workload: WorkloadState) -> None:
        self.pop(workload.id)
        self._workloads[workload.id] = workload
        self._bytes += len(workload.result_data or b"")
        while self._workloads and (
            len(self._workloads) > self.max_count or self._bytes > self.max_bytes
        ):
            _, evicted = self._workloads.popitem(last=False)
            self._bytes -= len(evicted.result_data or b"")

    def pop(self, workload_id: str) -> WorkloadState | None:
        workload = self._workloads.pop(workload_id, None)
        if workload is not None:
            self._bytes -= len(workload.result_data or b"")
        return workload

    def expire(self, now: float) -> None:
        """Forget the workloads whose results expired before `now`."""
        for workload_id in [
            w.id for w in self._workloads.values() if w.expires_at and w.expires_at < now
        ]:
            self.pop(workload_id)
