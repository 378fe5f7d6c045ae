"""Bad input gets a clear 4xx, the exact code and message, and everything else keeps working.

One table drives the HTTP cases, a second one the same mistakes made through the Python client.
Cases that an HTTP library would not send as written (a literal `..` in a path, a body that
stalls or never ends) go over a raw socket. All run against one real gateway with tokens.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest

from asyncnb.client import AsyncAPI, Client
from asyncnb.errors import GatewayError, UsageError

from ..support import predictors
from ..support.processes import Gateway
from .test_faults_load import Gated, wait_finished

USER, ADMIN = "user-token-4f1c", "admin-token-9b2e"
ZERO = "0" * 32
NAME_RULE = "use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
UNSET: Any = object()


def _raise_fd_limit(wanted: int = 8192) -> None:
    """1,000 client sockets here and 1,000 in the gateway (a child: it inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def gw(storage: Path) -> Iterator[Gateway]:
    _raise_fd_limit()
    gateway = Gateway(
        "--storage",
        str(storage),
        "--workers",
        "2",
        "--token",
        USER,
        "--admin-token",
        ADMIN,
        "--body-timeout",
        "1",
        # a thousand clients from one address, as behind a proxy: no cap per address
        "--max-connections-per-client",
        "0",
    ).start()
    try:
        with Client(gateway.url, token=ADMIN) as admin:
            admin.deploy(predictors.Echo, "echo")
            admin.deploy(predictors.Raw, "tiny", max_payload_bytes=1000)
            admin.deploy(predictors.Raw, "mid", max_payload_bytes=3 * 1024 * 1024)
        for api in ("echo", "tiny", "mid"):
            gateway.wait_ready(api, token=USER)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with gw.client(USER) as client:
        yield client


def _invalid_name(name: str) -> str:
    return f"invalid API name {name!r}: {NAME_RULE}"


def _error(loc: list[Any], msg: str, kind: str) -> list[dict[str, Any]]:
    return [{"loc": loc, "msg": msg, "type": kind}]


# the HTTP table ---------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    method: str
    path: str
    code: int
    detail: Any
    body: bytes | None = None
    json: Any = UNSET
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = USER
    response_headers: dict[str, str] = field(default_factory=dict)


def deploy(name: str, token: str = ADMIN, **body: Any) -> dict[str, Any]:
    return {"method": "PUT", "path": f"/apis/{name}", "json": body, "token": token}


JSON = {"Content-Type": "application/json"}
OK_DEPLOY = {"predictor": "eA=="}  # base64 of b"x": shaped right, never reaches a worker

CASES = [
    # bodies the predictor could never decode
    Case(
        "malformed-json",
        "POST",
        "/echo",
        400,
        "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)",
        body=b"{not json",
        headers=JSON,
    ),
    Case(
        "truncated-json",
        "POST",
        "/echo",
        400,
        "malformed JSON: Expecting ',' delimiter: line 1 column 5 (char 4)",
        body=b"[1,2",
        headers=JSON,
    ),
    Case(
        "xml-sent-as-json",
        "POST",
        "/echo",
        400,
        "malformed JSON: Expecting value: line 1 column 1 (char 0)",
        body=b"<a/>",
        headers=JSON,
    ),
    Case(
        "malformed-json-suffix-type",
        "POST",
        "/echo",
        400,
        "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)",
        body=b"{",
        headers={"Content-Type": "application/vnd.api+json"},
    ),
    Case(
        "json-not-utf8",
        "POST",
        "/echo",
        400,
        "malformed JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
        body=b"\xff",
        headers=JSON,
    ),
    Case(
        "empty-json-body",
        "POST",
        "/echo",
        400,
        "empty body with Content-Type application/json",
        body=b"",
        headers=JSON,
    ),
    Case(
        "blank-json-body",
        "POST",
        "/echo",
        400,
        "empty body with Content-Type application/json",
        body=b" \n ",
        headers=JSON,
    ),
    Case(
        "text-not-utf8",
        "POST",
        "/echo",
        400,
        "body is not valid utf-8 text: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte",
        body=b"\xff\xfe",
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "text-not-in-its-charset",
        "POST",
        "/echo",
        400,
        "body is not valid ascii text: 'ascii' codec can't decode byte 0xe9 in position 0: "
        "ordinal not in range(128)",
        body=b"\xe9",
        headers={"Content-Type": "text/plain; charset=ascii"},
    ),
    Case(
        "unknown-charset",
        "POST",
        "/echo",
        400,
        "unknown charset 'bogus'",
        body=b"x",
        headers={"Content-Type": "text/plain; charset=bogus"},
    ),
    Case(
        "payload-over-max-payload-bytes",
        "POST",
        "/tiny",
        413,
        "payload is larger than max_payload_bytes=1000",
        body=b"x" * 1001,
    ),
    # names and ids
    Case("unknown-api", "POST", "/nosuchapi", 404, "API 'nosuchapi' is not deployed", json={}),
    Case("unknown-api-status", "GET", "/nosuchapi", 404, "API 'nosuchapi' is not deployed"),
    Case("invalid-api-name", "POST", "/Bad_Name", 404, _invalid_name("Bad_Name"), json={}),
    Case("api-name-64-chars", "GET", "/" + "a" * 64, 404, _invalid_name("a" * 64)),
    Case("api-name-leading-dash", "GET", "/-abc", 404, _invalid_name("-abc")),
    Case("api-encoded-dotdot", "GET", f"/%2e%2e/{ZERO}", 404, _invalid_name("..")),
    Case("reserved-name-as-api", "POST", "/healthz", 404, "API name 'healthz' is reserved"),
    Case("reserved-name-docs", "GET", f"/docs/{ZERO}", 404, "API name 'docs' is reserved"),
    Case(
        "unknown-workload", "GET", f"/echo/{ZERO}", 404, f"workload {ZERO} of API 'echo' not found"
    ),
    Case(
        "result-of-unknown-workload",
        "GET",
        f"/echo/{ZERO}/result",
        404,
        f"workload {ZERO} of API 'echo' not found",
    ),
    Case(
        "cancel-unknown-workload",
        "DELETE",
        f"/echo/{ZERO}",
        404,
        f"workload {ZERO} of API 'echo' not found",
    ),
    Case(
        "id-not-hex",
        "GET",
        "/echo/not-an-id",
        400,
        "invalid workload id 'not-an-id': expected 32 hex digits",
    ),
    Case(
        "id-uppercase-hex",
        "GET",
        "/echo/" + "A" * 32,
        400,
        f"invalid workload id {'A' * 32!r}: expected 32 hex digits",
    ),
    Case(
        "id-encoded-dotdot",
        "GET",
        "/echo/%2e%2e",
        400,
        "invalid workload id '..': expected 32 hex digits",
    ),
    Case(
        "id-300-chars",
        "GET",
        "/echo/" + "a" * 300,
        400,
        f"invalid workload id {'a' * 80!r}: expected 32 hex digits",
    ),
    Case(
        "cancel-id-traversal",
        "DELETE",
        "/echo/%2e%2e",
        400,
        "invalid workload id '..': expected 32 hex digits",
    ),
    # deploy: names, options (422 naming the field), the predictor
    Case(
        **deploy("Bad_Name", **OK_DEPLOY),
        id="deploy-invalid-name",
        code=400,
        detail=_invalid_name("Bad_Name"),
    ),
    Case(
        **deploy("a" * 64, **OK_DEPLOY),
        id="deploy-name-64-chars",
        code=400,
        detail=_invalid_name("a" * 64),
    ),
    Case(
        **deploy("metrics", **OK_DEPLOY),
        id="deploy-reserved-metrics",
        code=400,
        detail="API name 'metrics' is reserved",
    ),
    Case(
        **deploy("docs", **OK_DEPLOY),
        id="deploy-reserved-docs",
        code=400,
        detail="API name 'docs' is reserved",
    ),
    Case(
        **deploy("openapi.json", **OK_DEPLOY),
        id="deploy-reserved-openapi",
        code=400,
        detail="API name 'openapi.json' is reserved",
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"gpu": -1}),
        id="deploy-negative-gpu",
        code=422,
        detail=_error(
            ["body", "options", "gpu"],
            "Input should be greater than or equal to 0",
            "greater_than_equal",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"max_concurrency": 0}),
        id="deploy-zero-concurrency",
        code=422,
        detail=_error(
            ["body", "options", "max_concurrency"],
            "Input should be greater than or equal to 1",
            "greater_than_equal",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"max_concurrency": "many"}),
        id="deploy-option-wrong-type",
        code=422,
        detail=_error(
            ["body", "options", "max_concurrency"],
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"timeout_s": -1}),
        id="deploy-negative-timeout",
        code=422,
        detail=_error(
            ["body", "options", "timeout_s"], "Input should be greater than 0", "greater_than"
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"bogus": 1}),
        id="deploy-unknown-option",
        code=422,
        detail=_error(
            ["body", "options", "bogus"], "Extra inputs are not permitted", "extra_forbidden"
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"min_replicas": 5, "max_replicas": 2}),
        id="deploy-min-over-max-replicas",
        code=422,
        detail=_error(
            ["body", "options"],
            "Value error, min_replicas must not exceed max_replicas",
            "value_error",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"webhook_url": "http://169.254.169.254/x"}),
        id="deploy-link-local-webhook",
        code=422,
        detail=_error(
            ["body", "options", "webhook_url"],
            "Value error, webhook address 169.254.169.254 is link-local, multicast or "
            "unspecified and is denied",
            "value_error",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, options={"webhook_secret": "nope"}),
        id="deploy-bad-webhook-secret",
        code=422,
        detail=_error(
            ["body", "options", "webhook_secret"],
            "Value error, must start with 'whsec_' followed by base64 (Standard Webhooks)",
            "value_error",
        ),
    ),
    Case(
        **deploy("okname", **OK_DEPLOY, config=[1]),
        id="deploy-config-not-an-object",
        code=422,
        detail=_error(["body", "config"], "Input should be a valid dictionary", "dict_type"),
    ),
    Case(
        **deploy("okname", predictor="!!"),
        id="deploy-predictor-not-base64",
        code=422,
        detail="predictor must be base64 of a cloudpickled class",
    ),
    Case(
        **deploy("okname", predictor=""),
        id="deploy-predictor-empty",
        code=422,
        detail="predictor is empty",
    ),
    Case(
        **deploy("okname"),
        id="deploy-predictor-missing",
        code=422,
        detail=_error(["body", "predictor"], "Field required", "missing"),
    ),
    Case(
        "deploy-malformed-json",
        "PUT",
        "/apis/okname",
        422,
        _error(["body", 1], "JSON decode error", "json_invalid"),
        body=b"{bad",
        headers=JSON,
        token=ADMIN,
    ),
    Case(
        "deploy-empty-body",
        "PUT",
        "/apis/okname",
        422,
        _error(["body"], "Field required", "missing"),
        body=b"",
        headers=JSON,
        token=ADMIN,
    ),
    Case(
        "deploy-json-sent-as-text",
        "PUT",
        "/apis/okname",
        422,
        _error(
            ["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ),
        body=json.dumps(OK_DEPLOY).encode(),
        headers={"Content-Type": "text/plain"},
        token=ADMIN,
    ),
    # headers of a submit
    Case(
        "priority-not-an-integer",
        "POST",
        "/echo",
        422,
        "x-priority must be an integer, got 'high'",
        json={},
        headers={"X-Priority": "high"},
    ),
    Case(
        "priority-fraction",
        "POST",
        "/echo",
        422,
        "x-priority must be an integer, got '1.5'",
        json={},
        headers={"X-Priority": "1.5"},
    ),
    Case(
        "priority-above-range",
        "POST",
        "/echo",
        422,
        "x-priority must lie within [-1000000, 1000000], got 1000001",
        json={},
        headers={"X-Priority": "1000001"},
    ),
    Case(
        "priority-below-range",
        "POST",
        "/echo",
        422,
        "x-priority must lie within [-1000000, 1000000], got -1000001",
        json={},
        headers={"X-Priority": "-1000001"},
    ),
    Case(
        "idempotency-key-too-long",
        "POST",
        "/echo",
        422,
        "Idempotency-Key must be 1-255 printable characters",
        json={},
        headers={"Idempotency-Key": "k" * 256},
    ),
    Case(
        "idempotency-key-not-printable",
        "POST",
        "/echo",
        422,
        "Idempotency-Key must be 1-255 printable characters",
        json={},
        headers={"Idempotency-Key": "a\tb"},
    ),
    # webhook destinations: http(s) only, never link-local, multicast or metadata
    *[
        Case(
            f"webhook-{label}",
            "POST",
            "/echo",
            422,
            f"X-Webhook-URL: {detail}",
            json={},
            headers={"X-Webhook-URL": url},
        )
        for label, url, detail in [
            ("ftp", "ftp://example.org/x", "webhook URL must use http or https"),
            ("file", "file:///etc/passwd", "webhook URL must use http or https"),
            ("javascript", "javascript:alert(1)", "webhook URL must use http or https"),
            ("no-host", "http:///hook", "webhook URL has no host"),
            ("bad-port", "http://x:99999/", "webhook URL 'http://x:99999/' is not a URL"),
            (
                "too-long",
                "https://example.org/" + "a" * 2100,
                "webhook URL is longer than 2048 characters",
            ),
            (
                "metadata-ip",
                "http://169.254.169.254/latest/meta-data/",
                "webhook address 169.254.169.254 is link-local, multicast or unspecified "
                "and is denied",
            ),
            (
                "metadata-ip-trailing-dot",
                "http://169.254.169.254./",
                "webhook address 169.254.169.254 is link-local, multicast or unspecified "
                "and is denied",
            ),
            (
                "metadata-ip-hex",
                "http://0xa9fea9fe/",
                "webhook address 0xa9fea9fe is link-local, multicast or unspecified and is denied",
            ),
            (
                "metadata-ip-v4-mapped",
                "http://[::ffff:169.254.169.254]/",
                "webhook address ::ffff:169.254.169.254 is link-local, multicast or "
                "unspecified and is denied",
            ),
            (
                "link-local-v6",
                "http://[fe80::1]/hook",
                "webhook address fe80::1 is link-local, multicast or unspecified and is denied",
            ),
            (
                "unspecified",
                "http://0.0.0.0:8080/",
                "webhook address 0.0.0.0 is link-local, multicast or unspecified and is denied",
            ),
            (
                "multicast",
                "http://224.0.0.1/",
                "webhook address 224.0.0.1 is link-local, multicast or unspecified and is denied",
            ),
            (
                "metadata-name",
                "http://metadata.google.internal/computeMetadata/v1/",
                "webhook host 'metadata.google.internal' is denied (cloud metadata)",
            ),
        ]
    ],
    # tokens
    Case(
        "missing-token",
        "GET",
        "/apis",
        401,
        "missing token: send 'Authorization: Bearer <token>'",
        token=None,
        response_headers={"www-authenticate": "Bearer"},
    ),
    Case(
        "basic-scheme",
        "GET",
        "/apis",
        401,
        "malformed Authorization header: use 'Bearer <token>'",
        token=None,
        headers={"Authorization": f"Basic {USER}"},
        response_headers={"www-authenticate": "Bearer"},
    ),
    Case(
        "token-without-scheme",
        "GET",
        "/apis",
        401,
        "malformed Authorization header: use 'Bearer <token>'",
        token=None,
        headers={"Authorization": USER},
    ),
    Case(
        "bearer-without-token",
        "GET",
        "/apis",
        401,
        "malformed Authorization header: use 'Bearer <token>'",
        token=None,
        headers={"Authorization": "Bearer"},
    ),
    Case("wrong-token", "GET", "/apis", 403, "invalid token", token="nope"),
    Case("wrong-token-submit", "POST", "/echo", 403, "invalid token", json={}, token="nope"),
    Case(
        "wrong-token-status-poll",
        "GET",
        f"/echo/{ZERO}",
        403,
        "invalid token",
        token="nope",
    ),
    Case(
        **deploy("okname", token=USER, **OK_DEPLOY),
        id="user-token-deploys",
        code=403,
        detail="this needs the admin token; the user token may not",
    ),
    Case(
        "user-token-undeploys",
        "DELETE",
        "/apis/echo",
        403,
        "this needs the admin token; the user token may not",
    ),
    # query parameters and methods
    Case(
        "listing-limit-not-int",
        "GET",
        "/echo/workloads?limit=abc",
        422,
        _error(
            ["query", "limit"],
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ),
    ),
    Case(
        "listing-unknown-status",
        "GET",
        "/echo/workloads?status=bogus",
        422,
        _error(
            ["query", "status"],
            "Input should be 'in_queue', 'in_progress', 'completed', 'failed' or 'cancelled'",
            "enum",
        ),
    ),
    Case("method-not-allowed", "PATCH", "/echo", 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_http_input_gets_exact_4xx(gw: Gateway, case: Case) -> None:
    headers = dict(case.headers)
    if case.token:
        headers.setdefault("Authorization", f"Bearer {case.token}")
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        kwargs: dict[str, Any] = {"headers": headers}
        if case.json is not UNSET:
            kwargs["json"] = case.json
        elif case.body is not None:
            kwargs["content"] = case.body
        response = http.request(case.method, case.path, **kwargs)
    assert (response.status_code, response.json()) == (case.code, {"detail": case.detail})
    for name, value in case.response_headers.items():
        assert response.headers[name] == value


def test_the_table_is_large_and_nothing_it_sent_was_accepted(
    gw: Gateway, http: httpx.Client
) -> None:
    assert len(CASES) >= 25
    for api in ("echo", "tiny", "mid"):
        status = http.get(f"/{api}").json()
        assert status["submitted"] == 0 and status["state"] == "ready", status
    assert {a["name"] for a in http.get("/apis").json()["apis"]} >= {"echo", "tiny", "mid"}
    info = http.post("/echo", json={"after": "bad input"}, headers={"Prefer": "wait=20"}).json()
    assert info["status"] == "completed" and info["result"]["payload"] == {"after": "bad input"}


# the same mistakes through the Python client ---------------------------------------------------
@dataclass
class ClientCase:
    id: str
    call: Callable[[Client], Any]
    error: type[Exception]
    message: str
    token: str | None = USER


def _api(client: Client, name: str = "echo") -> AsyncAPI:
    return AsyncAPI(client, name)


CLIENT_CASES = [
    ClientCase(
        "unknown-api",
        lambda c: c.api("nosuchapi"),
        UsageError,
        "API 'nosuchapi' is not deployed",
    ),
    ClientCase(
        "invalid-api-name", lambda c: c.api("Bad_Name"), UsageError, _invalid_name("Bad_Name")
    ),
    ClientCase(
        "malformed-json",
        lambda c: _api(c).submit(b"{not json", content_type="application/json"),
        UsageError,
        "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
        "(char 1)",
    ),
    ClientCase(
        "empty-json-body",
        lambda c: _api(c).submit(b"", content_type="application/json"),
        UsageError,
        "empty body with Content-Type application/json",
    ),
    ClientCase(
        "text-not-utf8",
        lambda c: _api(c).submit(b"\xff\xfe", content_type="text/plain"),
        UsageError,
        "body is not valid utf-8 text: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte",
    ),
    ClientCase(
        "payload-too-large",
        lambda c: _api(c, "tiny").submit(b"x" * 1001),
        UsageError,
        "payload is larger than max_payload_bytes=1000",
    ),
    ClientCase(
        "priority-above-range",
        lambda c: _api(c).submit({}, priority=2_000_000),
        UsageError,
        "x-priority must lie within [-1000000, 1000000], got 2000000",
    ),
    ClientCase(
        "priority-below-range",
        lambda c: _api(c).submit({}, priority=-2_000_000),
        UsageError,
        "x-priority must lie within [-1000000, 1000000], got -2000000",
    ),
    ClientCase(
        "link-local-webhook",
        lambda c: _api(c).submit({}, webhook_url="http://169.254.169.254/"),
        UsageError,
        "X-Webhook-URL: webhook address 169.254.169.254 is link-local, multicast or "
        "unspecified and is denied",
    ),
    ClientCase(
        "non-http-webhook",
        lambda c: _api(c).submit({}, webhook_url="gopher://example.org/"),
        UsageError,
        "X-Webhook-URL: webhook URL must use http or https",
    ),
    ClientCase(
        "idempotency-key-too-long",
        lambda c: _api(c).submit({}, idempotency_key="k" * 256),
        UsageError,
        "Idempotency-Key must be 1-255 printable characters",
    ),
    ClientCase(
        "invalid-workload-id",
        lambda c: _api(c).workload("not-an-id").info(),
        UsageError,
        "invalid workload id 'not-an-id': expected 32 hex digits",
    ),
    ClientCase(
        "unknown-workload",
        lambda c: _api(c).workload(ZERO).result(timeout=5),
        UsageError,
        f"workload {ZERO} of API 'echo' not found",
    ),
    ClientCase(
        "cancel-unknown-workload",
        lambda c: _api(c).workload(ZERO).cancel(),
        GatewayError,
        f"404: workload {ZERO} of API 'echo' not found",
    ),
    ClientCase(
        "deploy-invalid-name",
        lambda c: c.deploy(predictors.Echo, "Bad_Name"),
        UsageError,
        _invalid_name("Bad_Name"),
        token=ADMIN,
    ),
    ClientCase(
        "deploy-reserved-name",
        lambda c: c.deploy(predictors.Echo, "metrics"),
        UsageError,
        "API name 'metrics' is reserved",
        token=ADMIN,
    ),
    ClientCase(
        "deploy-zero-concurrency",
        lambda c: c.deploy(predictors.Echo, "okname", max_concurrency=0),
        UsageError,
        "max_concurrency: Input should be greater than or equal to 1",
        token=ADMIN,
    ),
    ClientCase(
        "deploy-unknown-option",
        lambda c: c.deploy(predictors.Echo, "okname", bogus=1),
        UsageError,
        "bogus: Extra inputs are not permitted",
        token=ADMIN,
    ),
    ClientCase(
        "deploy-link-local-webhook",
        lambda c: c.deploy(predictors.Echo, "okname", webhook_url="http://[fe80::1]/"),
        UsageError,
        "webhook_url: Value error, webhook address fe80::1 is link-local, multicast or "
        "unspecified and is denied",
        token=ADMIN,
    ),
    ClientCase(
        "deploy-with-user-token",
        lambda c: c.deploy(predictors.Echo, "okname"),
        GatewayError,
        "403: this needs the admin token; the user token may not",
    ),
    ClientCase(
        "missing-token",
        lambda c: c.apis(),
        GatewayError,
        "401: missing token: send 'Authorization: Bearer <token>'",
        token="",
    ),
    ClientCase("wrong-token", lambda c: c.apis(), GatewayError, "403: invalid token", token="no"),
]


@pytest.mark.parametrize("case", CLIENT_CASES, ids=[c.id for c in CLIENT_CASES])
def test_bad_input_through_the_python_client(gw: Gateway, case: ClientCase) -> None:
    with Client(gw.url, token=case.token) as client, pytest.raises(case.error) as raised:
        case.call(client)
    assert str(raised.value) == case.message
    if isinstance(raised.value, GatewayError):
        assert f"{raised.value.status_code}: {raised.value.detail}" == case.message


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.api("../apis"), id="api-name-traversal"),
        pytest.param(lambda c: _api(c).workload("../apis").info(), id="workload-id-traversal"),
        pytest.param(lambda c: _api(c).workload("..").info(), id="workload-id-dotdot"),
    ],
)
def test_client_refuses_traversal_in_names_and_ids(
    gw: Gateway, call: Callable[[Client], Any]
) -> None:
    with Client(gw.url, token=USER) as client, pytest.raises(UsageError) as raised:
        call(client)
    assert "invalid" in str(raised.value)


# requests an HTTP library would not send as written ------------------------------------------
def _raw(gw: Gateway, data: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and read one response: (status, headers, body)."""
    address = urlsplit(gw.url)
    with socket.create_connection((address.hostname, address.port), timeout=timeout) as sock:
        sock.sendall(data)
        return _read_response(sock)


def _read_response(sock: socket.socket, data: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _request_head(method: str, path: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", f"Authorization: Bearer {USER}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("path", "code", "detail"),
    [
        ("/echo/..", 400, "invalid workload id '..': expected 32 hex digits"),
        ("/echo/../apis", 404, "Not Found"),
        (f"/../{ZERO}", 404, _invalid_name("..")),
        ("/echo/./" + ZERO, 404, "Not Found"),
    ],
)
def test_literal_dot_segments_never_escape_their_route(
    gw: Gateway, path: str, code: int, detail: str
) -> None:
    status, _, body = _raw(gw, _request_head("GET", path, "Connection: close"))
    assert (status, json.loads(body)) == (code, {"detail": detail})


def test_declared_oversize_body_is_refused_before_it_is_read(gw: Gateway) -> None:
    started = time.monotonic()
    head = _request_head("POST", "/tiny", "Content-Length: 10000000000")
    status, _, body = _raw(gw, head + b"xx")
    assert (status, json.loads(body)) == (
        413,
        {"detail": "payload is larger than max_payload_bytes=1000"},
    )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("api", "limit"), [("tiny", 1000), ("mid", 3 * 1024 * 1024)])
def test_streamed_oversize_body_is_cut_off_and_nothing_is_kept(
    gw: Gateway, http: httpx.Client, storage: Path, api: str, limit: int
) -> None:
    """Without Content-Length the limit is enforced as bytes arrive: the 413 comes while the
    client is still sending, and a partial payload streamed to storage is removed."""
    address = urlsplit(gw.url)
    total, piece = 200 * 1024 * 1024, b"z" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sent, pending, answer = 0, b"", b""
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(_request_head("POST", f"/{api}", "Transfer-Encoding: chunked"))
        sock.setblocking(False)
        deadline = time.monotonic() + 20
        while not answer and time.monotonic() < deadline:
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                pass
            if not pending and sent < total:
                pending, sent = chunk, sent + len(piece)
            try:
                pending = pending[sock.send(pending) :]
            except BlockingIOError:
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        status, _, body = _read_response(sock, answer)
    assert (status, json.loads(body)) == (
        413,
        {"detail": f"payload is larger than max_payload_bytes={limit}"},
    )
    assert sent < total // 4, f"the gateway read {sent} bytes before refusing"
    assert not list((storage / "workloads" / api).glob("*/payload"))
    assert http.get(f"/{api}").json()["submitted"] == 0


# slow clients ---------------------------------------------------------------------------------
def _stalled_body(gw: Gateway, chunked: bool) -> socket.socket:
    address = urlsplit(gw.url)
    sock = socket.create_connection((address.hostname, address.port), timeout=15)
    if chunked:
        sock.sendall(_request_head("POST", "/echo", "Transfer-Encoding: chunked") + b"1\r\n{\r\n")
    else:
        sock.sendall(_request_head("POST", "/echo", JSON_LINE, "Content-Length: 100") + b"{")
    return sock


JSON_LINE = "Content-Type: application/json"
TIMEOUT_DETAIL = {"detail": "no body bytes received for 1 s"}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_slow_body_clients_get_408_without_tying_up_workers(
    gw: Gateway, http: httpx.Client, chunked: bool
) -> None:
    before = http.get("/echo").json()["submitted"]
    stalled = [_stalled_body(gw, chunked) for _ in range(50)]
    try:
        started = time.monotonic()
        # while 50 clients stall mid-body, a normal submit is served at once by the workers
        info = http.post("/echo", json={"n": 1}, headers={"Prefer": "wait=20"}).json()
        assert info["status"] == "completed"
        assert time.monotonic() - started < 5
        for sock in stalled:
            status, _, body = _read_response(sock)
            assert (status, json.loads(body)) == (408, TIMEOUT_DETAIL)
        assert time.monotonic() - started < 10
    finally:
        for sock in stalled:
            sock.close()
    status = http.get("/echo").json()
    assert status["submitted"] == before + 1 and status["in_progress"] == 0


def test_408_closes_the_connection(gw: Gateway) -> None:
    sock = _stalled_body(gw, chunked=False)
    with sock:
        status, headers, _ = _read_response(sock)
        assert status == 408
        assert headers.get("connection") == "close"
        sock.settimeout(3)
        assert sock.recv(1) == b""  # closed by the server


# 1,000 concurrent connections -------------------------------------------------------------------
def test_1000_concurrent_connections_all_accepted_and_completed(
    gw: Gateway, tmp_path: Path
) -> None:
    """1,000 clients POST at once and hold their connection (Prefer: wait) until a gate opens;
    the gateway accepts all of them while all are open, stays responsive, and runs each."""
    with Client(gw.url, token=ADMIN) as admin:
        admin.deploy(Gated, "crowd", config={"folder": str(tmp_path)}, max_concurrency=4)
    gw.wait_ready("crowd", token=USER)
    auth = {"Authorization": f"Bearer {USER}"}

    async def crowd() -> tuple[list[tuple[int, Any]], float]:
        connector = aiohttp.TCPConnector(limit=1100)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(
            gw.url, connector=connector, timeout=timeout, headers=auth
        ) as session:

            async def one(n: int) -> tuple[int, Any]:
                wait = {"Prefer": "wait=60"}
                async with session.post("/crowd", json={"n": n}, headers=wait) as answer:
                    return answer.status, await answer.json()

            tasks = [asyncio.create_task(one(n)) for n in range(1000)]
            deadline = time.monotonic() + 60
            while True:
                async with session.get("/crowd") as answer:
                    submitted = (await answer.json())["submitted"]
                if submitted >= 1000:
                    break
                assert time.monotonic() < deadline, f"only {submitted} of 1,000 accepted"
                await asyncio.sleep(0.1)
            assert not any(t.done() for t in tasks), "every connection is still open here"
            started = time.monotonic()
            async with session.get("/healthz") as answer:
                assert answer.status == 200
            health_s = time.monotonic() - started
            (tmp_path / "open").touch()
            return list(await asyncio.gather(*tasks)), health_s

    answers, health_s = asyncio.run(crowd())
    assert health_s < 2, f"/healthz took {health_s:.1f} s with 1,000 connections open"
    codes = Counter(code for code, _ in answers)
    assert set(codes) <= {200, 202}, codes  # nothing refused: the limit is 4,096
    ids = [body["id"] for _, body in answers]
    finished = wait_finished(gw.url, "crowd", ids, token=USER)
    assert Counter(info["status"] for info in finished.values()) == {"completed": 1000}
    assert sorted(info["result"]["n"] for info in finished.values()) == list(range(1000))
