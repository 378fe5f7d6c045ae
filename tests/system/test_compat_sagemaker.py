"""SageMaker Async Inference with the real boto3 `sagemaker-runtime` client, unmodified and
only pointed at a real `asyncnb serve` on a moto_server S3; inputs and outputs are read and
written with boto3's S3 client, as a SageMaker user does."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from asyncnb.client import Client
from asyncnb.engine.key_signing import SIGNING_SECRET_ENV

from ..support import predictors
from ..support.processes import Gateway, MotoServer

BUCKET = "sagemaker"
STORAGE = f"s3://{BUCKET}/gw"
INPUTS = "gw/sagemaker/inputs"
SIGNING_SECRET = "test-signing-secret-" + "s" * 24
ARGS = (
    "--storage",
    STORAGE,
    "--token",
    "usr",
    "--admin-token",
    "adm",
    "--workers",
    "1",
    "--standby",
    "--lease-ttl",
    "3",
)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    server.make_bucket(BUCKET)
    server.make_bucket("foreign")
    yield server
    server.stop()


def env_of(moto: MotoServer) -> dict[str, str]:
    return {**moto.env, SIGNING_SECRET_ENV: SIGNING_SECRET}


def runtime(gateway: Gateway, access_key_id: str, secret: str) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=f"{gateway.url}/compat/sagemaker",
        region_name="us-east-1",
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
    )


def upload(moto: MotoServer, value: Any, api: str = "sleepy", bucket: str = BUCKET) -> str:
    key = f"{INPUTS}/{api}/{uuid.uuid4().hex}.json"
    moto.s3_client().put_object(Bucket=bucket, Key=key, Body=json.dumps(value).encode())
    return f"s3://{bucket}/{key}"


def read_when_there(moto: MotoServer, location: str, timeout: float = 120) -> bytes:
    """Poll S3 for the object, as a SageMaker user waits for an async inference."""
    bucket, _, key = location.removeprefix("s3://").partition("/")
    client = moto.s3_client()
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.head_object(Bucket=bucket, Key=key)
            body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
        except ClientError:
            assert time.monotonic() < deadline, f"nothing at {location}"
            time.sleep(0.2)


def absent(moto: MotoServer, location: str) -> bool:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    try:
        moto.s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError:
        return True
    return False


@pytest.fixture(scope="module")
def served(moto: MotoServer) -> Iterator[tuple[Gateway, str]]:
    """A gateway with `sleepy` and `fails` deployed, and a key of `sleepy` (its text)."""
    gateway = Gateway(*ARGS, env=env_of(moto)).start()
    try:
        with Client(gateway.url, token="adm") as client:
            client.deploy(predictors.Sleepy, "sleepy")
            client.deploy(predictors.Failing, "fails")
        gateway.wait_ready("sleepy", token="usr")
        gateway.wait_ready("fails", token="usr")
        with gateway.client("adm") as http:
            made = http.post("/keys", json={"name": "team", "apis": ["sleepy"]})
        assert made.status_code == 201, made.text
        yield gateway, made.json()["key"]
    finally:
        gateway.stop()


def test_invoke_endpoint_async_signed_with_a_key_writes_the_output(
    moto: MotoServer, served: tuple[Gateway, str]
) -> None:
    gateway, key = served
    _, key_id, secret = key.split("_", 2)
    location = upload(moto, {"name": "first"})
    answer = runtime(gateway, key_id, secret).invoke_endpoint_async(
        EndpointName="sleepy",
        InputLocation=location,
        ContentType="application/json",
        InferenceId="inference-1",
        RequestTTLSeconds=600,
        InvocationTimeoutSeconds=60,
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["InferenceId"] == "inference-1"
    output = answer["OutputLocation"]
    assert output.startswith(f"s3://{BUCKET}/gw/sagemaker/outputs/sleepy/")
    assert answer["FailureLocation"].startswith(f"s3://{BUCKET}/gw/sagemaker/failures/sleepy/")
    assert json.loads(read_when_there(moto, output))["name"] == "first"
    assert absent(moto, answer["FailureLocation"])


def test_a_failing_predictor_writes_the_failure_location(
    moto: MotoServer, served: tuple[Gateway, str]
) -> None:
    gateway, _ = served
    answer = runtime(gateway, "asyncnb", "usr").invoke_endpoint_async(
        EndpointName="fails",
        InputLocation=upload(moto, {"n": 1}, "fails"),
        ContentType="application/json",
    )
    error = json.loads(read_when_there(moto, answer["FailureLocation"]))
    assert error["status"] == "failed" and error["error"]["type"] == "ValueError"
    assert absent(moto, answer["OutputLocation"])


def test_wrong_secrets_foreign_buckets_and_other_apis_are_refused(
    moto: MotoServer, served: tuple[Gateway, str]
) -> None:
    gateway, key = served
    _, key_id, secret = key.split("_", 2)
    location = upload(moto, {"name": "x"})
    refusals = [
        (
            runtime(gateway, key_id, "not-the-secret"),
            "sleepy",
            location,
            "InvalidSignatureException",
        ),
        (
            runtime(gateway, "asyncnb", "not-the-token"),
            "sleepy",
            location,
            "InvalidSignatureException",
        ),
        (runtime(gateway, key_id, secret), "fails", location, "AccessDeniedException"),
        (
            runtime(gateway, key_id, secret),
            "sleepy",
            upload(moto, {}, bucket="foreign"),
            "AccessDeniedException",
        ),
        (  # another API's input, named by a key of this one
            runtime(gateway, key_id, secret),
            "sleepy",
            upload(moto, {}, "fails"),
            "AccessDeniedException",
        ),
        (
            runtime(gateway, key_id, secret),
            "sleepy",
            f"s3://{BUCKET}/gw/keys/{key_id}.json",
            "AccessDeniedException",
        ),
        (runtime(gateway, key_id, secret), "sleepy", "s3://", "ValidationError"),
        (runtime(gateway, "asyncnb", "usr"), "nope", location, "ValidationError"),
    ]
    for client, api, where, code in refusals:
        with pytest.raises(ClientError) as refused:
            client.invoke_endpoint_async(EndpointName=api, InputLocation=where)
        error = refused.value.response["Error"]
        assert error["Code"] == code, (api, where, refused.value.response)
        assert error["Message"]
    unsigned = httpx.post(
        f"{gateway.url}/compat/sagemaker/endpoints/sleepy/async-invocations",
        headers={"X-Amzn-SageMaker-InputLocation": location},
    )
    assert unsigned.status_code == 403 and "missing SigV4" in unsigned.json()["detail"]


def test_the_output_is_written_after_a_kill9_with_the_work_pending(
    moto: MotoServer, served: tuple[Gateway, str]
) -> None:
    gateway, key = served
    _, key_id, secret = key.split("_", 2)
    answer = runtime(gateway, key_id, secret).invoke_endpoint_async(
        EndpointName="sleepy",
        InputLocation=upload(moto, {"name": "pending", "sleep": 2}),
        ContentType="application/json",
    )
    workload = httpx.Client(base_url=gateway.url, headers={"Authorization": "Bearer usr"})
    path = f"/sleepy/{answer['OutputLocation'].rsplit('/', 1)[1].removesuffix('.out')}"
    with workload:
        deadline = time.monotonic() + 60
        while (record := workload.get(path).json())["status"] != "in_progress":
            assert time.monotonic() < deadline and record["status"] == "in_queue", record
            time.sleep(0.05)
    gateway.kill9()
    assert absent(moto, answer["OutputLocation"])
    gateway.start()  # the same storage; it takes the lease over once it expires
    assert json.loads(read_when_there(moto, answer["OutputLocation"]))["name"] == "pending"
