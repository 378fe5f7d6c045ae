"""S3 storage through s3fs against moto_server, a real S3 endpoint on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, MotoServer


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


def test_workloads_live_in_s3_and_survive_restart(moto: MotoServer) -> None:
    moto.make_bucket("asyncnb")
    args = ("--storage", "s3://asyncnb/team", "--workers", "2")
    gateway = Gateway(*args, env=moto.env).start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.Raw, "s3api")
            gateway.wait_ready("s3api")
            small = [api.submit({"n": n}) for n in range(20)]
            big_payload = b"\x01" * (2 * 1024 * 1024)
            big = api.submit(big_payload)
            large_result = api.submit({"repeat": 1_500_000})
            assert [w.result(timeout=60) for w in small] == [{"n": n} for n in range(20)]
            assert big.result(timeout=60) == big_payload[::-1]
            assert large_result.result(timeout=60) == b"x" * 1_500_000
        keys = moto.keys("asyncnb", "team/")
        assert "team/apis/s3api/spec.json" in keys and "team/apis/s3api/v1.pkl" in keys
        assert f"team/workloads/s3api/{small[0].id}/status.json" in keys
        assert f"team/workloads/s3api/{large_result.id}/result" in keys
        assert not [k for k in keys if k.startswith("team/queue/")]
        assert f"team/workloads/s3api/{big.id}/payload" not in keys  # deleted once processed
    finally:
        gateway.stop()

    restarted = Gateway(*args, env=moto.env).start()
    try:
        info = restarted.wait_ready("s3api")
        assert info["version"] == 1
        with restarted.client() as http:
            old = http.get(f"/s3api/{small[3].id}").json()
            assert old["status"] == "completed" and old["result"] == {"n": 3}
            fresh = http.post("/s3api", json=[1], headers={"Prefer": "wait=30"}).json()
            assert fresh["result"] == [1]
    finally:
        restarted.stop()
