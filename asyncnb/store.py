"""Where the engine keeps workloads durably: the queue entries, final records and owed webhooks.

Two implementations share one small interface:

- `ObjectStore`: one object per record (`queue/{api}/{id}`, `workloads/{api}/{id}/status.json`,
  `outbox/{api}/{id}.json`). Works on every fsspec backend, S3 included.
- `JournalStore` (journal.py): append-only segment files on a local disk. Creating a file costs
  about a millisecond on common disks while appending costs microseconds, so a local gateway
  journals instead (see docs/benchmarks.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .storage import Storage
from .workload import Workload

Ending = tuple[Workload, dict[str, Any], str | None]  # workload, final record, webhook URL owed


class WorkloadStore(Protocol):
    def accept(self, workload: Workload) -> None: ...

    def finish(self, api: str, endings: list[Ending]) -> None: ...

    def final_record(self, api: str, workload_id: str) -> dict[str, Any] | None: ...

    def record_webhook(self, api: str, workload_id: str, record: dict[str, Any]) -> None: ...

    def pending(self, api: str) -> list[Workload]: ...

    def owed_webhooks(self, api: str) -> list[tuple[str, str]]: ...

    def drop_queue(self, api: str) -> None: ...

    def sweep(self) -> int: ...

    def close(self) -> None: ...


def open_store(storage: Storage) -> WorkloadStore:
    if storage.is_local:
        from .journal import JournalStore

        return JournalStore(storage)
    return ObjectStore(storage)


def delete_stored_payload(storage: Storage, workload: Workload) -> None:
    if workload.payload_stored:
        storage.delete(storage.payload_path(workload.api, workload.id))


def sweep_workload_folders(storage: Storage, ttl_of: Callable[[str], float], live: Any) -> int:
    """Delete per-workload folders (large payloads and results, status objects) past their TTL."""
    now, removed = time.time(), 0
    for api in storage.list_names(storage.path("workloads")):
        ttl = ttl_of(api)
        for workload_id, modified in storage.list_with_mtime(storage.path("workloads", api)):
            if workload_id in live:
                continue
            if modified is None:
                record = storage.read_json(storage.status_path(api, workload_id)) or {}
                expired = (record.get("expires_at") or now + 1) < now
            else:
                expired = modified + ttl < now
            if expired:
                storage.delete_tree(storage.path("workloads", api, workload_id))
                removed += 1
    return removed


class ObjectStore:
    """One object per record, for object stores (S3) and any other fsspec backend."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def accept(self, workload: Workload) -> None:
        self.storage.write_bytes(
            self.storage.queue_path(workload.api, workload.id), workload.queue_entry()
        )

    def finish(self, api: str, endings: list[Ending]) -> None:
        storage = self.storage
        for workload, record, url in endings:
            if url:
                storage.write_json(storage.outbox_path(api, workload.id), {"url": url})
            # The final record lands before the queue entry goes: a crash in between leaves a
            # queue entry that recovery recognises as finished, never a lost workload.
            storage.write_json(storage.status_path(api, workload.id), record)
            storage.delete(storage.queue_path(api, workload.id))
            delete_stored_payload(storage, workload)

    def final_record(self, api: str, workload_id: str) -> dict[str, Any] | None:
        record = self.storage.read_json(self.storage.status_path(api, workload_id))
        return record if isinstance(record, dict) else None

    def record_webhook(self, api: str, workload_id: str, record: dict[str, Any]) -> None:
        self.storage.write_json(self.storage.status_path(api, workload_id), record)
        self.storage.delete(self.storage.outbox_path(api, workload_id))

    def pending(self, api: str) -> list[Workload]:
        storage = self.storage
        found: list[Workload] = []
        for workload_id in storage.list_names(storage.path("queue", api)):
            if storage.exists(storage.status_path(api, workload_id)):
                storage.delete(storage.queue_path(api, workload_id))  # finished before a crash
                continue
            data = storage.read_bytes(storage.queue_path(api, workload_id))
            if data:
                found.append(Workload.from_queue_entry(data))
        return found

    def owed_webhooks(self, api: str) -> list[tuple[str, str]]:
        owed: list[tuple[str, str]] = []
        for name in self.storage.list_names(self.storage.path("outbox", api)):
            workload_id = name.removesuffix(".json")
            entry = self.storage.read_json(self.storage.outbox_path(api, workload_id))
            if entry:
                owed.append((workload_id, entry["url"]))
        return owed

    def drop_queue(self, api: str) -> None:
        self.storage.delete_tree(self.storage.path("queue", api))

    def sweep(self) -> int:
        return 0  # final records live in the per-workload folders: sweep_workload_folders

    def close(self) -> None:
        pass
