"""The real `replicate` package, unmodified and only pointed at a real `asyncnb serve`
(gateway/compat/replicate.py): run, create by version and by model, wait, reload, cancel,
list, webhooks checked with replicate's own validator, and API keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.prediction import Prediction
from replicate.webhook import WebhookSigningSecret

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver

USER, ADMIN = "user-token-replicate", "admin-token-replicate"
SECRET = "whsec_" + "UkVQTElDQVRF" * 4  # one secret for every API: the account's secret
APIS = {"noconfig": predictors.NoConfig, "failing": predictors.Failing, "sleepy": predictors.Sleepy}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    storage: Path = tmp_path_factory.mktemp("storage")
    gw = Gateway(
        "--storage",
        str(storage),
        "--workers",
        "1",
        "--token",
        USER,
        "--admin-token",
        ADMIN,
        "--compat",
        "replicate",
        "--webhook-backoff",
        "0.1",
    ).start()
    try:
        with Client(gw.url, token=ADMIN) as admin:
            for name, cls in APIS.items():
                admin.deploy(cls, name, webhook_secret=SECRET)
        for name in APIS:
            gw.wait_ready(name, token=USER)
        yield gw
    finally:
        gw.stop()


def client_of(gateway: Gateway, token: str = USER) -> replicate.Client:
    return replicate.Client(api_token=token, base_url=f"{gateway.url}/compat/replicate")


def test_run_by_model_answers_the_output(gateway: Gateway) -> None:
    client = client_of(gateway)
    assert client.run("acme/noconfig", input={"prompt": "hi"}) == {"prompt": "hi"}
    # a wait that runs out answers `starting`, and run() polls until it ends
    slept = client.run("acme/sleepy", input={"sleep": 1.5, "name": "n"}, wait=1)
    assert isinstance(slept, dict) and slept["name"] == "n"
    with pytest.raises(ModelError) as failed:
        client.run("acme/failing", input={"x": 1})
    assert "ValueError" in str(failed.value.prediction.error)


def test_create_by_version_and_model_wait_reload(gateway: Gateway) -> None:
    client = client_of(gateway)
    by_version = client.predictions.create(version="noconfig", input={"n": 1})
    assert by_version.id.startswith("noconfig-")
    assert by_version.status in ("starting", "processing", "succeeded")
    by_version.wait()
    assert by_version.status == "succeeded" and by_version.output == {"n": 1}
    assert by_version.metrics is not None and by_version.metrics["predict_time"] >= 0
    assert by_version.version == "noconfig:1" and by_version.completed_at
    by_model = client.predictions.create(model="acme/noconfig", input={"n": 2})
    by_model.wait()
    assert by_model.output == {"n": 2}
    again = client.predictions.get(by_model.id)
    again.reload()
    assert again.status == "succeeded" and again.output == {"n": 2}
    assert again.urls is not None and again.urls["get"].endswith(f"/v1/predictions/{again.id}")
    with pytest.raises(ReplicateError) as unknown:
        client.predictions.create(version="nowhere", input={})
    assert unknown.value.status == 404 and "nowhere" in str(unknown.value.detail)
    with pytest.raises(ReplicateError) as malformed:
        client.predictions.get("not-an-id")
    assert malformed.value.status == 400


def test_cancel_and_list(gateway: Gateway) -> None:
    client = client_of(gateway)
    running = client.predictions.create(model="acme/sleepy", input={"sleep": 2})
    queued = client.predictions.create(model="acme/sleepy", input={"sleep": 0})
    queued.cancel()
    assert queued.status == "canceled"
    running.cancel()
    assert running.status == "canceled"
    queued.reload()
    assert queued.status == "canceled" and queued.output is None
    page = client.predictions.list()
    ids = [p.id for p in page]
    assert ids[:2] == [queued.id, running.id]
    assert page.next is None and page.previous is None
    assert all(
        p.status in ("starting", "processing", "succeeded", "failed", "canceled") for p in page
    )


def test_webhook_is_signed_as_replicate_validates(gateway: Gateway) -> None:
    admin = client_of(gateway, ADMIN)
    secret = admin.webhooks.default.secret()
    assert secret.key == SECRET
    with pytest.raises(ReplicateError) as refused:
        client_of(gateway).webhooks.default.secret()
    assert refused.value.status == 403
    client = client_of(gateway)
    with WebhookReceiver() as receiver:
        prediction = client.predictions.create(
            version="noconfig",
            input={"hooked": True},
            webhook=receiver.url,
            webhook_events_filter=["completed"],
        )
        receiver.wait_for(1)
        delivery = receiver.received[0]
        assert (
            client.webhooks.validate(
                headers=delivery["headers"], body=delivery["body"].decode(), secret=secret
            )
            is None
        )  # raises when the signature is wrong
        wrong = WebhookSigningSecret(key="whsec_" + "V1JPTkc=" * 4)
        with pytest.raises(replicate.webhook.InvalidSignatureError):
            client.webhooks.validate(
                headers=delivery["headers"], body=delivery["body"].decode(), secret=wrong
            )
    # the body is a prediction object, as Replicate POSTs it: replicate's own model reads it
    hooked = Prediction(**delivery["json"])
    assert hooked.id == prediction.id and hooked.status == "succeeded"
    assert hooked.output == {"hooked": True} and hooked.error is None
    assert hooked.urls["get"].endswith(f"/compat/replicate/v1/predictions/{prediction.id}")
    assert hooked.model == "asyncnb/noconfig" and hooked.metrics["predict_time"] >= 0


def test_an_api_key_works_and_a_wrong_key_is_refused(gateway: Gateway) -> None:
    with Client(gateway.url, token=ADMIN) as admin:
        key = admin.create_key("replicate-user", apis=["noconfig"], scopes=["invoke"])["key"]
    client = client_of(gateway, key)
    assert client.run("acme/noconfig", input={"k": 1}) == {"k": 1}
    listed = [p.id for p in client.predictions.list()]
    assert listed and all(pid.startswith("noconfig-") for pid in listed)
    with pytest.raises(ReplicateError) as other_api:
        client.run("acme/sleepy", input={"sleep": 0})
    assert other_api.value.status == 403
    for wrong in ("ank_" + "0" * 16 + "_" + "x" * 43, "not-a-token"):
        with pytest.raises(ReplicateError) as refused:
            client_of(gateway, wrong).run("acme/noconfig", input={})
        assert refused.value.status == (401 if wrong.startswith("ank_") else 403)


def test_the_gateway_stays_up(gateway: Gateway) -> None:
    deadline = time.monotonic() + 10
    with gateway.client(USER) as http:
        while http.get("/healthz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert http.get("/healthz").json()["status"] == "ok"
