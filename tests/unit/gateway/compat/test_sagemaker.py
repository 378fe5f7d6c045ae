"""SageMaker Async Inference over a real engine in this process (gateway/compat/sagemaker.py):
requests signed by botocore's own SigV4 signer, objects in memory:// storage."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from asyncnb.engine import Engine
from asyncnb.engine.key_signing import SIGNING_SECRET_ENV
from asyncnb.gateway.compat.sagemaker_locations import input_path
from asyncnb.gateway.errors import HTTPError
from asyncnb.storage import Storage

from ..test_app import ADMIN, Doubler, Failing, deploy, gateway_and_engine, until

BASE = "/compat/sagemaker"


gateway = gateway_and_engine  # with its engine at hand (to place inputs, read outputs)


def put_input(engine: Engine, name: str, value: Any, api: str = "double") -> str:
    storage = engine.storage
    path = storage.path("sagemaker", "inputs", api, name)
    storage.write_bytes(path, json.dumps(value).encode())
    return f"memory:/{path}"


def headers_for(location: str, **extra: str) -> dict[str, str]:
    return {
        "X-Amzn-SageMaker-InputLocation": location,
        "X-Amzn-SageMaker-Content-Type": "application/json",
        **extra,
    }


def signed(api: str, headers: dict[str, str], key_id: str, secret: str) -> dict[str, str]:
    request = AWSRequest(
        "POST", f"http://gw{BASE}/endpoints/{api}/async-invocations", data=b"", headers=headers
    )
    SigV4Auth(Credentials(key_id, secret), "sagemaker", "us-east-1").add_auth(request)
    return {k: str(v) for k, v in request.headers.items()}


async def invoke(client: httpx.AsyncClient, api: str, headers: dict[str, str]) -> httpx.Response:
    return await client.post(f"{BASE}/endpoints/{api}/async-invocations", headers=headers)


async def stored(engine: Engine, url: str) -> bytes:
    path = url.removeprefix("memory:/")
    data: bytes = await until(lambda: asyncio.sleep(0, engine.storage.read_bytes(path)))
    return data


def test_an_open_gateway_takes_unsigned_invocations_and_writes_the_output() -> None:
    asyncio.run(_open_gateway())


async def _open_gateway() -> None:
    async with gateway() as (client, engine):
        await deploy(client, "double", Doubler)
        location = put_input(engine, "a.json", {"n": 21})
        answer = await invoke(
            client, "double", headers_for(location, **{"X-Amzn-SageMaker-Inference-Id": "my-id-1"})
        )
        assert answer.status_code == 202, answer.text
        body = answer.json()
        assert body["InferenceId"] == "my-id-1"
        output = answer.headers["x-amzn-sagemaker-outputlocation"]
        assert body["OutputLocation"] == output and output.endswith(".out")
        assert answer.headers["x-amzn-sagemaker-failurelocation"].endswith(".error")
        assert json.loads(await stored(engine, output)) == {"double": 42}
        again = await invoke(
            client, "double", headers_for(location, **{"X-Amzn-SageMaker-Inference-Id": "my-id-1"})
        )
        assert again.status_code == 202 and again.json()["OutputLocation"] == output
        assert await until(lambda: asyncio.sleep(0, engine.copies.owed == 0))


def test_token_signed_invocations_and_failures_go_to_the_failure_location() -> None:
    asyncio.run(_token_signed())


async def _token_signed() -> None:
    async with gateway(token="usr", admin_token="adm") as (client, engine):
        await deploy(client, "fails", Failing)
        location = put_input(engine, "b.json", {}, api="fails")
        answer = await invoke(
            client, "fails", signed("fails", headers_for(location), "asyncnb", "usr")
        )
        assert answer.status_code == 202, answer.text
        error = json.loads(await stored(engine, answer.headers["x-amzn-sagemaker-failurelocation"]))
        assert error["status"] == "failed" and error["error"]["type"] == "ZeroDivisionError"
        assert not engine.storage.exists(answer.json()["OutputLocation"].removeprefix("memory:/"))
        wrong = await invoke(
            client, "fails", signed("fails", headers_for(location), "asyncnb", "nope")
        )
        assert wrong.status_code == 403 and "signature" in wrong.json()["detail"]
        assert wrong.headers["x-amzn-errortype"] == "InvalidSignatureException"
        unsigned = await invoke(client, "fails", headers_for(location))
        assert unsigned.status_code == 403 and "missing SigV4" in unsigned.json()["detail"]
        bearer = await invoke(
            client, "fails", {**headers_for(location), "Authorization": "Bearer usr"}
        )
        assert bearer.status_code == 202


def test_keys_sign_with_their_id_and_secret_when_the_gateway_derives_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SIGNING_SECRET_ENV, "x" * 40)
    asyncio.run(_keys_sign())


async def _keys_sign() -> None:
    async with gateway(token="usr", admin_token="adm") as (client, engine):
        await deploy(client, "double", Doubler)
        await deploy(client, "other", Doubler)
        made = await client.post("/keys", json={"name": "team", "apis": ["double"]}, headers=ADMIN)
        text = made.json()["key"]
        _, key_id, secret = text.split("_", 2)
        location = put_input(engine, "c.json", {"n": 2})
        for access_key, secret_key in ((key_id, secret), (f"ank_{key_id}", text)):
            answer = await invoke(
                client, "double", signed("double", headers_for(location), access_key, secret_key)
            )
            assert answer.status_code == 202, answer.text
        output = answer.headers["x-amzn-sagemaker-outputlocation"]
        assert json.loads(await stored(engine, output)) == {"double": 4}
        record = await client.get(
            answer.headers["location"], headers={"Authorization": f"Bearer {text}"}
        )
        assert record.json()["submitted_by"] == "team"
        other = await invoke(
            client, "other", signed("other", headers_for(location), key_id, secret)
        )
        assert other.status_code == 403 and "may not call" in other.json()["detail"]
        wrong = await invoke(
            client, "double", signed("double", headers_for(location), key_id, secret[:-1] + "A")
        )
        assert wrong.status_code == 403
        unknown = await invoke(
            client, "double", signed("double", headers_for(location), "f" * 16, secret)
        )
        assert unknown.status_code == 403 and "cannot sign" in unknown.json()["detail"]
        await client.delete(f"/keys/{key_id}", headers=ADMIN)
        revoked = await invoke(
            client, "double", signed("double", headers_for(location), key_id, secret)
        )
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


def test_bad_input_gets_clear_4xx() -> None:
    asyncio.run(_bad_input())


async def _bad_input() -> None:
    async with gateway() as (client, engine):
        await deploy(client, "double", Doubler)
        location = put_input(engine, "d.json", {"n": 1})
        cases = [
            ("double", {}, 400, "InputLocation is required"),
            ("double", headers_for("https://x/y"), 400, "memory://"),
            ("double", headers_for(location.replace("d.json", "missing.json")), 400, "no object"),
            (
                "double",
                headers_for(location.replace("inputs/double/d.json", "../keys/x")),
                400,
                "..",
            ),
            (
                "double",
                headers_for(f"memory:/{engine.storage.root}/apis/double/spec.json"),
                403,
                "outside the inputs area",
            ),
            (
                "double",
                headers_for(location, **{"X-Amzn-SageMaker-RequestTTLSeconds": "5"}),
                400,
                "RequestTTLSeconds",
            ),
            (
                "double",
                headers_for(location, **{"X-Amzn-SageMaker-InvocationTimeoutSeconds": "x"}),
                400,
                "Invocation",
            ),
            (
                "double",
                headers_for(location, **{"X-Amzn-SageMaker-Inference-Id": " x"}),
                400,
                "Inference-Id",
            ),
            (
                "double",
                headers_for(location, **{"X-Amzn-SageMaker-Filename": "a"}),
                400,
                "not supported",
            ),
            ("missing", headers_for(location), 404, "not deployed"),
        ]
        for api, headers, status, detail in cases:
            answer = await invoke(client, api, headers)
            assert answer.status_code == status, (headers, answer.text)
            assert detail in answer.json()["detail"], answer.text
            assert answer.json()["message"] == answer.json()["detail"]
            assert "x-amzn-errortype" in answer.headers
        ok = headers_for(
            location,
            **{
                "X-Amzn-SageMaker-RequestTTLSeconds": "60",
                "X-Amzn-SageMaker-InvocationTimeoutSeconds": "3600",
            },
        )
        assert (await invoke(client, "double", ok)).status_code == 202


def test_s3_locations_stay_in_the_gateways_bucket_and_inputs_area() -> None:
    storage = Storage("s3://bucket/prefix")
    good = "s3://bucket/prefix/sagemaker/inputs/team/a.json"
    assert input_path(storage, good, "team") == "bucket/prefix/sagemaker/inputs/team/a.json"
    with pytest.raises(HTTPError) as other_api:
        input_path(storage, good, "other")
    assert other_api.value.status_code == 403 and "API 'other'" in other_api.value.detail
    for location, status in (
        ("s3://elsewhere/prefix/sagemaker/inputs/team/a.json", 403),
        ("s3://bucket/prefix/queue/double/0123", 403),
        ("s3://bucket/other/sagemaker/inputs/team/a.json", 403),
        ("s3://bucket", 400),
        ("s3:///key", 400),
        ("gs://bucket/prefix/sagemaker/inputs/a.json", 400),
        ("s3://bucket/prefix/sagemaker/inputs/a b.json", 400),
        ("s3://bucket/prefix/sagemaker/inputs/team/", 400),
        ("s3://bucket/prefix/sagemaker/inputs/../../keys/k.json", 400),
    ):
        with pytest.raises(HTTPError) as refused:
            input_path(storage, location, "team")
        assert refused.value.status_code == status, location


def test_the_output_is_written_by_the_next_gateway_when_one_died_before_writing_it() -> None:
    asyncio.run(_restart())


async def _restart() -> None:
    storage = Storage(f"memory://sm-{uuid.uuid4().hex}")
    async with gateway(storage) as (client, engine):
        await deploy(client, "double", Doubler)
        location = put_input(engine, "e.json", {"n": 5})
        answer = await invoke(client, "double", headers_for(location))
        output = answer.headers["x-amzn-sagemaker-outputlocation"].removeprefix("memory:/")
        await stored(engine, "memory:/" + output)
        # as if the gateway died after the final record, before the copy: the marker is back
        workload_id = answer.headers["location"].rsplit("/", 1)[1]
        marker = storage.copy_marker_path("double", workload_id)
        storage.write_bytes(
            marker, json.dumps({"output": output, "failure": output + "x"}).encode()
        )
        storage.delete(output)
        # and one owed for a submit that never landed
        storage.write_json(
            storage.copy_marker_path("double", "f" * 32), {"output": output, "failure": output}
        )
    async with gateway(storage) as (client, engine):
        assert json.loads(await stored(engine, "memory:/" + output)) == {"double": 10}
        assert await until(lambda: asyncio.sleep(0, not storage.exists(marker)))
        assert not storage.exists(storage.copy_marker_path("double", "f" * 32))
