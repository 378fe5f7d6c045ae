"""fsspec storage of deployed APIs, payloads, statuses and results, in one documented layout.

Layout under the root URL::

    apis/{api}/spec.json            options, version, webhook secret (admin-only data)
    apis/{api}/v{version}.pkl       cloudpickled (class, config); only workers unpickle it
    queue/{api}/{id}                accepted, unfinished workloads: the durable queue, written
                                    before the gateway answers 202 (one JSON line, then the
                                    inline payload bytes)
    workloads/{api}/{id}/payload    payloads over the inline limit, streamed at submit
    workloads/{api}/{id}/status.json  final record of a finished workload
    workloads/{api}/{id}/result     raw result bytes, when not kept inline in status.json
    outbox/{api}/{id}.json          webhook deliveries still owed
    copies/{api}/{id}.json          copies of a workload's outcome still owed to storage
                                    paths named at submit (engine/result_copies.py)
    journal/{api}/{n}.log           on a local disk, the journal instead of queue/, status.json
                                    and outbox/ (engine/store/journal.py)
    lease.json                      who serves this storage (object stores: conditional writes)
    lease.lock                      the same on a local disk, under an flock (engine/lease.py)

Every path of the layout is spelled here, and only here.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .contract.settings import DEFAULT_STORAGE, default_storage_url
from .contract.tasks import StorageDescription

__all__ = [
    "DEFAULT_STORAGE",
    "Storage",
    "default_storage_url",
    "storage_from_description",
]


class Storage:
    """One storage root, reachable from the gateway and from every worker."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        if url.startswith(("s3://", "s3a://")):
            # botocore's defaults wait minutes on an unreachable endpoint; a submit must get
            # its 503 in seconds.
            self.storage_options.setdefault(
                "config_kwargs",
                {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}},
            )
        if "://" not in url:
            url = "file://" + str(Path(url).expanduser().absolute())
        elif url.startswith("file://"):
            url = "file://" + str(Path(url[len("file://") :]).expanduser().absolute())
        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.root = root.rstrip("/")
        self.protocol = self.url.split("://", 1)[0]
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    @property
    def shared_across_processes(self) -> bool:
        return self.protocol != "memory"

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    # paths ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def apis_dir(self) -> str:
        return self.path("apis")

    def api_dir(self, api: str) -> str:
        return self.path("apis", api)

    def spec_path(self, api: str) -> str:
        return self.path("apis", api, "spec.json")

    def predictor_path(self, api: str, version: int) -> str:
        return self.path("apis", api, f"v{version}.pkl")

    def queue_dir(self, api: str) -> str:
        return self.path("queue", api)

    def queue_path(self, api: str, workload_id: str) -> str:
        return self.path("queue", api, workload_id)

    def workloads_dir(self, api: str | None = None) -> str:
        return self.path("workloads") if api is None else self.path("workloads", api)

    def workload_dir(self, api: str, workload_id: str) -> str:
        return self.path("workloads", api, workload_id)

    def artifact_path(self, api: str, workload_id: str, name: str) -> str:
        """A file a workload keeps beside its result (an executed notebook, say)."""
        return self.path("workloads", api, workload_id, name)

    def payload_path(self, api: str, workload_id: str) -> str:
        return self.path("workloads", api, workload_id, "payload")

    def status_path(self, api: str, workload_id: str) -> str:
        return self.path("workloads", api, workload_id, "status.json")

    def result_path(self, api: str, workload_id: str) -> str:
        return self.path("workloads", api, workload_id, "result")

    def events_dir(self, api: str, workload_id: str) -> str:
        """The workload's events, in segments named by their first event id (engine/events)."""
        return self.path("workloads", api, workload_id, "events")

    def event_segment_path(self, api: str, workload_id: str, first_event_id: int) -> str:
        return self.path("workloads", api, workload_id, "events", f"{first_event_id:012d}.jsonl")

    def logs_path(self, api: str, workload_id: str, attempt: int) -> str:
        """The log tail (LOG_CAP_BYTES) one attempt's worker wrote when the attempt ended."""
        return self.path("workloads", api, workload_id, f"logs-{attempt}.txt")

    def outbox_dir(self, api: str) -> str:
        return self.path("outbox", api)

    def outbox_path(self, api: str, workload_id: str) -> str:
        return self.path("outbox", api, f"{workload_id}.json")

    def copies_dir(self, api: str | None = None) -> str:
        return self.path("copies") if api is None else self.path("copies", api)

    def copy_marker_path(self, api: str, workload_id: str) -> str:
        return self.path("copies", api, f"{workload_id}.json")

    def journal_dir(self) -> str:
        return self.path("journal")

    def lease_path(self) -> str:
        return self.path("lease.lock" if self.is_local else "lease.json")

    def keys_dir(self) -> str:
        return self.path("keys")

    def key_path(self, key_id: str) -> str:
        return self.path("keys", f"{key_id}.json")

    # operations ----------------------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Write whole or not at all: a crash never leaves a half-written record behind."""
        if self.is_local:
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                f = open(tmp, "wb")  # noqa: SIM115
            except FileNotFoundError:
                # makedirs only on a miss: it costs several syscalls on every write otherwise
                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(tmp, "wb")  # noqa: SIM115
            with f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def write_json(self, path: str, value: Any) -> None:
        self.write_bytes(path, json.dumps(value, separators=(",", ":")).encode())

    def read_bytes(self, path: str) -> bytes | None:
        try:
            if self.is_local:
                with open(path, "rb") as f:
                    return f.read()
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def read_json(self, path: str) -> Any:
        data = self.read_bytes(path)
        return None if data is None else json.loads(data)

    def exists(self, path: str) -> bool:
        if self.is_local:
            return os.path.exists(path)
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int:
        if self.is_local:
            return os.path.getsize(path)
        return int(self.fs.size(path))

    def delete(self, path: str) -> None:
        try:
            if self.is_local:
                os.remove(path)
            else:
                self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def delete_tree(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def list_names(self, path: str) -> list[str]:
        """Base names directly under `path` (empty when it does not exist)."""
        if self.is_local:
            try:
                return [n for n in os.listdir(path) if not n.endswith(".tmp")]
            except FileNotFoundError:
                return []
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [posixpath.basename(str(e).rstrip("/")) for e in entries]

    def list_with_mtime(self, path: str) -> list[tuple[str, float | None]]:
        """(name, modification time) of entries under `path`, for expiry sweeps."""
        if self.is_local:
            try:
                return [(e.name, e.stat().st_mtime) for e in os.scandir(path)]
            except FileNotFoundError:
                return []
        try:
            entries = self.fs.ls(path, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        named: list[tuple[str, float | None]] = []
        for entry in entries:
            modified = entry.get("LastModified") or entry.get("mtime") or entry.get("created")
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else modified
            named.append((posixpath.basename(entry["name"].rstrip("/")), stamp))
        return named

    @contextmanager
    def open_write(self, path: str) -> Iterator[IO[bytes]]:
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with self.fs.open(path, "wb") as f:
            yield f

    def open_binary_writer(self, path: str) -> IO[bytes]:
        """A file to stream into; the caller closes it."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return self.fs.open(path, "wb")

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "rb")

    def describe(self) -> StorageDescription:
        """What a worker needs to open the same storage."""
        return {"url": self.url, "options": self.storage_options}


_opened: dict[str, Storage] = {}


def storage_from_description(description: StorageDescription) -> Storage:
    """A process-wide Storage for a gateway's description (used on workers)."""
    key = json.dumps(description, sort_keys=True, default=str)
    found = _opened.get(key)
    if found is None:
        found = _opened[key] = Storage(description["url"], description.get("options"))
    return found
