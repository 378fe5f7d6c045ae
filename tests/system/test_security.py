"""Security: token checks, secrets kept out of logs and answers, the webhook destination policy,
who may ship pickled code, where the gateway listens, and isolation between APIs."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest

from asyncnb.client import Client
from asyncnb.contract.settings import GatewaySettings
from asyncnb.contract.webhook_policy import WebhookPolicy
from asyncnb.engine.keys import KeyRing
from asyncnb.engine.workload import WorkloadState
from asyncnb.gateway import create_asgi_app
from asyncnb.storage import Storage

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver
from .test_faults_load import Gated, submit_many

USER, ADMIN = "user-5ecret-token-31f", "admin-5ecret-token-77a"
ZERO = "0" * 32


# tokens are decided by a constant-time comparison, and by nothing else ------------------------
def _asgi_app(tmp_path: Path) -> Any:
    """The gateway's app without its lifespan (no Dask), over a stand-in engine."""
    app = create_asgi_app(GatewaySettings(storage=str(tmp_path), token=USER, admin_token=ADMIN))
    workload = WorkloadState(ZERO, "echo", created_at=0.0, content_type="application/json")
    app.state.engine = SimpleNamespace(
        apis={}, peek=lambda api, workload_id: workload, keys=KeyRing(Storage(str(tmp_path)))
    )
    return app


AUTH_PROBES: list[tuple[str, str, str, dict[str, str], Any, int]] = [
    # (id, method, path, headers, json body, status once authorised)
    ("user-route", "GET", "/apis", {}, None, 200),
    ("status-fast-path", "GET", f"/echo/{ZERO}", {}, None, 200),
    ("admin-route", "PUT", "/apis/echo", {}, {}, 422),  # past auth, the body is validated
    ("docs-query-token", "GET", "/docs?token={token}", {}, None, 200),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "authorised"),
    [probe[1:] for probe in AUTH_PROBES],
    ids=[probe[0] for probe in AUTH_PROBES],
)
def test_tokens_are_compared_only_with_compare_digest(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    authorised: int,
) -> None:
    """If `secrets.compare_digest` says yes, a wrong token passes; if it says no, the right one
    fails: no other comparison (`==`, a prefix check) takes part in the decision."""
    calls: list[tuple[bytes | str, bytes | str]] = []

    def answer(verdict: bool) -> Callable[[Any, Any], bool]:
        def compare(a: Any, b: Any) -> bool:
            calls.append((a, b))
            return verdict

        return compare

    async def send(token: str) -> int:
        transport = httpx.ASGITransport(app=_asgi_app(tmp_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            sent = {**headers}
            if "{token}" not in path:
                sent["Authorization"] = f"Bearer {token}"
            answer = await http.request(method, path.format(token=token), headers=sent, json=body)
            return answer.status_code

    right = ADMIN if path.startswith("/apis/") else USER
    monkeypatch.setattr(secrets, "compare_digest", answer(True))
    assert asyncio.run(send("wrong-token")) == authorised
    assert any(b"wrong-token" in _bytes(a) for a, _ in calls)
    monkeypatch.setattr(secrets, "compare_digest", answer(False))
    assert asyncio.run(send(right)) in (401, 403)


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


# secrets stay out of logs, answers, storage and the process table ---------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secured")


@pytest.fixture(scope="module")
def secured(folder: Path) -> Iterator[Gateway]:
    """Tokens from the environment (not argv), debug logging, 127.0.0.1 and `.blocked.test`
    denied as webhook destinations (receivers of the tests that may be reached use
    127.0.0.2)."""
    gateway = Gateway(
        "--storage",
        str(folder / "storage"),
        "--workers",
        "1",
        "--log-level",
        "debug",
        "--webhook-deny",
        "127.0.0.1/32,.blocked.test",
        "--webhook-attempts",
        "2",
        "--webhook-backoff",
        "0.1",
        env={"ASYNCNB_TOKEN": USER, "ASYNCNB_ADMIN_TOKEN": ADMIN},
        log=folder / "gateway.log",
    ).start()
    try:
        with Client(gateway.url, token=ADMIN) as admin:
            admin.deploy(predictors.Echo, "echo")
            admin.deploy(predictors.Failing, "failing")
        gateway.wait_ready("echo", token=USER)
        gateway.wait_ready("failing", token=USER)
        yield gateway
    finally:
        gateway.stop()


def test_tokens_never_appear_in_logs_answers_storage_or_argv(
    secured: Gateway, folder: Path
) -> None:
    seen: list[str] = []
    with secured.client(USER) as user, secured.client(ADMIN) as admin:
        answers = [
            user.get("/apis"),
            user.get("/echo"),
            user.get("/metrics"),
            user.get("/openapi.json"),
            user.post("/echo", json={"x": 1}, headers={"Prefer": "wait=20"}),
            user.post("/failing", json={"x": 1}, headers={"Prefer": "wait=20"}),
            user.get("/echo/workloads"),
            admin.get("/apis"),
            admin.put("/apis/echo", json={"predictor": "!!"}),
            user.put("/apis/echo", json={"predictor": "eA=="}),
            user.post("/echo", json={}, headers={"Authorization": f"Basic {USER}"}),
            user.post("/echo", json={}, headers={"Authorization": f"Bearer {USER}x"}),
            user.get(f"/echo/{ZERO}", headers={"Authorization": f"Bearer {ADMIN[:-1]}"}),
        ]
        for answer in answers:
            seen.append(answer.text + json.dumps(dict(answer.headers)))
        failed = json.loads(answers[5].text)
        assert failed["status"] == "failed"  # a traceback was produced and logged
    time.sleep(0.5)
    seen.append((folder / "gateway.log").read_text())
    for path in (folder / "storage").rglob("*"):
        if path.is_file():
            seen.append(path.read_bytes().decode("utf-8", errors="replace"))
    assert secured.proc is not None
    tree = [psutil.Process(secured.proc.pid)]
    tree += tree[0].children(recursive=True)
    seen.extend(" ".join(p.cmdline()) for p in tree)
    for text in seen:
        assert USER not in text and ADMIN not in text
    assert len(tree) >= 2  # the gateway and its worker were both looked at


def test_webhook_secret_is_shown_once_then_masked(secured: Gateway) -> None:
    with Client(secured.url, token=ADMIN) as admin:
        api = admin.deploy(predictors.Echo, "signed")
    assert api.webhook_secret and api.webhook_secret.startswith("whsec_")
    with secured.client(USER) as user:
        for path in ("/signed", "/apis", "/metrics"):
            assert api.webhook_secret not in user.get(path).text
        assert user.get("/signed").json()["options"]["webhook_secret"] == "***"


# deploy (pickled code) only with the admin token --------------------------------------------
class _RecordsWhereItIsUnpickled:
    """Unpickling this runs code: it appends the unpickling process's pid to a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        code = f"import os; open({str(self.marker)!r}, 'a').write(f'{{os.getpid()}}\\n')"
        return (exec, (code,))


def test_pickled_code_is_accepted_only_from_the_admin_and_runs_only_on_workers(
    secured: Gateway, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    blob = base64.b64encode(pickle.dumps(_RecordsWhereItIsUnpickled(marker))).decode()
    body = {"predictor": blob}
    with httpx.Client(base_url=secured.url, timeout=30) as anonymous:
        refused = [
            anonymous.put("/apis/evil", json=body),
            anonymous.put("/apis/evil", json=body, headers={"Authorization": f"Bearer {USER}"}),
            anonymous.put("/apis/evil", json=body, headers={"Authorization": "Bearer nope"}),
        ]
        assert [r.status_code for r in refused] == [401, 403, 403]
        time.sleep(1.0)
        assert not marker.exists(), "refused code must never be unpickled anywhere"
        assert (
            anonymous.get("/evil", headers={"Authorization": f"Bearer {USER}"}).status_code == 404
        )

        accepted = anonymous.put(
            "/apis/evil", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert accepted.status_code == 201
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline, "the admin's deploy never reached a worker"
            time.sleep(0.1)
    assert secured.proc is not None
    pids = {int(line) for line in marker.read_text().split()}
    assert secured.proc.pid not in pids  # the gateway stores the blob, it never unpickles it
    workers = {p.pid for p in psutil.Process(secured.proc.pid).children(recursive=True)}
    assert pids <= workers


# the gateway listens on loopback unless told otherwise ------------------------------------
def test_gateway_binds_loopback_by_default(secured: Gateway) -> None:
    assert GatewaySettings().host == "127.0.0.1"
    assert secured.url.startswith("http://127.0.0.1:")
    assert secured.proc is not None
    tree = [psutil.Process(secured.proc.pid)]
    tree += tree[0].children(recursive=True)
    listening = [
        c.laddr
        for p in tree
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening  # the gateway, the Dask scheduler and the worker all listen somewhere
    assert {address.ip for address in listening} <= {"127.0.0.1", "::1"}, listening


# webhook destinations: allow/deny policy -------------------------------------------------------
def _case(
    id: str, url: str, expected: str | None, allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()
) -> Any:
    return pytest.param(allow, deny, url, expected, id=id)


def _link_local(host: str) -> str:
    return f"webhook address {host} is link-local, multicast or unspecified and is denied"


def _policy_denies(what: str) -> str:
    return f"webhook {what} is denied by the gateway's policy"


def _not_allowed(what: str) -> str:
    return f"webhook {what} is not in the gateway's allow list"


METADATA_NAME = "webhook host 'metadata.google.internal' is denied (cloud metadata)"

POLICY_CASES = [
    _case("default-public-name", "https://hooks.example.org/x", None),
    _case("default-loopback", "http://127.0.0.1:8080/hook", None),
    _case("default-private", "http://10.1.2.3/hook", None),
    _case("default-metadata-ip", "http://169.254.169.254/", _link_local("169.254.169.254")),
    _case(
        "default-metadata-userinfo",
        "http://example.org@169.254.169.254/",
        _link_local("169.254.169.254"),
    ),
    _case("default-metadata-decimal", "http://2852039166/", _link_local("2852039166")),
    _case(
        "default-metadata-octal",
        "http://0251.0376.0251.0376/",
        _link_local("0251.0376.0251.0376"),
    ),
    _case(
        "default-metadata-mapped-v6", "http://[::ffff:a9fe:a9fe]/", _link_local("::ffff:a9fe:a9fe")
    ),
    _case("default-metadata-name-upper", "HTTP://METADATA.GOOGLE.INTERNAL/", METADATA_NAME),
    _case(
        "default-metadata-short-name",
        "http://metadata/",
        "webhook host 'metadata' is denied (cloud metadata)",
    ),
    _case(
        "deny-network",
        "http://10.9.8.7/",
        _policy_denies("address 10.9.8.7"),
        deny=("10.0.0.0/8",),
    ),
    _case(
        "deny-suffix",
        "https://a.b.internal.example/",
        _policy_denies("host 'a.b.internal.example'"),
        deny=(".internal.example",),
    ),
    _case(
        "deny-suffix-trailing-dot",
        "https://a.internal.example./",
        _policy_denies("host 'a.internal.example'"),
        deny=(".internal.example",),
    ),
    _case(
        "deny-host-any-case",
        "http://EVIL.example/",
        _policy_denies("host 'evil.example'"),
        deny=("evil.example",),
    ),
    _case(
        "deny-suffix-spares-lookalike",
        "https://notinternal.example/",
        None,
        deny=(".internal.example",),
    ),
    _case("allow-suffix", "https://hooks.example.org/x", None, allow=(".example.org",)),
    _case(
        "allow-suffix-refuses-other",
        "https://evil.com/",
        _not_allowed("host 'evil.com'"),
        allow=(".example.org",),
    ),
    _case(
        "allow-suffix-refuses-lookalike",
        "https://example.org.evil.com/",
        _not_allowed("host 'example.org.evil.com'"),
        allow=(".example.org",),
    ),
    _case(
        "allow-suffix-refuses-ip",
        "http://93.184.216.34/",
        _not_allowed("address 93.184.216.34"),
        allow=(".example.org",),
    ),
    _case("allow-network", "http://192.0.2.10:9000/", None, allow=("192.0.2.0/24",)),
    _case(
        "allow-network-refuses-other",
        "http://198.51.100.1/",
        _not_allowed("address 198.51.100.1"),
        allow=("192.0.2.0/24",),
    ),
    _case(
        "allow-cannot-open-link-local",
        "http://169.254.169.254/",
        _link_local("169.254.169.254"),
        allow=("169.254.0.0/16",),
    ),
    _case(
        "allow-cannot-open-metadata-name",
        "http://metadata.google.internal/",
        METADATA_NAME,
        allow=("metadata.google.internal",),
    ),
    _case(
        "deny-beats-allow",
        "http://10.0.0.5/",
        _policy_denies("address 10.0.0.5"),
        allow=("10.0.0.0/8",),
        deny=("10.0.0.5",),
    ),
]


@pytest.mark.parametrize(("allow", "deny", "url", "expected"), POLICY_CASES)
def test_webhook_policy_table(
    allow: tuple[str, ...], deny: tuple[str, ...], url: str, expected: str | None
) -> None:
    assert WebhookPolicy(allow=allow, deny=deny).problem(url) == expected


@pytest.mark.parametrize("url", ["http://[fd00:ec2::254]/latest/", "http://100.100.100.200/"])
def test_default_policy_denies_every_cloud_metadata_address(url: str) -> None:
    assert WebhookPolicy().problem(url) is not None


@pytest.mark.parametrize(
    "url", ["http://hook\u3002blocked\u3002test/", "http://hook\uff0eblocked\uff0etest/"]
)
def test_denied_names_cannot_be_respelled(url: str) -> None:
    assert httpx.URL(url).host == "hook.blocked.test"  # where delivery would connect
    assert WebhookPolicy(deny=(".blocked.test",)).problem(url) is not None


class _Server:
    """A tiny HTTP server on a loopback address of our choosing, answering every POST with
    `status` (and `location`, for redirects)."""

    def __init__(self, host: str, status: int, location: str | None = None) -> None:
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.calls += 1
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _webhook_outcome(http: httpx.Client, api: str, workload_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = http.get(f"/{api}/{workload_id}").json()
        if (info.get("webhook") or {}).get("status") in ("delivered", "failed"):
            return dict(info["webhook"])
        time.sleep(0.1)
    raise TimeoutError(info)


def test_webhook_policy_is_enforced_at_submit_and_at_delivery(secured: Gateway) -> None:
    """`--webhook-deny 127.0.0.1/32,.blocked.test`: a literal denied address is refused at
    submit; a name is only resolved at delivery, where it is checked again; redirects are
    never followed; an allowed destination (127.0.0.2) gets its event."""
    denied = WebhookReceiver()  # on 127.0.0.1
    allowed = _Server("127.0.0.2", 204)
    redirector = _Server("127.0.0.2", 307, location=denied.url)
    try:
        with denied, secured.client(USER) as http:
            refused = http.post("/echo", json={}, headers={"X-Webhook-URL": denied.url})
            assert (refused.status_code, refused.json()["detail"]) == (
                422,
                "X-Webhook-URL: webhook address 127.0.0.1 is denied by the gateway's policy",
            )
            named = http.post("/echo", json={}, headers={"X-Webhook-URL": "http://x.blocked.test/"})
            assert (named.status_code, named.json()["detail"]) == (
                422,
                "X-Webhook-URL: webhook host 'x.blocked.test' is denied by the gateway's policy",
            )

            port = denied.server.server_address[1]
            by_name = f"http://localhost:{port}/hook"  # passes at submit: names resolve later
            ids = {
                "by-name": http.post("/echo", json={}, headers={"X-Webhook-URL": by_name}),
                "allowed": http.post("/echo", json={}, headers={"X-Webhook-URL": allowed.url}),
                "redirect": http.post("/echo", json={}, headers={"X-Webhook-URL": redirector.url}),
            }
            assert {k: r.status_code for k, r in ids.items()} == dict.fromkeys(ids, 202)
            outcome = {k: _webhook_outcome(http, "echo", r.json()["id"]) for k, r in ids.items()}

            assert outcome["by-name"]["status"] == "failed"
            assert outcome["by-name"]["attempts"] == 0
            assert outcome["by-name"]["last_error"] == (
                "webhook address localhost is denied by the gateway's policy "
                "(resolved to 127.0.0.1)"
            )
            assert outcome["allowed"]["status"] == "delivered" and allowed.calls == 1
            assert outcome["redirect"]["status"] == "failed"
            assert outcome["redirect"]["last_status_class"] == "3xx"  # a class, not the code
            assert redirector.calls == 2  # both attempts, neither followed to the target
            assert denied.calls == 0  # the denied receiver never heard from the gateway
    finally:
        allowed.close()
        redirector.close()


# one API's workloads are unreadable through another API's routes -----------------------------
def test_workloads_are_unreadable_through_another_apis_routes(tmp_path: Path) -> None:
    (tmp_path / "gate").mkdir()
    args = ("--storage", str(tmp_path / "storage"), "--workers", "1")
    gateway = Gateway(*args).start()
    try:
        with Client(gateway.url) as client:
            client.deploy(predictors.Echo, "alpha")
            client.deploy(predictors.Echo, "beta")
            client.deploy(Gated, "held", config={"folder": str(tmp_path / "gate")})
        for api in ("alpha", "beta", "held"):
            gateway.wait_ready(api)
        with gateway.client() as http:
            done = http.post("/alpha", json={"secret": 1}, headers={"Prefer": "wait=20"}).json()
            assert done["status"] == "completed"
            queued = submit_many(gateway.url, "held", [{"n": 1}, {"n": 2}])
            _assert_isolated(http, done["id"], queued)
            one = http.post("/alpha", json={}, headers={"Idempotency-Key": "same"}).json()["id"]
            two = http.post("/beta", json={}, headers={"Idempotency-Key": "same"}).json()["id"]
            assert one != two  # the same key names a different workload in each API
    finally:
        gateway.stop()

    restarted = Gateway(*args).start()  # now the records come from storage, not memory
    try:
        with restarted.client() as http:
            assert http.get(f"/alpha/{done['id']}").json()["result"]["payload"] == {"secret": 1}
            _assert_isolated(http, done["id"], queued)
    finally:
        (tmp_path / "gate" / "open").touch()
        restarted.stop()


def _assert_isolated(http: httpx.Client, finished: str, queued: list[str]) -> None:
    for path in (f"/beta/{finished}", f"/beta/{finished}/result", f"/beta/{finished}/notebook"):
        for headers in ({}, {"Prefer": "wait=0"}):  # the fast path and the routed one
            answer = http.get(path, headers=headers)
            assert (answer.status_code, answer.json()) == (
                404,
                {"detail": f"workload {finished} of API 'beta' not found"},
            ), path
    cancel = http.delete(f"/beta/{finished}")
    assert cancel.status_code == 404
    listing = http.get("/beta/workloads").json()["workloads"]
    assert finished not in {w["id"] for w in listing}
    for workload_id in queued:
        assert http.delete(f"/alpha/{workload_id}").status_code == 404
        assert http.get(f"/held/{workload_id}").json()["status"] in ("in_queue", "in_progress")
    assert http.get(f"/alpha/{finished}").json()["status"] == "completed"
