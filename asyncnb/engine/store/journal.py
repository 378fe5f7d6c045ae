"""JournalStore: the durable queue and final records as append-only segments on a local disk.

Each API has a folder `journal/{api}/` of numbered segment files. A record is one `write`
call of a 37-byte header (kind, workload id, data length) and its data:

- `A` accept: the queue entry (JSON header line, then the inline payload bytes);
- `F` final: the final record as JSON; the newest `F` of an id wins;
- `W` final with a webhook still owed (its JSON names the URL).

The data reaches the kernel before `accept` returns, so it survives a `kill -9` of the gateway.
With `fsync=True` (`asyncnb serve --durability fsync`) it also survives power loss: `commits`,
a group commit (commit.py), fsyncs on a thread, and the engine awaits `commits.synced()` before
it answers `202` or shows a result. A restart replays the segments: accepted ids without a
final record are queued again. A segment is deleted once it holds no unfinished workload and
every final record in it has expired. One gateway owns a journal at a time (an flock).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ...storage import Storage
from .. import jsoncodec
from ..workload import WorkloadState
from .base import FinalWrite, delete_stored_payload
from .commit import GroupCommit, fsync_folder

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">c32sI")
ACCEPT, FINAL, FINAL_OWING_WEBHOOK = b"A", b"F", b"W"
SEGMENT_BYTES = 64 * 1024 * 1024


class JournalLocked(RuntimeError):
    """Another process holds the journal: it serves this storage."""

    def __init__(self, storage_url: str, holder_pid: int | None) -> None:
        holder = f"pid {holder_pid}" if holder_pid else "another process"
        super().__init__(f"another gateway ({holder}) is already serving storage {storage_url}")
        self.storage_url = storage_url
        self.holder_pid = holder_pid


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).strip()
    return int(text) if text.isdigit() else None


@dataclass
class _Segment:
    path: str
    number: int
    size: int = 0
    unfinished: set[str] = field(default_factory=set)
    expires_at: float = 0.0
    reader: int | None = None

    def read(self, offset: int, length: int) -> bytes:
        if self.reader is None:
            self.reader = os.open(self.path, os.O_RDONLY)
        return os.pread(self.reader, length, offset)

    def close(self) -> None:
        if self.reader is not None:
            os.close(self.reader)
            self.reader = None


@dataclass
class _APIJournal:
    folder: str
    segments: dict[int, _Segment] = field(default_factory=dict)
    writer: int | None = None
    current: _Segment | None = None
    pending: dict[str, WorkloadState] = field(default_factory=dict)
    owed: dict[str, str] = field(default_factory=dict)


class JournalStore:
    def __init__(
        self, storage: Storage, *, fsync: bool = False, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.storage = storage
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.root = storage.journal_dir()
        os.makedirs(self.root, exist_ok=True)
        # buffered (the default): None, and nothing on the write path waits for the disk
        self.commits: GroupCommit | None = None
        self._lock = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(self._lock)
            os.close(self._lock)
            raise JournalLocked(storage.url, holder) from None
        # Who holds it, for the error of the next gateway that tries.
        os.ftruncate(self._lock, 0)
        os.pwrite(self._lock, str(os.getpid()).encode(), 0)
        self._apis: dict[str, _APIJournal] = {}
        # id → (api, segment number, offset, length) of its newest final record
        self._finals: dict[str, tuple[str, int, int, int]] = {}
        self._accepted_in: dict[str, _Segment] = {}
        for api in sorted(os.listdir(self.root)):
            if os.path.isdir(os.path.join(self.root, api)):
                self._replay(api)
        if fsync:
            fsync_folder(os.path.dirname(self.root))  # the journal folder's own name
            self.commits = GroupCommit()

    # writing -----------------------------------------------------------------------------
    def _journal(self, api: str) -> _APIJournal:
        journal = self._apis.get(api)
        if journal is None:
            folder = os.path.join(self.root, api)
            if self.commits is not None and not os.path.isdir(folder):
                os.makedirs(folder)
                fsync_folder(self.root)  # once per API: its folder's name is durable
            os.makedirs(folder, exist_ok=True)
            journal = self._apis[api] = _APIJournal(folder)
        return journal

    def _append(self, api: str, kind: bytes, workload_id: str, data: bytes) -> tuple[_Segment, int]:
        segment, offsets = self._append_many(api, [(kind, workload_id, data)])
        return segment, offsets[0]

    def _append_many(
        self, api: str, records: list[tuple[bytes, str, bytes]]
    ) -> tuple[_Segment, list[int]]:
        """Append records with one write; their data offsets in the segment."""
        journal = self._journal(api)
        segment = journal.current
        if segment is None or segment.size >= self.segment_bytes:
            segment = self._rotate(journal)
        assert journal.writer is not None
        offsets: list[int] = []
        parts: list[bytes] = []
        position = segment.size
        for kind, workload_id, data in records:
            parts.append(_HEADER.pack(kind, workload_id.encode("ascii"), len(data)))
            parts.append(data)
            offsets.append(position + _HEADER.size)
            position += _HEADER.size + len(data)
        blob = b"".join(parts)
        try:
            written = os.write(journal.writer, blob)
            while written < len(blob):  # a signal can interrupt a large write part-way
                written += os.write(journal.writer, blob[written:])
        except OSError:
            # Disk full or similar: cut the partial batch so the next one starts on a boundary.
            os.ftruncate(journal.writer, segment.size)
            raise
        if self.commits is not None:
            self.commits.wrote(journal.writer)  # the engine awaits `commits.synced()`
        segment.size += len(blob)
        return segment, offsets

    def _rotate(self, journal: _APIJournal) -> _Segment:
        if journal.writer is not None:
            if self.commits is not None:
                self.commits.retire(journal.writer)  # closed once its last writes are synced
            else:
                os.close(journal.writer)
        number = max(journal.segments, default=0) + 1
        path = os.path.join(journal.folder, f"{number:010d}.log")
        journal.writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if self.commits is not None:
            self.commits.created(journal.folder)  # the new segment's name, in the same fsync
        segment = _Segment(path, number)
        journal.segments[number] = segment
        journal.current = segment
        return segment

    def accept(self, workload: WorkloadState) -> None:
        segment, _ = self._append(workload.api, ACCEPT, workload.id, workload.queue_entry())
        segment.unfinished.add(workload.id)
        self._accepted_in[workload.id] = segment

    def _write_finals(self, api: str, finals: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """Final records of one API, in one append (a chunk's outcomes arrive together)."""
        records = [
            (FINAL_OWING_WEBHOOK if owed_url else FINAL, workload_id, jsoncodec.dumps(record))
            for workload_id, record, owed_url in finals
        ]
        segment, offsets = self._append_many(api, records)
        placed = zip(finals, records, offsets, strict=True)
        for (workload_id, record, _), (_, _, data), offset in placed:
            segment.expires_at = max(segment.expires_at, float(record.get("expires_at") or 0))
            self._finals[workload_id] = (api, segment.number, offset, len(data))
            accepted_in = self._accepted_in.pop(workload_id, None)
            if accepted_in is not None:
                accepted_in.unfinished.discard(workload_id)

    def finish(self, api: str, writes: list[FinalWrite]) -> None:
        if not writes:
            return
        self._write_finals(
            api,
            [
                (workload.id, {**record, "_webhook_owed": url} if url else record, url)
                for workload, record, url in writes
            ],
        )
        for workload, _, _ in writes:
            delete_stored_payload(self.storage, workload)

    def record_webhook(self, api: str, workload_id: str, record: dict[str, Any]) -> None:
        self._write_finals(api, [(workload_id, record, None)])

    # reading -----------------------------------------------------------------------------
    def final_record(self, api: str, workload_id: str) -> dict[str, Any] | None:
        location = self._finals.get(workload_id)
        if location is None or location[0] != api:
            return None
        segment = self._apis[api].segments.get(location[1])
        if segment is None:
            return None
        record = json.loads(segment.read(location[2], location[3]))
        record.pop("_webhook_owed", None)
        return dict(record)

    def pending(self, api: str) -> list[WorkloadState]:
        journal = self._apis.get(api)
        if journal is None:
            return []
        found, journal.pending = list(journal.pending.values()), {}
        return found

    def owed_webhooks(self, api: str) -> list[tuple[str, str]]:
        journal = self._apis.get(api)
        if journal is None:
            return []
        owed, journal.owed = list(journal.owed.items()), {}
        return owed

    def drop_queue(self, api: str) -> None:
        """Nothing to do: undeploy writes a cancelled final record for every queued workload."""

    # replay and expiry -------------------------------------------------------------------
    def _replay(self, api: str) -> None:
        journal = self._journal(api)
        names = sorted(n for n in os.listdir(journal.folder) if n.endswith(".log"))
        for name in names:
            segment = _Segment(os.path.join(journal.folder, name), int(name.split(".")[0]))
            journal.segments[segment.number] = segment
            self._replay_segment(api, journal, segment)
        for workload_id in journal.pending:
            self._accepted_in[workload_id].unfinished.add(workload_id)
        if journal.pending:
            logger.info("journal of %s: %d unfinished workloads", api, len(journal.pending))

    def _replay_segment(self, api: str, journal: _APIJournal, segment: _Segment) -> None:
        with open(segment.path, "rb") as source:
            offset = 0
            while True:
                header = source.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                kind, raw_id, length = _HEADER.unpack(header)
                workload_id = raw_id.decode("ascii")
                data_at = offset + _HEADER.size
                if kind == ACCEPT:
                    data = source.read(length)
                    if len(data) < length:
                        break
                    journal.pending[workload_id] = WorkloadState.from_queue_entry(data)
                    self._accepted_in[workload_id] = segment
                else:
                    data = source.read(length)
                    if len(data) < length:
                        break
                    record = json.loads(data)
                    segment.expires_at = max(
                        segment.expires_at, float(record.get("expires_at") or 0)
                    )
                    self._finals[workload_id] = (api, segment.number, data_at, length)
                    journal.pending.pop(workload_id, None)
                    journal.owed.pop(workload_id, None)
                    if kind == FINAL_OWING_WEBHOOK:
                        journal.owed[workload_id] = record["_webhook_owed"]
                offset = data_at + length
        if offset < os.path.getsize(segment.path):
            # A torn tail (power loss mid-write): drop it so appends start on a record boundary.
            logger.warning("truncating a torn record at %s:%d", segment.path, offset)
            os.truncate(segment.path, offset)
        segment.size = offset

    def sweep(self) -> int:
        """Delete segments with no unfinished workload whose final records all expired."""
        now, removed = time.time(), 0
        for api, journal in self._apis.items():
            for number, segment in list(journal.segments.items()):
                if segment is journal.current or segment.unfinished:
                    continue
                if segment.expires_at and segment.expires_at >= now:
                    continue
                self._forget_finals_in(api, segment)
                segment.close()
                os.remove(segment.path)
                del journal.segments[number]
                removed += 1
        return removed

    def _forget_finals_in(self, api: str, segment: _Segment) -> None:
        stale = [
            workload_id
            for workload_id, (owner, number, _, _) in self._finals.items()
            if owner == api and number == segment.number
        ]
        for workload_id in stale:
            del self._finals[workload_id]

    def close(self) -> None:
        if self.commits is not None:
            self.commits.close()  # what is written is synced before the writers close
        for journal in self._apis.values():
            if journal.writer is not None:
                os.close(journal.writer)
                journal.writer = None
            for segment in journal.segments.values():
                segment.close()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        os.close(self._lock)
