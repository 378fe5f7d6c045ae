"""What every workload store offers the engine: the queue entries, final records and owed
webhooks of its workloads, kept durably."""

from __future__ import annotations

from typing import Any, Protocol

from ...storage import Storage
from ..workload import WorkloadState

# A workload, its final record, and the webhook URL still owed for it (if any).
FinalWrite = tuple[WorkloadState, dict[str, Any], str | None]


class WorkloadStore(Protocol):
    def accept(self, workload: WorkloadState) -> None: ...

    def finish(self, api: str, writes: list[FinalWrite]) -> None: ...

    def final_record(self, api: str, workload_id: str) -> dict[str, Any] | None: ...

    def record_webhook(self, api: str, workload_id: str, record: dict[str, Any]) -> None: ...

    def pending(self, api: str) -> list[WorkloadState]: ...

    def owed_webhooks(self, api: str) -> list[tuple[str, str]]: ...

    def drop_queue(self, api: str) -> None: ...

    def sweep(self) -> int: ...

    def close(self) -> None: ...


def delete_stored_payload(storage: Storage, workload: WorkloadState) -> None:
    if workload.payload_stored:
        storage.delete(storage.payload_path(workload.api, workload.id))
