"""The storage tests of every backend, on a real S3 endpoint (moto_server on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from asyncnb.storage import Storage

from ..support.processes import MotoServer
from ..unit import test_storage as every_backend

BUCKET = "asyncnb-tests"
WID = every_backend.WID

for _name in every_backend.EVERY_BACKEND:
    globals()[_name] = getattr(every_backend, _name)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        server.make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def _s3(moto: MotoServer, prefix: str) -> Storage:
    return Storage(
        f"s3://{BUCKET}/{prefix}",
        {"client_kwargs": {"endpoint_url": moto.endpoint}, "key": "testing", "secret": "testing"},
    )


@pytest.fixture
def storage(moto: MotoServer) -> Storage:
    return _s3(moto, f"prefix-{uuid.uuid4().hex}")


def test_s3_objects_land_under_the_prefix(moto: MotoServer) -> None:
    prefix = f"layout-{uuid.uuid4().hex}"
    storage = _s3(moto, prefix)
    storage.write_json(storage.spec_path("iris"), {"v": 1})
    storage.write_bytes(storage.queue_path("iris", WID), b"entry")
    assert sorted(moto.keys(BUCKET, prefix)) == [
        f"{prefix}/apis/iris/spec.json",
        f"{prefix}/queue/iris/{WID}",
    ]
