"""Where the engine keeps workloads durably: the queue entries, final records and owed webhooks.

Two implementations share one small interface (`base.WorkloadStore`):

- `ObjectStore` (objects.py): one object per record (`queue/{api}/{id}`,
  `workloads/{api}/{id}/status.json`, `outbox/{api}/{id}.json`). Works on every fsspec
  backend, S3 included.
- `JournalStore` (journal.py): append-only segment files on a local disk. Creating a file costs
  about a millisecond on common disks while appending costs microseconds, so a local gateway
  journals instead (see docs/benchmarks.md). With `durability="fsync"` (`asyncnb serve
  --durability fsync`) its records are fsynced by a group commit (commit.py); an object store
  is unaffected (a PUT is as durable as the store makes it once it returns).
"""

from __future__ import annotations

from collections.abc import Callable

from ...contract.settings import Durability
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


def open_store(
    storage: Storage,
    durability: Durability = "buffered",
    *,
    fence: Callable[[], None] | None = None,
) -> WorkloadStore:
    """`fence`: the lease check of the gateway serving the storage (engine/lease.py); the
    journal needs none, its flock keeps any other process out."""
    if storage.is_local:
        return JournalStore(storage, fsync=durability == "fsync")
    return ObjectStore(storage, fence)
