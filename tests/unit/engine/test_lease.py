"""The storage lease: one holder at a time, takeover after expiry, fencing checks."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from asyncnb.engine.lease import (
    FlockLease,
    LeaseLost,
    NullLease,
    ObjectLease,
    open_lease,
    precondition_failed,
)
from asyncnb.storage import Storage


class FakeObjects:
    """One object with S3's conditional-write semantics, atomic under a lock."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.lock = threading.Lock()
        self.writes = 0
        self.fail = False

    def _etag(self) -> str | None:
        return None if self.data is None else hashlib.md5(self.data).hexdigest()

    def get(self) -> tuple[bytes, str] | None:
        if self.fail:
            raise OSError("storage unreachable")
        with self.lock:
            if self.data is None:
                return None
            etag = self._etag()
            assert etag is not None
            return self.data, etag

    def put(self, data: bytes, *, if_match: str | None) -> str | None:
        if self.fail:
            raise OSError("storage unreachable")
        with self.lock:
            if self._etag() != if_match:
                return None
            self.data = data + b" " * self.writes  # a new ETag even for the same record
            self.writes += 1
            return self._etag()

    def record(self) -> dict[str, object]:
        assert self.data is not None
        found: dict[str, object] = json.loads(self.data)
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(objects: FakeObjects, clock: Clock, url: str, ttl: float = 3.0) -> ObjectLease:
    return ObjectLease(objects, url, ttl, clock=clock, monotonic=clock)


def test_object_lease_is_held_by_one_and_taken_over_after_expiry() -> None:
    objects, clock = FakeObjects(), Clock()
    a, b = lease(objects, clock, "http://a"), lease(objects, clock, "http://b")
    assert a.acquire() and a.epoch == 1
    assert not b.acquire() and b.epoch is None
    holder = b.holder()
    assert holder is not None and holder.url == "http://a" and holder.epoch == 1
    assert holder.expires_at == pytest.approx(clock.now + 3.0)
    clock.now += 2
    assert a.renew()
    clock.now += 2  # within the renewed TTL
    assert not b.acquire()
    clock.now += 1.5  # past it: a stopped renewing
    assert b.acquire() and b.epoch == 2
    assert objects.record()["url"] == "http://b"
    # the deposed holder finds out at its next renewal, and its fencing check fails
    with pytest.raises(LeaseLost):
        a.check()
    assert not a.renew() and a.epoch is None
    b.check()


def test_object_lease_release_hands_over_at_once_and_epochs_keep_rising() -> None:
    objects, clock = FakeObjects(), Clock()
    a, b = lease(objects, clock, "http://a"), lease(objects, clock, "http://b")
    assert a.acquire()
    a.release()
    assert a.epoch is None and b.holder() is None
    assert b.acquire() and b.epoch == 2
    b.release()
    c = lease(objects, clock, "http://c")
    assert c.acquire() and c.epoch == 3


def test_a_release_never_touches_a_successors_lease() -> None:
    objects, clock = FakeObjects(), Clock()
    a, b = lease(objects, clock, "http://a"), lease(objects, clock, "http://b")
    assert a.acquire()
    clock.now += 10
    assert b.acquire()
    a.release()  # its If-Match fails: b's record stays
    assert objects.record()["url"] == "http://b" and not objects.record().get("released")
    b.check()


def test_two_racing_acquirers_one_wins() -> None:
    objects, clock = FakeObjects(), Clock()
    contenders = [lease(objects, clock, f"http://{n}") for n in range(8)]
    barrier = threading.Barrier(len(contenders))
    won: list[bool] = []

    def race(candidate: ObjectLease) -> None:
        barrier.wait()
        won.append(candidate.acquire())

    threads = [threading.Thread(target=race, args=(c,)) for c in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert won.count(True) == 1


def test_a_holder_that_cannot_renew_is_fenced_at_its_ttl() -> None:
    objects, clock = FakeObjects(), Clock()
    a = lease(objects, clock, "http://a")
    assert a.acquire()
    assert a.held_until == pytest.approx(clock.now + 3.0)
    objects.fail = True
    with pytest.raises(OSError):
        a.renew()
    objects.fail = False
    clock.now += 3.0
    with pytest.raises(LeaseLost, match="expired"):
        a.check()


def test_flock_lease_one_holder_per_file_and_release(tmp_path: Path) -> None:
    path = str(tmp_path / "lease.lock")
    a, b = FlockLease(path, "http://a"), FlockLease(path, "http://b")
    assert a.acquire() and a.epoch == 1
    assert not b.acquire()
    holder = b.holder()
    assert holder is not None and holder.url == "http://a" and holder.expires_at is None
    a.check()
    with pytest.raises(LeaseLost):
        b.check()
    a.release()
    assert b.holder() is None
    assert b.acquire() and b.epoch == 2
    assert b.renew()
    b.release()


def test_flock_lease_reads_an_older_pid_only_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "lease.lock"
    path.write_text("1234")
    a = FlockLease(str(path), "http://a")
    assert a.holder() is None
    assert a.acquire() and a.epoch == 1
    a.release()


def test_open_lease_per_storage(tmp_path: Path) -> None:
    assert isinstance(open_lease(Storage(str(tmp_path)), "http://x"), FlockLease)
    memory = open_lease(Storage("memory://lease-test"), None)
    assert isinstance(memory, NullLease) and memory.acquire()
    memory.check()
    memory.release()
    with pytest.raises(LeaseLost):
        memory.check()


def test_precondition_failed_recognises_s3_answers() -> None:
    from botocore.exceptions import ClientError

    def client_error(code: str, status: int) -> ClientError:
        response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(response, "PutObject")  # type: ignore[arg-type]

    translated = OSError(22, "At least one of the pre-conditions you specified did not hold")
    translated.__cause__ = client_error("PreconditionFailed", 412)
    assert precondition_failed(translated)
    assert precondition_failed(FileExistsError("exists"))
    assert precondition_failed(client_error("ConditionalRequestConflict", 409))
    assert not precondition_failed(client_error("AccessDenied", 403))
    assert not precondition_failed(OSError(5, "timeout"))


def test_verify_reads_the_stored_epoch_while_check_trusts_the_last_renewal() -> None:
    objects, clock = FakeObjects(), Clock()
    a = lease(objects, clock, "http://a")
    assert a.acquire()
    a.verify()
    # someone rewrites the lease behind a's back (a successor after a clock jump, say)
    objects.data = json.dumps({"holder": "other", "epoch": 2, "expires_at": 2e9}).encode()
    a.check()  # its own view: renewed a moment ago
    with pytest.raises(LeaseLost, match="taken over"):
        a.verify()
    assert not a.renew()


def test_s3_objects_conditional_writes_on_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 path for real: s3fs's botocore client, against moto's S3 (in this process)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from asyncnb.engine.lease import S3Objects

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="leases")
        storage = Storage("s3://leases/p", {"skip_instance_cache": True})
        objects = S3Objects(storage.fs, storage.lease_path())
        assert objects.get() is None
        first = objects.put(b"one", if_match=None)
        assert first is not None
        assert objects.put(b"two", if_match=None) is None  # If-None-Match: * -> 412
        assert objects.put(b"two", if_match='"not-it"') is None  # If-Match -> 412
        second = objects.put(b"two", if_match=first)
        assert second is not None and second != first
        assert objects.get() == (b"two", second)
        a = ObjectLease(objects, "http://a", 3.0)
        b = ObjectLease(objects, "http://b", 3.0)
        objects.put(b"{}", if_match=second)  # a record long expired
        assert a.acquire() and a.epoch == 1
        assert not b.acquire()
        holder = b.holder()
        assert holder is not None and holder.url == "http://a"
        assert a.renew()
        a.release()
        assert b.acquire() and b.epoch == 2
    finally:
        server.stop()
