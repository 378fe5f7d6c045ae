"""Fuzzing the gateway's OpenAPI schema with schemathesis, against a real `asyncnb serve`.

Every operation of `/openapi.json` gets generated requests; none may get a 5xx, and every
answer whose status code the schema documents must match the documented response schema.
Path parameters are steered towards a deployed API and a real workload id half of the time,
so that the workload routes are exercised past their 404s.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from asyncnb.client import Client, pickle_predictor
from asyncnb.contract.settings import GatewaySettings
from asyncnb.gateway import create_app

from ..support import predictors
from ..support.processes import Gateway

API = "fuzz"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A gateway with one deployed API and one finished workload of it."""
    gateway = Gateway("--storage", str(tmp_path_factory.mktemp("storage")), "--workers", "1")
    gateway.start()
    try:
        with Client(gateway.url) as client:
            client.deploy(predictors.Echo, API)
        gateway.wait_ready(API)
        with gateway.client() as http:
            done = http.post(f"/{API}", json={"seed": 1}, headers={"Prefer": "wait=20"}).json()
        assert done["status"] == "completed"
        yield gateway, done["id"]
    finally:
        gateway.stop()


def _half(value: Any) -> bool:
    """A deterministic coin, so that a failing example replays the same way."""
    return hashlib.sha256(repr(value).encode()).digest()[0] % 2 == 0


def _steer(case: Any, workload_id: str) -> None:
    """Point half of the generated path parameters at the deployed API and its workload.

    Deploys and undeploys keep their generated names: the fuzzed API must stay deployed."""
    parameters = case.path_parameters or {}
    if "api" in parameters and not case.path.startswith("/apis/") and _half(parameters["api"]):
        parameters["api"] = API
    if "workload_id" in parameters and _half(parameters["workload_id"]):
        parameters["workload_id"] = workload_id


# The schema the gateway serves at /openapi.json is `app.openapi()`; building it here lets
# pytest collect one test per operation before any server runs.
SCHEMA = create_app(GatewaySettings(storage="memory://fuzz-schema")).openapi()
schema = schemathesis.openapi.from_dict(SCHEMA)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_openapi_schema_fuzz(case: Any, fuzzed: tuple[Gateway, str]) -> None:
    gateway, workload_id = fuzzed
    _steer(case, workload_id)
    case.call_and_validate(
        base_url=gateway.url,
        checks=[not_a_server_error, response_schema_conformance],
        timeout=30,
    )


def test_the_served_schema_is_the_one_fuzzed(fuzzed: tuple[Gateway, str]) -> None:
    gateway, _ = fuzzed
    assert httpx.get(f"{gateway.url}/openapi.json", timeout=30).json() == SCHEMA


def test_the_fuzzed_api_survived(fuzzed: tuple[Gateway, str]) -> None:
    gateway, workload_id = fuzzed
    with gateway.client() as http:
        assert http.get(f"/{API}").json()["state"] == "ready"
        assert http.get(f"/{API}/{workload_id}").json()["result"]["payload"] == {"seed": 1}
        again = http.post(f"/{API}", json={"after": "fuzz"}, headers={"Prefer": "wait=20"})
        assert again.json()["status"] == "completed"
        assert http.get("/healthz").json()["status"] == "ok"


# what the schema promises, checked without luck ---------------------------------------------
def _answer(gateway: Gateway, method: str, url: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        return http.request(method, url, **kwargs)


@pytest.mark.parametrize(
    ("method", "path", "url", "request_kwargs", "status"),
    [
        # the gateway's own 422s carry a string detail, FastAPI's a list
        pytest.param(
            "post", "/{api}", f"/{API}", {"headers": {"X-Priority": "high"}}, 422, id="priority"
        ),
        pytest.param(
            "post",
            "/{api}",
            f"/{API}",
            {"headers": {"X-Webhook-URL": "ftp://example.com/hook"}},
            422,
            id="webhook-url",
        ),
        pytest.param(
            "post",
            "/{api}",
            f"/{API}",
            {"headers": {"Idempotency-Key": "k" * 256}},
            422,
            id="idempotency-key",
        ),
        pytest.param(
            "put",
            "/apis/{api}",
            "/apis/okname",
            {"json": {"predictor": "!!"}},
            422,
            id="predictor-not-base64",
        ),
        pytest.param(
            "put",
            "/apis/{api}",
            "/apis/okname",
            {"json": {"predictor": ""}},
            422,
            id="empty-predictor",
        ),
        pytest.param(
            "put",
            "/apis/{api}",
            "/apis/okname",
            {"json": {"predictor": "eA==", "options": {"gpu": -1}}},
            422,
            id="bad-option",
        ),
        pytest.param(
            "get",
            "/{api}/{workload_id}/notebook",
            f"/{API}/{{workload_id}}/notebook?format=pdf",
            {},
            422,
            id="notebook-format",
        ),
        pytest.param(
            "get", "/{api}/workloads", f"/{API}/workloads?status=lost", {}, 422, id="bad-status"
        ),
        # the other errors
        pytest.param(
            "put", "/apis/{api}", "/apis/apis", {"json": {"predictor": "eA=="}}, 400, id="reserved"
        ),
        pytest.param(
            "post",
            "/{api}",
            f"/{API}",
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            400,
            id="bad-json",
        ),
        pytest.param("get", "/{api}/{workload_id}", f"/{API}/nothex", {}, 400, id="bad-id"),
        pytest.param("get", "/{api}", "/nowhere", {}, 404, id="no-api"),
        pytest.param(
            "get", "/{api}/{workload_id}", f"/{API}/{'0' * 32}", {}, 404, id="no-workload"
        ),
        pytest.param(
            "delete", "/{api}/{workload_id}", f"/{API}/{{workload_id}}", {}, 409, id="cancel-done"
        ),
        # the answers that succeed
        pytest.param("get", "/healthz", "/healthz", {}, 200, id="healthz"),
        pytest.param("get", "/metrics", "/metrics", {}, 200, id="metrics"),
        pytest.param("get", "/apis", "/apis", {}, 200, id="apis"),
        pytest.param("get", "/{api}", f"/{API}", {}, 200, id="api"),
        pytest.param("get", "/{api}/workloads", f"/{API}/workloads", {}, 200, id="workloads"),
        pytest.param(
            "get", "/{api}/{workload_id}", f"/{API}/{{workload_id}}", {}, 200, id="poll-fast"
        ),
        pytest.param(
            "get",
            "/{api}/{workload_id}",
            f"/{API}/{{workload_id}}",
            {"headers": {"Prefer": "wait=1"}},
            200,
            id="poll-route",
        ),
        pytest.param(
            "get",
            "/{api}/{workload_id}/result",
            f"/{API}/{{workload_id}}/result",
            {},
            200,
            id="result",
        ),
        pytest.param("post", "/{api}", f"/{API}", {"json": [1]}, 202, id="submit"),
        pytest.param(
            "post",
            "/{api}",
            f"/{API}",
            {"json": [2], "headers": {"Prefer": "wait=20"}},
            200,
            id="submit-and-wait",
        ),
    ],
)
def test_answers_match_the_schema(
    fuzzed: tuple[Gateway, str],
    method: str,
    path: str,
    url: str,
    request_kwargs: dict[str, Any],
    status: int,
) -> None:
    gateway, workload_id = fuzzed
    answer = _answer(gateway, method, url.format(workload_id=workload_id), **request_kwargs)
    assert answer.status_code == status, answer.text
    assert str(status) in SCHEMA["paths"][path][method]["responses"]
    schema[path][method.upper()].validate_response(answer)


def test_deploy_replay_and_undeploy_answers_match_the_schema(fuzzed: tuple[Gateway, str]) -> None:
    gateway, _ = fuzzed
    name = f"schema-{secrets.token_hex(4)}"
    body = {"predictor": base64.b64encode(pickle_predictor(predictors.NoConfig)).decode()}
    deploy = schema["/apis/{api}"]["PUT"]
    first = _answer(gateway, "put", f"/apis/{name}", json=body)
    assert first.status_code == 201, first.text
    deploy.validate_response(first)
    again = _answer(gateway, "put", f"/apis/{name}", json=body)
    assert again.status_code == 200, again.text
    deploy.validate_response(again)
    submit = schema["/{api}"]["POST"]
    key = {"Idempotency-Key": secrets.token_hex(8)}
    for _ in range(2):  # the replay answers the full record, with 202 or 200
        replayed = _answer(gateway, "post", f"/{name}", json=[3], headers=key)
        assert replayed.status_code in (200, 202), replayed.text
        submit.validate_response(replayed)
    assert replayed.headers["Idempotent-Replayed"] == "true"
    gone = _answer(gateway, "delete", f"/apis/{name}")
    assert gone.status_code == 200, gone.text
    schema["/apis/{api}"]["DELETE"].validate_response(gone)


def test_error_codes_and_media_types_are_documented() -> None:
    responses = SCHEMA["paths"]["/{api}/{workload_id}"]["get"]["responses"]
    assert {"400", "404"} <= set(responses)
    submit = SCHEMA["paths"]["/{api}"]["post"]["responses"]
    assert {"400", "404", "408", "413", "503"} <= set(submit)
    metrics = SCHEMA["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in next(iter(metrics))
    # every documented 422 takes a string detail as well as FastAPI's list
    for operations in SCHEMA["paths"].values():
        for operation in operations.values():
            for code, response in operation["responses"].items():
                if code == "422":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ValidationFailed")
    assert "HTTPValidationError" not in SCHEMA["components"]["schemas"]
