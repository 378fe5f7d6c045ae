"""ObjectStore on S3 (moto, in this process): a deposed gateway never overwrites a final
record, and a fenced batch writes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asyncnb.contract.status import Status
from asyncnb.engine.lease import LeaseLost
from asyncnb.engine.store import ObjectStore
from asyncnb.storage import Storage

from .test_journal import final, workload


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="fenced")
    try:
        yield Storage("s3://fenced/p", {"skip_instance_cache": True})
    finally:
        server.stop()


def test_the_first_final_record_of_a_workload_wins(s3: Storage) -> None:
    new_holder, deposed = ObjectStore(s3), ObjectStore(s3)
    w = workload(1)
    new_holder.accept(w)
    first = final(w)
    new_holder.finish("api", [(w, first, None)])
    late = {**first, "status": Status.FAILED.value, "error": "late"}
    deposed.finish("api", [(w, late, None)])
    assert new_holder.final_record("api", w.id) == first
    assert new_holder.pending("api") == []


def test_a_new_workload_of_the_same_id_replaces_an_old_record(s3: Storage) -> None:
    store = ObjectStore(s3)
    old = workload(2)
    store.finish("api", [(old, final(old), None)])
    again = workload(2)
    again.created_at = old.created_at + 60  # its idempotency key expired, then came back
    record = final(again)
    store.finish("api", [(again, record, None)])
    assert store.final_record("api", again.id) == record


def test_a_fenced_batch_writes_nothing(s3: Storage) -> None:
    def fence() -> None:
        raise LeaseLost("taken over")

    store = ObjectStore(s3, fence)
    w = workload(3)
    store.accept(w)
    with pytest.raises(LeaseLost):
        store.finish("api", [(w, final(w), None)])
    assert store.final_record("api", w.id) is None
    assert [p.id for p in store.pending("api")] == [w.id]
