"""`ObjectStore`: one object per record, for object stores (S3) and any other fsspec backend;
and the expiry sweep of per-workload folders, which every store needs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Container
from typing import Any

from ...storage import Storage
from ..lease import S3Objects
from ..workload import WorkloadState
from .base import FinalWrite, delete_stored_payload

logger = logging.getLogger(__name__)


def sweep_workload_folders(
    storage: Storage, ttl_of: Callable[[str], float], live: Container[str]
) -> int:
    """Delete per-workload folders (large payloads and results, status objects) past their TTL."""
    now, removed = time.time(), 0
    for api in storage.list_names(storage.workloads_dir()):
        ttl = ttl_of(api)
        for workload_id, modified in storage.list_with_mtime(storage.workloads_dir(api)):
            if workload_id in live:
                continue
            if modified is None:
                record = storage.read_json(storage.status_path(api, workload_id)) or {}
                expired = (record.get("expires_at") or now + 1) < now
            else:
                expired = modified + ttl < now
            if expired:
                storage.delete_tree(storage.workload_dir(api, workload_id))
                removed += 1
    return removed


class ObjectStore:
    """`fence`, when given, raises (`LeaseLost`) once this gateway no longer holds the
    storage's lease: checked before each batch of final records. On S3 a final record is
    also written only if none exists (`If-None-Match: *`): a deposed gateway's late write
    never replaces the record its successor wrote for the same workload."""

    def __init__(self, storage: Storage, fence: Callable[[], None] | None = None) -> None:
        self.storage = storage
        self.fence = fence
        self._conditional = storage.protocol in ("s3", "s3a")

    def _write_final(self, api: str, workload: WorkloadState, record: dict[str, Any]) -> None:
        storage, path = self.storage, self.storage.status_path(api, workload.id)
        if not self._conditional:
            storage.write_json(path, record)
            return
        data = json.dumps(record, separators=(",", ":")).encode()
        target = S3Objects(storage.fs, path)
        try:
            written = target.put(data, if_match=None)
        except OSError as exc:
            if "NotImplemented" not in repr(exc) and "NotImplemented" not in repr(exc.__cause__):
                raise
            # an S3-compatible store without conditional writes: as before, unconditional
            logger.warning("%s has no conditional writes: final records unfenced", storage.url)
            self._conditional = False
            storage.write_json(path, record)
            return
        if written is not None:
            return
        found = target.get()
        existing = json.loads(found[0]) if found else None
        if isinstance(existing, dict) and existing.get("created_at") == record.get("created_at"):
            return  # this workload's final record is written already (by a successor): it wins
        # a record left by an earlier workload of the same id (an expired idempotency key)
        if found is None or target.put(data, if_match=found[1]) is None:
            raise OSError(f"the final record of {workload.id} changed while written")

    def accept(self, workload: WorkloadState) -> None:
        self.storage.write_bytes(
            self.storage.queue_path(workload.api, workload.id), workload.queue_entry()
        )

    def finish(self, api: str, writes: list[FinalWrite]) -> None:
        storage = self.storage
        if self.fence is not None and writes:
            self.fence()
        for workload, record, url in writes:
            if url:
                storage.write_json(storage.outbox_path(api, workload.id), {"url": url})
            # The final record lands before the queue entry goes: a crash in between leaves a
            # queue entry that recovery recognises as finished, never a lost workload.
            self._write_final(api, workload, record)
            storage.delete(storage.queue_path(api, workload.id))
            delete_stored_payload(storage, workload)

    def final_record(self, api: str, workload_id: str) -> dict[str, Any] | None:
        record = self.storage.read_json(self.storage.status_path(api, workload_id))
        return record if isinstance(record, dict) else None

    def record_webhook(self, api: str, workload_id: str, record: dict[str, Any]) -> None:
        self.storage.write_json(self.storage.status_path(api, workload_id), record)
        self.storage.delete(self.storage.outbox_path(api, workload_id))

    def pending(self, api: str) -> list[WorkloadState]:
        storage = self.storage
        found: list[WorkloadState] = []
        for workload_id in storage.list_names(storage.queue_dir(api)):
            if storage.exists(storage.status_path(api, workload_id)):
                storage.delete(storage.queue_path(api, workload_id))  # finished before a crash
                continue
            data = storage.read_bytes(storage.queue_path(api, workload_id))
            if data:
                found.append(WorkloadState.from_queue_entry(data))
        return found

    def owed_webhooks(self, api: str) -> list[tuple[str, str]]:
        owed: list[tuple[str, str]] = []
        for name in self.storage.list_names(self.storage.outbox_dir(api)):
            workload_id = name.removesuffix(".json")
            entry = self.storage.read_json(self.storage.outbox_path(api, workload_id))
            if entry:
                owed.append((workload_id, entry["url"]))
        return owed

    def drop_queue(self, api: str) -> None:
        self.storage.delete_tree(self.storage.queue_dir(api))

    def sweep(self) -> int:
        return 0  # final records live in the per-workload folders: sweep_workload_folders

    def close(self) -> None:
        pass
