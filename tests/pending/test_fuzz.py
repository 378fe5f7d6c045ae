"""Fuzzing the gateway's OpenAPI schema with schemathesis, against a real `asyncnb serve`.

Every operation of `/openapi.json` gets generated requests; none may get a 5xx, and every
answer whose status code the schema documents must match the documented response schema.
Path parameters are steered towards a deployed API and a real workload id half of the time,
so that the workload routes are exercised past their 404s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from asyncnb.client import Client
from asyncnb.gateway import create_app
from asyncnb.settings import GatewaySettings

from . import predictors
from .support import Gateway

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


@schemathesis.check
def conforms_to_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """`response_schema_conformance`, except for the one known mismatch, which
    `test_string_detail_422s_match_the_schema` pins down (xfail) without depending on luck."""
    if response.status_code == 422 and isinstance(response.json().get("detail"), str):
        return None
    return response_schema_conformance(ctx, response, case)  # type: ignore[no-any-return]


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
        checks=[not_a_server_error, conforms_to_schema],
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
@pytest.mark.xfail(
    strict=True,
    reason="BUG: the OpenAPI schema documents every 422 as HTTPValidationError (detail: a "
    "list), but the gateway's own 422s carry a string detail (bad X-Priority, X-Webhook-URL, "
    "Idempotency-Key, notebook format; 'predictor must be base64 ...', 'predictor is empty'); "
    "found by the fuzz test",
)
@pytest.mark.parametrize(
    ("method", "path", "url", "request_kwargs"),
    [
        pytest.param(
            "post", "/{api}", f"/{API}", {"headers": {"X-Priority": "high"}}, id="priority"
        ),
        pytest.param(
            "put",
            "/apis/{api}",
            "/apis/okname",
            {"json": {"predictor": "!!"}},
            id="predictor-not-base64",
        ),
        pytest.param(
            "put", "/apis/{api}", "/apis/okname", {"json": {"predictor": ""}}, id="empty-predictor"
        ),
        pytest.param(
            "get",
            "/{api}/{workload_id}/notebook",
            f"/{API}/{{workload_id}}/notebook?format=pdf",
            {},
            id="notebook-format",
        ),
    ],
)
def test_string_detail_422s_match_the_schema(
    fuzzed: tuple[Gateway, str], method: str, path: str, url: str, request_kwargs: dict[str, Any]
) -> None:
    gateway, workload_id = fuzzed
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        answer = http.request(method, url.format(workload_id=workload_id), **request_kwargs)
    assert answer.status_code == 422
    schema[path][method.upper()].validate_response(answer)


@pytest.mark.xfail(
    strict=True,
    reason="BUG (schema): the OpenAPI schema documents only 2xx and 422, not the 400, 401, "
    "403, 404, 409, 413 and 503 the routes answer, and says /metrics is JSON",
)
def test_error_codes_and_media_types_are_documented() -> None:
    responses = SCHEMA["paths"]["/{api}/{workload_id}"]["get"]["responses"]
    assert {"400", "404"} <= set(responses)
    submit = SCHEMA["paths"]["/{api}"]["post"]["responses"]
    assert {"400", "404", "413", "503"} <= set(submit)
    metrics = SCHEMA["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in next(iter(metrics))
