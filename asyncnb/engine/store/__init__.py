"""Where the engine keeps workloads durably: the queue entries, final records and owed webhooks.

Two implementations share one small interface (`base.WorkloadStore`):

- `ObjectStore` (objects.py): one object per record (`queue/{api}/{id}`,
  `workloads/{api}/{id}/status.json`, `outbox/{api}/{id}.json`). Works on every fsspec
  backend, S3 included.
- `JournalStore` (journal.py): append-only segment files on a local disk. Creating a file costs
  about a millisecond on common disks while appending costs microseconds, so a local gateway
  journals instead (see docs/benchmarks.md).
"""

from __future__ import annotations

from ...storage import Storage
from .base import FinalWrite, WorkloadStore
from .journal import JournalLocked, JournalStore
from .objects import ObjectStore, sweep_workload_folders

__all__ = [
    "FinalWrite",
    "JournalLocked",
    "JournalStore",
    "ObjectStore",
    "WorkloadStore",
    "open_store",
    "sweep_workload_folders",
]


def open_store(storage: Storage) -> WorkloadStore:
    if storage.is_local:
        return JournalStore(storage)
    return ObjectStore(storage)
