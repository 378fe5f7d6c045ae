"""The storage lease: at most one gateway serves a storage (accepts, dispatches, finishes).

- `FlockLease` (local disk): an `flock` on `lease.lock` in the storage root. The kernel drops
  it when its process dies, `kill -9` included, so a standby polling it with `LOCK_NB` takes
  over within its poll interval. The holder writes `{url, pid, epoch}` into the file, for a
  standby to say who is active. The journal keeps its own flock under it (store/journal.py).
- `ObjectLease` (object stores): one object `lease.json` `{holder, url, epoch, expires_at}`.
  It is created with a conditional PUT (`If-None-Match: *`), renewed with `If-Match: <etag>`,
  and taken over with `If-Match` once `expires_at` has passed, with `epoch + 1`. Two gateways
  racing for it: S3 lets one PUT win and answers the other `412 Precondition Failed`.
- `NullLease`: memory:// storage lives in one process, so nobody else can serve it.

A holder renews every `ttl / 3`. One that cannot renew before its lease would expire stops
serving (`held_until`, measured on its own clock from before the renewal it sent), which is
no later than when a standby, reading `expires_at`, may take over (clocks in sync).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..storage import Storage

logger = logging.getLogger(__name__)
DEFAULT_TTL_S = 15.0


class LeaseLost(RuntimeError):
    """This gateway no longer holds the storage's lease: it must not write as its holder."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lease."""

    url: str | None
    epoch: int
    expires_at: float | None  # None: held until its process ends (flock)
    holder_id: str | None = None
    pid: int | None = None


class Lease(Protocol):
    ttl_s: float
    poll_s: float  # how often a standby tries to acquire
    epoch: int | None  # the epoch held, None when not held

    def acquire(self) -> bool: ...

    def renew(self) -> bool: ...

    def release(self) -> None: ...

    def holder(self) -> Holder | None: ...

    def check(self) -> None:
        """Raise `LeaseLost` unless this gateway holds the lease (a fencing check)."""

    @property
    def held_until(self) -> float | None:
        """`time.monotonic()` by which the holder must stop serving unless it renews."""


class NullLease:
    """The lease of a storage only this process can reach: always held."""

    poll_s = 1.0

    def __init__(self, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.epoch: int | None = None

    def acquire(self) -> bool:
        self.epoch = 1
        return True

    def renew(self) -> bool:
        return self.epoch is not None

    def release(self) -> None:
        self.epoch = None

    def holder(self) -> Holder | None:
        return None

    def check(self) -> None:
        if self.epoch is None:
            raise LeaseLost("the lease is not held")

    @property
    def held_until(self) -> float | None:
        return None


class FlockLease:
    def __init__(self, path: str, url: str | None, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.path = path
        self.url = url
        self.ttl_s = ttl_s
        self.poll_s = 1.0
        self.epoch: int | None = None
        self._fd: int | None = None

    def _read(self, fd: int) -> dict[str, Any]:
        try:
            found = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}  # a pid written by an older gateway, or a torn write
        return found if isinstance(found, dict) else {}

    def acquire(self) -> bool:
        if self.epoch is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        epoch = int(self._read(fd).get("epoch") or 0) + 1
        info = {"url": self.url, "pid": os.getpid(), "epoch": epoch, "expires_at": None}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd, self.epoch = fd, epoch
        return True

    def renew(self) -> bool:
        return self.epoch is not None  # the kernel holds it for as long as this process lives

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd, epoch, self.epoch = self._fd, None, self.epoch, None
        info = {"url": None, "pid": None, "epoch": epoch, "expires_at": None, "released": True}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> Holder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            info = self._read(fd)
        finally:
            os.close(fd)
        if not info or info.get("released"):
            return None
        return Holder(info.get("url"), int(info.get("epoch") or 0), None, pid=info.get("pid"))

    def check(self) -> None:
        if self.epoch is None:
            raise LeaseLost(f"the lease {self.path} is not held")

    @property
    def held_until(self) -> float | None:
        return None


class ConditionalObjects(Protocol):
    """One object read with its ETag, and written only if its ETag is still what was read."""

    def get(self) -> tuple[bytes, str] | None: ...

    def put(self, data: bytes, *, if_match: str | None) -> str | None:
        """Write `data` if the object's ETag is `if_match` (None: if it does not exist);
        the new ETag, or None when the condition failed (another writer came first)."""


class ObjectLease:
    def __init__(
        self,
        objects: ConditionalObjects,
        url: str | None,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.url = url
        self.ttl_s = ttl_s
        self.poll_s = min(1.0, ttl_s / 3)
        self.holder_id = uuid.uuid4().hex
        self.epoch: int | None = None
        self._etag: str | None = None
        self._held_until: float | None = None
        self._clock = clock
        self._monotonic = monotonic

    def _record(self, epoch: int, expires_at: float, **extra: Any) -> bytes:
        record = {
            "holder": self.holder_id,
            "url": self.url,
            "pid": os.getpid(),
            "epoch": epoch,
            "expires_at": expires_at,
            **extra,
        }
        return json.dumps(record).encode()

    def _read(self) -> tuple[dict[str, Any], str] | None:
        found = self.objects.get()
        if found is None:
            return None
        data, etag = found
        try:
            record = json.loads(data)
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), etag

    def acquire(self) -> bool:
        if self.epoch is not None:
            return self.renew()
        started = self._monotonic()
        found = self._read()
        if found is None:
            epoch, if_match = 1, None
        else:
            record, etag = found
            expires_at = float(record.get("expires_at") or 0)
            mine = record.get("holder") == self.holder_id
            if not mine and not record.get("released") and expires_at > self._clock():
                return False
            epoch, if_match = int(record.get("epoch") or 0) + 1, etag
        written = self.objects.put(
            self._record(epoch, self._clock() + self.ttl_s), if_match=if_match
        )
        if written is None:
            return False
        self.epoch, self._etag, self._held_until = epoch, written, started + self.ttl_s
        logger.info("lease acquired, epoch %d", epoch)
        return True

    def renew(self) -> bool:
        """Extend the lease; False when it is lost (taken over). A storage error propagates:
        the lease may still be held, until `held_until`."""
        if self.epoch is None or self._etag is None:
            return False
        started = self._monotonic()
        record = self._record(self.epoch, self._clock() + self.ttl_s)
        etag = self.objects.put(record, if_match=self._etag)
        if etag is None:
            logger.warning("lease epoch %d was taken over", self.epoch)
            self.epoch = self._etag = self._held_until = None
            return False
        self._etag, self._held_until = etag, started + self.ttl_s
        return True

    def release(self) -> None:
        """Hand the lease over now: a standby takes it at its next poll, without waiting for
        the TTL. Only while still held (If-Match), so a successor's lease is never touched."""
        if self.epoch is None or self._etag is None:
            return
        epoch, etag = self.epoch, self._etag
        self.epoch = self._etag = self._held_until = None
        try:
            self.objects.put(self._record(epoch, 0.0, released=True), if_match=etag)
        except Exception:
            logger.warning("could not release the lease (it expires by itself)", exc_info=True)

    def holder(self) -> Holder | None:
        found = self._read()
        if found is None:
            return None
        record = found[0]
        expires_at = float(record.get("expires_at") or 0)
        if record.get("released") or expires_at <= self._clock():
            return None
        return Holder(
            record.get("url"),
            int(record.get("epoch") or 0),
            expires_at,
            holder_id=record.get("holder"),
            pid=record.get("pid"),
        )

    def check(self) -> None:
        """The fencing check, in this holder's own view (no storage call): it holds an epoch
        that its last renewal found unchallenged, and that has not expired on its own clock."""
        if self.epoch is None or self._held_until is None:
            raise LeaseLost("the lease is not held")
        if self._monotonic() >= self._held_until:
            raise LeaseLost(f"the lease epoch {self.epoch} expired before it was renewed")

    def verify(self) -> None:
        """`check`, and one read of the lease object: its epoch is still this holder's."""
        self.check()
        found = self._read()
        record = found[0] if found else {}
        if record.get("holder") != self.holder_id or int(record.get("epoch") or 0) != self.epoch:
            raise LeaseLost(f"the lease epoch {self.epoch} was taken over")

    @property
    def held_until(self) -> float | None:
        return self._held_until


def precondition_failed(exc: BaseException) -> bool:
    """Whether an s3fs/botocore error is S3's answer to a failed conditional write."""
    if isinstance(exc, FileExistsError):
        return True
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return True
    return isinstance(exc, OSError) and exc.errno == errno.EINVAL and "recondition" in str(exc)


class S3Objects:
    """`ConditionalObjects` for one key, through the botocore client under s3fs (its
    `pipe_file` sends no conditional headers)."""

    def __init__(self, fs: Any, path: str) -> None:
        self.fs = fs
        self.path = path
        bucket, key, _ = fs.split_path(path)
        self.bucket, self.key = bucket, key

    def get(self) -> tuple[bytes, str] | None:
        from fsspec.asyn import sync

        async def read() -> tuple[bytes, str]:
            answer = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with answer["Body"] as body:
                data = await body.read()
            return data, str(answer["ETag"])

        try:
            return sync(self.fs.loop, read)
        except FileNotFoundError:
            return None

    def put(self, data: bytes, *, if_match: str | None) -> str | None:
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            answer = self.fs.call_s3(
                "put_object", Bucket=self.bucket, Key=self.key, Body=data, **condition
            )
        except (OSError, FileNotFoundError) as exc:
            if precondition_failed(exc):
                return None
            raise
        finally:
            self.fs.invalidate_cache(self.path)  # what s3fs's own writes do
        return str(answer["ETag"])


class BestEffortObjects:
    """`ConditionalObjects` for fsspec backends without conditional writes: the ETag check
    and the write are two calls, so two gateways racing within one round trip can both win.
    Stronger on S3 (`S3Objects`)."""

    def __init__(self, storage: Storage, path: str) -> None:
        self.storage = storage
        self.path = path

    def get(self) -> tuple[bytes, str] | None:
        data = self.storage.read_bytes(self.path)
        if data is None:
            return None
        import hashlib

        return data, hashlib.sha256(data).hexdigest()

    def put(self, data: bytes, *, if_match: str | None) -> str | None:
        current = self.get()
        if (current[1] if current else None) != if_match:
            return None
        self.storage.write_bytes(self.path, data)
        found = self.get()
        return found[1] if found and found[0] == data else None


def open_lease(storage: Storage, url: str | None, ttl_s: float = DEFAULT_TTL_S) -> Lease:
    """The lease of a storage, held by nobody yet (`acquire` it)."""
    if not storage.shared_across_processes:
        return NullLease(ttl_s)
    if storage.is_local:
        return FlockLease(storage.lease_path(), url, ttl_s)
    if storage.protocol in ("s3", "s3a"):
        return ObjectLease(S3Objects(storage.fs, storage.lease_path()), url, ttl_s)
    return ObjectLease(BestEffortObjects(storage, storage.lease_path()), url, ttl_s)
