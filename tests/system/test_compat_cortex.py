"""Cortex's AsyncAPI contract against a real `asyncnb serve`, driven by a client written from
Cortex's documentation (the "Making requests" page of the AsyncAPI, v0.42): submit with a
POST, poll the id until the status is `completed` or `failed`. Cortex shipped no client library;
its docs showed `requests` and curl, so this is what a team's existing scripts look like."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway

TOKEN = "cortex-user-token"


class CortexAsyncClient:
    """What Cortex's docs tell a user to write: nothing here knows about asyncnb, but the base
    URL and the bearer header (Cortex's gateway had no auth of its own)."""

    def __init__(self, endpoint: str, headers: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers.update(headers or {})

    def submit(self, payload: Any) -> str:
        response = self.session.post(self.endpoint, json=payload, timeout=30)
        response.raise_for_status()
        workload_id: str = response.json()["id"]
        return workload_id

    def get(self, workload_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.endpoint}/{workload_id}", timeout=30)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def wait(self, workload_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.get(workload_id)
            if result["status"] in ("completed", "failed"):
                return result
            assert time.monotonic() < deadline, result
            time.sleep(0.2)


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gateway = Gateway("--storage", "memory://cortex", "--workers", "1", "--token", TOKEN).start()
    try:
        with Client(gateway.url, token=TOKEN) as client:
            client.deploy(predictors.Echo, "echo", {"tag": "cortex"})
            client.deploy(predictors.Failing, "fails")
            client.deploy(predictors.Sleepy, "sleepy")
        for api in ("echo", "fails", "sleepy"):
            gateway.wait_ready(api, TOKEN)
        yield gateway
    finally:
        gateway.stop()


def cortex(gateway: Gateway, api: str, token: str | None = TOKEN) -> CortexAsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return CortexAsyncClient(f"{gateway.url}/compat/cortex/{api}", headers)


def test_a_cortex_client_submits_and_retrieves_its_results(gateway: Gateway) -> None:
    client = cortex(gateway, "echo")
    ids = [client.submit({"n": n}) for n in range(5)]
    for n, workload_id in enumerate(ids):
        result = client.wait(workload_id)
        assert result["status"] == "completed" and result["id"] == workload_id
        assert result["result"]["payload"] == {"n": n} and result["result"]["tag"] == "cortex"
        assert "timestamp" in result
    # the same workload through the native API: one engine behind both contracts
    with Client(gateway.url, token=TOKEN) as native:
        assert native.api("echo").workload(ids[0]).result(timeout=30)["payload"] == {"n": 0}


def test_statuses_while_queued_and_running_then_failed(gateway: Gateway) -> None:
    client = cortex(gateway, "sleepy")
    first = client.submit({"sleep": 1.5})
    seen = {client.get(first)["status"]}
    while (status := client.get(first)["status"]) != "completed":
        seen.add(status)
        time.sleep(0.05)
    assert seen <= {"in_queue", "in_progress"} and "in_progress" in seen
    assert "result" not in client.get(client.submit({"sleep": 2}))
    failed = cortex(gateway, "fails")
    failed_id = failed.submit({"x": 1})
    assert failed.wait(failed_id) == {"id": failed_id, "status": "failed"}  # no reason, as Cortex


def test_unknown_ids_and_credentials_get_cortex_errors(gateway: Gateway) -> None:
    client = cortex(gateway, "echo")
    unknown = client.session.get(f"{client.endpoint}/{'0' * 32}", timeout=30)
    assert unknown.status_code == 404 and "not found" in unknown.json()["detail"]
    anonymous = cortex(gateway, "echo", token=None)
    refused = anonymous.session.post(anonymous.endpoint, json={}, timeout=30)
    assert refused.status_code == 401 and refused.json()["detail"]
    missing = cortex(gateway, "nope").session.post(f"{gateway.url}/compat/cortex/nope", json={})
    assert missing.status_code == 404 and "detail" in missing.json()
