"""Signed webhooks to a real HTTP receiver, retried, verified by the standardwebhooks package."""

from __future__ import annotations

import time

import httpx
from standardwebhooks.webhooks import Webhook

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver


def wait_webhook_state(http: httpx.Client, api: str, workload_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = http.get(f"/{api}/{workload_id}").json()
        if (info.get("webhook") or {}).get("status") in ("delivered", "failed"):
            return info
        time.sleep(0.05)
    raise TimeoutError(info)


def test_per_request_webhook_is_signed_and_retried(client: Client, gateway: Gateway) -> None:
    api = client.deploy(predictors.Echo, "hooked")
    gateway.wait_ready("hooked")
    assert api.webhook_secret and api.webhook_secret.startswith("whsec_")
    with WebhookReceiver(fail_first=2) as receiver, gateway.client() as http:
        workload_id = http.post(
            "/hooked", json={"n": 1}, headers={"X-Webhook-URL": receiver.url}
        ).json()["id"]
        receiver.wait_for(1)
        delivery = receiver.received[0]
        verified = Webhook(api.webhook_secret).verify(delivery["body"], delivery["headers"])
        assert verified["id"] == workload_id and verified["status"] == "completed"
        assert verified["result"]["payload"] == {"n": 1}
        assert delivery["headers"]["webhook-id"] == f"msg_{workload_id}"
        info = wait_webhook_state(http, "hooked", workload_id)
        assert info["webhook"]["status"] == "delivered"
        assert info["webhook"]["attempts"] == 3
        assert receiver.calls == 3


def test_api_webhook_on_failure_and_cancel(client: Client, gateway: Gateway) -> None:
    with WebhookReceiver() as receiver:
        api = client.deploy(
            predictors.Failing,
            "hookfail",
            webhook_url=receiver.url,
            webhook_secret="whsec_" + "QUJD" * 8,
        )
        gateway.wait_ready("hookfail")
        with gateway.client() as http:
            http.post("/hookfail", json={"x": 1})
            receiver.wait_for(1)
            event = Webhook(api.webhook_secret).verify(
                receiver.received[0]["body"], receiver.received[0]["headers"]
            )
            assert event["status"] == "failed"
            assert event["error"]["type"] == "ValueError"

        sleepy = client.deploy(
            predictors.Sleepy, "hookcancel", webhook_url=receiver.url, max_concurrency=1
        )
        gateway.wait_ready("hookcancel")
        with gateway.client() as http:
            ids = [http.post("/hookcancel", json={"sleep": 1}).json()["id"] for _ in range(3)]
            http.delete(f"/hookcancel/{ids[-1]}")
            receiver.wait_for(2)
            event = Webhook(sleepy.webhook_secret).verify(
                receiver.received[1]["body"], receiver.received[1]["headers"]
            )
            assert event["status"] == "cancelled" and event["id"] == ids[-1]


def test_receiver_down_gives_failed_delivery_without_blocking(
    client: Client, gateway: Gateway
) -> None:
    client.deploy(predictors.Echo, "hookdown")
    gateway.wait_ready("hookdown")
    with gateway.client() as http:
        dead = "http://127.0.0.1:9/hook"  # discard port: nothing listens
        first = http.post("/hookdown", json={}, headers={"X-Webhook-URL": dead}).json()["id"]
        # other workloads finish while the delivery retries
        quick = http.post("/hookdown", json={}, headers={"Prefer": "wait=20"}).json()
        assert quick["status"] == "completed"
        info = wait_webhook_state(http, "hookdown", first)
        assert info["status"] == "completed"
        assert info["webhook"]["status"] == "failed"
        assert info["webhook"]["attempts"] == 6
        assert info["webhook"]["last_error"]
