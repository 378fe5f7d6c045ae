"""RunPod's serverless contract (issue 18) against a real `asyncnb serve` with Dask workers,
driven by the real `runpod` package, unmodified and only pointed at the gateway:
`runpod.endpoint_url_base = <gateway>/compat/runpod/v2` and `runpod.api_key = <token or key>`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import runpod

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver

USER, ADMIN = "user-token-runpod", "admin-token-runpod"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


class WaitsForFile:
    """Runs until the file its payload names exists (or a minute passes)."""

    def predict(self, payload: Any) -> Any:
        deadline = time.monotonic() + 60
        while not os.path.exists(payload["until"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return {"name": payload.get("name")}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(
        "--storage",
        str(tmp_path_factory.mktemp("storage")),
        "--workers",
        "1",
        "--token",
        USER,
        "--admin-token",
        ADMIN,
    ).start()
    try:
        with Client(gateway.url, token=ADMIN) as admin:
            admin.deploy(predictors.Echo, "echo")
            admin.deploy(predictors.Streamer, "streamer")
            admin.deploy(WaitsForFile, "waits")
        for api in ("echo", "streamer", "waits"):
            gateway.wait_ready(api, token=USER)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def pointed(gateway: Gateway) -> Iterator[Gateway]:
    """The `runpod` package pointed at the gateway, with the user token as its API key."""
    before = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key = USER
    runpod.endpoint_url_base = f"{gateway.url}/compat/runpod/v2"
    try:
        yield gateway
    finally:
        runpod.api_key, runpod.endpoint_url_base = before


def until_status(job: Any, wanted: str) -> None:
    deadline = time.monotonic() + 60
    while job.status() != wanted:
        assert time.monotonic() < deadline, f"job {job.job_id} never {wanted}"
        time.sleep(0.1)


def test_run_status_output_and_run_sync(pointed: Gateway) -> None:
    endpoint = runpod.Endpoint("echo")
    job = endpoint.run({"input": {"x": 1}})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    output = job.output(timeout=60)
    assert output["payload"] == {"x": 1} and output["id"] == job.job_id
    assert job.status() == "COMPLETED"
    assert endpoint.run_sync({"x": 2}, timeout=60)["payload"] == {"x": 2}
    with pointed.client(USER) as http:  # one workload, seen natively too
        assert http.get(f"/echo/{job.job_id}").json()["result"]["payload"] == {"x": 1}


@pytest.mark.timeout(120)
def test_stream_yields_a_generators_outputs(pointed: Gateway) -> None:
    job = runpod.Endpoint("streamer").run({"n": 3, "delay": 0.2, "tag": "rp"})
    assert list(job.stream()) == [{"index": i, "tag": "rp"} for i in range(3)]
    assert job.status() == "COMPLETED"
    assert job.output() == [{"index": i, "tag": "rp"} for i in range(3)]


def test_cancel_purge_queue_and_health(pointed: Gateway, tmp_path: Path) -> None:
    endpoint = runpod.Endpoint("waits")
    gate = tmp_path / "open"
    running = endpoint.run({"until": str(gate), "name": "running"})
    until_status(running, "IN_PROGRESS")
    queued = [endpoint.run({"until": str(gate), "name": f"q{n}"}) for n in range(3)]
    health = endpoint.health()
    assert health["jobs"]["inProgress"] == 1 and health["jobs"]["inQueue"] == 3
    assert health["workers"] == {"idle": 0, "running": 1}
    assert queued[0].cancel() == {"id": queued[0].job_id, "status": "CANCELLED"}
    assert queued[0].status() == "CANCELLED"
    assert endpoint.purge_queue() == {"removed": 2, "status": "completed"}
    assert [job.status() for job in queued] == ["CANCELLED"] * 3
    assert running.status() == "IN_PROGRESS"  # a purge leaves what runs
    gate.touch()
    assert running.output(timeout=60) == {"name": "running"}
    health = endpoint.health()
    assert health["jobs"]["completed"] == 1 and health["jobs"]["inQueue"] == 0


def test_an_api_key_works_and_a_wrong_one_is_refused(pointed: Gateway) -> None:
    with Client(pointed.url, token=ADMIN) as admin:
        key = admin.create_key("runpod-user", apis=["echo"], scopes=["invoke"])["key"]
    assert runpod.Endpoint("echo", api_key=key).run_sync({"k": 1}, timeout=60)["payload"] == {
        "k": 1
    }
    with pytest.raises(requests.HTTPError) as other_api:
        runpod.Endpoint("streamer", api_key=key).run({"k": 2})
    assert other_api.value.response.status_code == 403
    assert "may not call" in other_api.value.response.json()["detail"]
    with pytest.raises(requests.HTTPError) as wrong:
        runpod.Endpoint("echo", api_key="not-the-token").run({"k": 3})
    assert wrong.value.response.status_code == 403
    unknown = f"ank_{'0' * 16}_{'x' * 43}"
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        runpod.Endpoint("echo", api_key=unknown).run({"k": 4})


def test_a_jobs_webhook_gets_runpods_status_body(pointed: Gateway) -> None:
    """RunPod POSTs the job's status body to its webhook; so does the adapter (signed with
    the API's secret as every asyncnb webhook)."""
    with WebhookReceiver() as receiver:
        job = runpod.Endpoint("echo").run({"input": {"n": 7}, "webhook": receiver.url})
        receiver.wait_for(1)
        delivery = receiver.received[0]
    body = delivery["json"]
    assert body["id"] == job.job_id and body["status"] == "COMPLETED"
    assert body["output"]["payload"] == {"n": 7}
    assert body["executionTime"] >= 0 and body["delayTime"] >= 0
    assert delivery["headers"]["webhook-id"] == f"msg_{job.job_id}"
