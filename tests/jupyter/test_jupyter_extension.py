"""The Jupyter server extension's handlers, with pytest-jupyter (under a non-default base URL),
in front of a real `asyncnb serve` process; and its managed gateway process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncnb.client import Client

from ..support.jupyter import SHIPPED_CONFIG, alive, ensure_importable, pytest_jupyter_fixtures
from ..support.processes import Gateway, free_port

pytest.importorskip("pytest_jupyter")
ensure_importable()

import asyncnb_jupyter  # noqa: E402
from asyncnb_jupyter import handlers  # noqa: E402
from asyncnb_jupyter.config import AsyncNB  # noqa: E402
from asyncnb_jupyter.gateway_process import GatewayProcess  # noqa: E402
from asyncnb_jupyter.upstream import Upstream  # noqa: E402
from jupyter_server.auth import Authorizer  # noqa: E402
from jupyter_server.utils import url_path_join  # noqa: E402
from tornado.httpclient import HTTPResponse  # noqa: E402

globals().update(pytest_jupyter_fixtures())

TOKEN = "admin-" + secrets.token_hex(8)
BASE = "/jupyter/"
HEX = "0123456789abcdef" * 2
Fetch = Callable[..., HTTPResponse]


class Echo:
    def predict(self, payload: Any) -> Any:
        return payload


class Reverse:
    def predict(self, payload: Any) -> Any:
        return bytes(payload)[::-1]


class Sleeper:
    def predict(self, payload: Any) -> Any:
        time.sleep(float(payload.get("sleep", 0)))
        return payload


# fixtures ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def upstream_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A real gateway with a token; the extension is pointed at it (c.AsyncNB.gateway_url)."""
    storage = tmp_path_factory.mktemp("jupyter-ext-storage")
    gw = Gateway("--storage", str(storage), "--workers", "1", "--token", TOKEN).start()
    with Client(gw.url, TOKEN) as client:
        for name, cls in (("echo", Echo), ("reverse", Reverse), ("sleeper", Sleeper)):
            client.deploy(cls, name)
    for name in ("echo", "reverse", "sleeper"):
        gw.wait_ready(name, TOKEN)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The extension exports ASYNCNB_* into os.environ; whatever happens, other tests get theirs.
    for name in ("ASYNCNB_GATEWAY", "ASYNCNB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def jp_base_url() -> str:
    return BASE


@pytest.fixture
def asyncnb_config(upstream_gateway: Gateway) -> dict[str, Any]:
    return {"gateway_url": upstream_gateway.url, "gateway_token": TOKEN}


@pytest.fixture
def jp_server_config(asyncnb_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"asyncnb_jupyter": True}},
        "AsyncNB": asyncnb_config,
    }


@pytest.fixture
def run(jp_asyncio_loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    return jp_asyncio_loop.run_until_complete


@pytest.fixture
def fetch(jp_fetch: Any, run: Callable[[Any], Any]) -> Fetch:
    """An authenticated request under <base_url>/asyncnb; never raises on 4xx/5xx."""

    def call(*parts: str, **kwargs: Any) -> HTTPResponse:
        kwargs.setdefault("raise_error", False)
        return run(jp_fetch("asyncnb", *parts, **kwargs))

    return call


@pytest.fixture
def anonymous(http_server_client: Any, run: Callable[[Any], Any]) -> Fetch:
    """A request with no Jupyter credentials at all."""

    def call(path: str, method: str = "GET", body: bytes | None = None) -> HTTPResponse:
        return run(
            http_server_client.fetch(
                path,
                method=method,
                body=body,
                raise_error=False,
                follow_redirects=False,
                allow_nonstandard_methods=True,
            )
        )

    return call


def _extension(serverapp: Any) -> Any:
    return next(iter(serverapp.extension_manager.extension_apps["asyncnb_jupyter"]))


def _json(response: HTTPResponse) -> Any:
    return json.loads(response.body)


def _wait_completed(fetch: Fetch, api: str, workload_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = fetch(api, workload_id, headers={"Prefer": "wait=10"})
        record = _json(response)
        if record["status"] not in ("in_queue", "in_progress"):
            return dict(record)
    raise TimeoutError(workload_id)


# packaging and config ------------------------------------------------------------------------
def test_extension_points_and_shipped_config() -> None:
    points = asyncnb_jupyter._jupyter_server_extension_points()
    assert points[0]["module"] == "asyncnb_jupyter"
    assert points[0]["app"].name == "asyncnb_jupyter"
    shipped = json.loads(SHIPPED_CONFIG.read_text())
    assert shipped == {"ServerApp": {"jpserver_extensions": {"asyncnb_jupyter": True}}}


def test_config_maps_to_serve_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = AsyncNB(
        storage="s3://bucket/prefix",
        storage_options={"anon": False},
        n_workers=3,
        threads_per_worker=2,
        worker_resources={"GPU": 1},
        serve_args=["--max-chunk", "8"],
    )
    args = config.serve_arguments(4321, "http://host:8888/jupyter/asyncnb")
    assert args[:6] == ["--host", "127.0.0.1", "--port", "4321", "--storage", "s3://bucket/prefix"]
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--storage-options"] == '{"anon": false}'
    assert pairs["--workers"] == "3" and pairs["--threads-per-worker"] == "2"
    assert pairs["--worker-resources"] == "GPU=1"
    assert pairs["--public-url"] == "http://host:8888/jupyter/asyncnb"
    assert args[-2:] == ["--max-chunk", "8"]
    assert config.problems() == []

    remote = AsyncNB(scheduler_address="tcp://sched:8786", cluster="mod:make")
    assert "--scheduler" in remote.serve_arguments(1, "") and "--cluster" in remote.serve_arguments(
        1, ""
    )
    assert remote.problems() and "excludes" in remote.problems()[0]
    assert "module:callable" in AsyncNB(cluster="nocolon").problems()[0]

    monkeypatch.setenv("ASYNCNB_STORAGE", str(tmp_path))
    assert AsyncNB().storage_url() == str(tmp_path)
    monkeypatch.delenv("ASYNCNB_STORAGE")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert AsyncNB().storage_url() == str(tmp_path / "data" / "asyncnb" / "storage")


# routes ------------------------------------------------------------------------------------
def test_routes_live_under_the_base_url(jp_serverapp: Any) -> None:
    patterns = _asyncnb_patterns(jp_serverapp)
    assert len(patterns) == len(handlers.default_handlers)
    assert all(p.startswith(f"{BASE}asyncnb") for p in patterns)


def test_kernels_get_the_gateway_in_their_environment(
    jp_serverapp: Any, upstream_gateway: Gateway, run: Callable[[Any], Any]
) -> None:
    assert os.environ["ASYNCNB_GATEWAY"] == upstream_gateway.url
    assert os.environ["ASYNCNB_TOKEN"] == TOKEN
    run(_extension(jp_serverapp).stop_extension())
    assert "ASYNCNB_GATEWAY" not in os.environ and "ASYNCNB_TOKEN" not in os.environ


def test_submit_poll_and_result_through_jupyter(fetch: Fetch, jp_http_port: int) -> None:
    body = json.dumps({"text": "hello"})
    headers = {"Content-Type": "application/json", "Idempotency-Key": "k-" + secrets.token_hex(4)}
    first = fetch("echo", method="POST", body=body, headers=headers)
    assert first.code == 202, first.body
    workload_id = _json(first)["id"]
    assert first.headers["Location"] == f"{BASE}asyncnb/echo/{workload_id}"

    replay = fetch("echo", method="POST", body=body, headers=headers)
    assert _json(replay)["id"] == workload_id
    assert replay.headers["Idempotent-Replayed"] == "true"

    waited = fetch("echo", workload_id, headers={"Prefer": "wait=30"})
    record = _json(waited)
    assert waited.code == 200
    assert record["status"] == "completed" and record["result"] == {"text": "hello"}

    raw = fetch("echo", workload_id, "result")
    assert raw.code == 200 and raw.headers["Content-Type"].startswith("application/json")
    assert json.loads(raw.body) == {"text": "hello"}
    # What a submitter chose must not run as script on Jupyter's origin.
    assert raw.headers["Content-Security-Policy"].endswith("sandbox")
    assert raw.headers["X-Content-Type-Options"] == "nosniff"

    waiting = {"Content-Type": "application/json", "Prefer": "wait=30"}
    at_once = fetch("echo", method="POST", body="[1, 2]", headers=waiting)
    assert at_once.code == 200 and at_once.headers["Preference-Applied"].startswith("wait=")
    assert _json(at_once)["result"] == [1, 2], at_once.body

    listed = fetch("echo", "workloads", params={"limit": "1"})
    assert len(_json(listed)["workloads"]) == 1


def test_api_records_point_at_the_jupyter_url(fetch: Fetch, jp_http_port: int) -> None:
    endpoint = f"http://127.0.0.1:{jp_http_port}{BASE}asyncnb/echo"
    apis = {a["name"]: a for a in _json(fetch("apis"))["apis"]}
    assert apis["echo"]["endpoint"] == endpoint and apis["echo"]["state"] == "ready"
    assert _json(fetch("echo"))["endpoint"] == endpoint
    assert TOKEN not in fetch("apis").body.decode()


def test_large_bodies_stream_both_ways(fetch: Fetch) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    octets = {"Content-Type": "application/octet-stream"}

    async def chunked(write: Callable[[bytes], Any]) -> None:
        for start in range(0, len(payload), 256 * 1024):
            await write(payload[start : start + 256 * 1024])

    # Without Content-Length (chunked upload) and with it.
    for kwargs in ({"body_producer": chunked}, {"body": payload}):
        accepted = fetch("reverse", method="POST", headers=octets, **kwargs)
        assert accepted.code == 202, accepted.body
        workload_id = _json(accepted)["id"]
        assert _wait_completed(fetch, "reverse", workload_id)["status"] == "completed"
        result = fetch("reverse", workload_id, "result", request_timeout=60)
        assert result.code == 200 and result.body == payload[::-1]


def test_an_upload_cut_short_submits_nothing(
    fetch: Fetch, jp_serverapp: Any, jp_http_port: int, run: Callable[[Any], Any]
) -> None:
    def count() -> int:
        return len(_json(fetch("reverse", "workloads", params={"limit": "1000"}))["workloads"])

    before = count()

    async def cut_short() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        head = (
            f"POST {BASE}asyncnb/reverse HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: token {jp_serverapp.identity_provider.token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n"
        )
        writer.write(head.encode() + b"x" * 300_000)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await asyncio.sleep(0.7)

    run(cut_short())
    assert count() == before
    assert fetch("reverse", method="POST", body=b"ab").code == 202


def test_gateway_errors_pass_through_unchanged(fetch: Fetch) -> None:
    missing = fetch("nothing-here", method="POST", body="{}")
    assert missing.code == 404 and "not deployed" in _json(missing)["detail"]
    bad_priority = fetch("echo", method="POST", body="{}", headers={"X-Priority": "high"})
    assert bad_priority.code == 422 and "x-priority" in _json(bad_priority)["detail"]
    bad_hook = fetch("echo", method="POST", body="{}", headers={"X-Webhook-URL": "ftp://x/y"})
    assert bad_hook.code == 422
    unknown = fetch("echo", HEX)
    assert unknown.code == 404 and HEX in _json(unknown)["detail"]
    not_a_route = fetch("echo", "not-an-id", "deeper")
    assert not_a_route.code == 404 and "no asyncnb route" in _json(not_a_route)["detail"]


def test_reserved_names_never_reach_the_gateway(fetch: Fetch, upstream_gateway: Gateway) -> None:
    """`/asyncnb/apis/<id>` would be the gateway's undeploy route, sent with this server's
    admin token; `/asyncnb/metrics` and the others its admin-only or internal routes."""
    with Client(upstream_gateway.url, TOKEN) as admin:
        admin.deploy(Echo, HEX)  # an API named like a workload id
        upstream_gateway.wait_ready(HEX, TOKEN)
        for method in ("DELETE", "GET"):
            refused = fetch("apis", HEX, method=method)
            assert refused.code == 404 and "no asyncnb route" in _json(refused)["detail"]
        assert HEX in [api["name"] for api in admin.apis()]  # still deployed
        for reserved in ("metrics", "docs", "healthz", "redoc", "openapi.json"):
            response = fetch(reserved)
            assert response.code == 404 and "no asyncnb route" in _json(response)["detail"]
        assert fetch(HEX).code == 200  # the API itself is served, under its own name
        admin.undeploy(HEX)


def test_cancel_through_jupyter(fetch: Fetch) -> None:
    blocker = fetch("sleeper", method="POST", body=json.dumps({"sleep": 3}))
    queued = fetch("sleeper", method="POST", body=json.dumps({"sleep": 0}))
    workload_id = _json(queued)["id"]
    cancelled = fetch("sleeper", workload_id, method="DELETE")
    assert cancelled.code == 200 and _json(cancelled)["status"] == "cancelled"
    assert blocker.code == 202


def test_page_lists_apis_with_copyable_curl_lines(fetch: Fetch, jp_http_port: int) -> None:
    page = fetch("")
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    text = page.body.decode()
    endpoint = f"http://127.0.0.1:{jp_http_port}{BASE}asyncnb/echo"
    assert "<td>echo</td>" in text and "state-ready" in text
    # A colleague calls with an API key, never the Jupyter token (which opens the kernels).
    assert f"curl -s -X POST {endpoint} -H &quot;Authorization: Bearer $ASYNCNB_KEY&quot;" in text
    assert "JUPYTER_TOKEN" not in text
    assert f"curl -s {endpoint}/ID" in text
    assert TOKEN not in text


def test_gateway_status_route(fetch: Fetch, upstream_gateway: Gateway) -> None:
    info = _json(fetch("_gateway"))
    assert info == {"managed": False, "url": upstream_gateway.url, "healthy": True}


# authentication ----------------------------------------------------------------------------
SAMPLE_PATHS = [
    "asyncnb",
    "asyncnb/",
    "asyncnb/apis",
    "asyncnb/_gateway",
    "asyncnb/_keys",
    "asyncnb/_keys/0123456789abcdef",
    "asyncnb/echo",
    "asyncnb/echo/workloads",
    f"asyncnb/echo/{HEX}",
    f"asyncnb/echo/{HEX}/result",
    f"asyncnb/echo/{HEX}/notebook",
    "asyncnb/echo/not-an-id",
    "asyncnb/Not_A_Name/x/y",
]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _asyncnb_patterns(serverapp: Any) -> dict[str, type]:
    """Every route the web app has under <base_url>/asyncnb: pattern → handler class."""
    found: dict[str, type] = {}

    def walk(rules: list[Any]) -> None:
        for rule in rules:
            target = rule.target
            if hasattr(target, "rules"):
                walk(target.rules)
                continue
            pattern = getattr(rule.matcher, "regex", None)
            if pattern is not None and pattern.pattern.startswith(f"{BASE}asyncnb"):
                found[pattern.pattern] = target

    walk(serverapp.web_app.default_router.rules)
    return found


def _implements(handler: type, method: str) -> bool:
    from tornado.web import RequestHandler

    return getattr(handler, method.lower()) is not getattr(RequestHandler, method.lower())


class TestEveryRouteNeedsAuthentication:
    """In the style of the extension template's check_auth: every registered handler, every
    method, without credentials. XSRF checks are off so that a 403 can only come from auth."""

    @pytest.fixture
    def jp_server_config(self, asyncnb_config: dict[str, Any]) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"asyncnb_jupyter": True},
                "disable_check_xsrf": True,
            },
            "AsyncNB": asyncnb_config,
        }

    def test_check_auth(self, jp_serverapp: Any, anonymous: Fetch, fetch: Fetch) -> None:
        patterns = _asyncnb_patterns(jp_serverapp)
        accepted_before = len(
            _json(fetch("echo", "workloads", params={"limit": "1000"}))["workloads"]
        )
        covered: set[str] = set()
        failures = []
        for sample in SAMPLE_PATHS:
            path = url_path_join(BASE, sample)
            matches = [(p, h) for p, h in patterns.items() if re.fullmatch(p, path)]
            assert matches, f"{path} is routed to no asyncnb handler"
            pattern, handler = matches[0]
            covered.add(pattern)
            for method in METHODS:
                body = b"{}" if method in ("POST", "PUT", "PATCH") else None
                code = anonymous(path, method=method, body=body).code
                if _implements(handler, method):
                    login = handler is handlers.PageHandler and method == "GET"
                    ok = code in (401, 403) or (login and code == 302)
                else:
                    ok = code in (401, 403, 405)
                if not ok:
                    failures.append(f"{method} {path} ({handler.__name__}) → {code}")
        assert not failures, failures
        assert covered == set(patterns), f"no sample path for {set(patterns) - covered}"
        # No refused body reached the gateway.
        after = _json(fetch("echo", "workloads", params={"limit": "1000"}))["workloads"]
        assert len(after) == accepted_before
        # The same requests with the token get through authentication.
        assert fetch("apis").code == 200 and fetch("echo", method="POST", body="{}").code == 202

    def test_page_redirects_browsers_to_the_login(self, anonymous: Fetch) -> None:
        response = anonymous(f"{BASE}asyncnb/")
        assert response.code == 302 and "/login" in response.headers["Location"]


class _ReadOnly(Authorizer):
    calls: list[tuple[str, str]] = []

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        type(self).calls.append((action, resource))
        return action == "read"


class TestAuthorization:
    @pytest.fixture
    def jp_server_config(self, asyncnb_config: dict[str, Any]) -> dict[str, Any]:
        return {
            "ServerApp": {
                "jpserver_extensions": {"asyncnb_jupyter": True},
                "authorizer_class": _ReadOnly,
            },
            "AsyncNB": asyncnb_config,
        }

    def test_reads_and_writes_on_the_asyncnb_resource(self, fetch: Fetch) -> None:
        _ReadOnly.calls.clear()
        assert fetch("apis").code == 200
        assert fetch("echo", HEX).code == 404  # authorized: the gateway's own answer
        assert fetch("").code == 200
        assert fetch("echo", method="POST", body="{}").code == 403
        assert fetch("echo", HEX, method="DELETE").code == 403
        ours = [call for call in _ReadOnly.calls if call[1] == "asyncnb"]
        assert ("read", "asyncnb") in ours and ("write", "asyncnb") in ours
        assert {action for action, _ in ours} == {"read", "write"}


# the gateway's failures ------------------------------------------------------------------------
class TestGatewayUnreachable:
    @pytest.fixture
    def asyncnb_config(self) -> dict[str, Any]:
        return {"gateway_url": f"http://127.0.0.1:{free_port()}", "gateway_token": TOKEN}

    def test_503_with_a_json_detail(self, fetch: Fetch) -> None:
        for response in (
            fetch("echo", method="POST", body="{}"),
            fetch("echo", HEX),
            fetch("apis"),
        ):
            assert response.code == 503
            assert "not reachable" in _json(response)["detail"]
            assert response.headers["Retry-After"] == "2"
        page = fetch("")
        assert page.code == 200 and "not reachable" in page.body.decode()
        assert _json(fetch("_gateway"))["healthy"] is False


class TestWrongGatewayToken:
    @pytest.fixture
    def asyncnb_config(self, upstream_gateway: Gateway) -> dict[str, Any]:
        return {"gateway_url": upstream_gateway.url, "gateway_token": "not-the-token"}

    def test_502_not_the_gateways_401(self, fetch: Fetch) -> None:
        response = fetch("echo", method="POST", body="{}")
        assert response.code == 502 and "refused" in _json(response)["detail"]


class TestGatewayFromTheEnvironment:
    """A server started with ASYNCNB_GATEWAY set keeps using that gateway."""

    @pytest.fixture
    def asyncnb_config(
        self, upstream_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
    ) -> dict[str, Any]:
        monkeypatch.setenv("ASYNCNB_GATEWAY", upstream_gateway.url)
        monkeypatch.setenv("ASYNCNB_TOKEN", TOKEN)
        return {}

    def test_no_managed_gateway(self, fetch: Fetch, upstream_gateway: Gateway) -> None:
        assert _json(fetch("_gateway")) == {
            "managed": False,
            "url": upstream_gateway.url,
            "healthy": True,
        }
        assert fetch("echo").code == 200


# the managed gateway ---------------------------------------------------------------------------
class TestManagedGateway:
    @pytest.fixture
    def asyncnb_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"storage": str(tmp_path / "storage"), "n_workers": 1, "check_interval": 0.2}

    def test_started_restarted_and_stopped_with_the_server(
        self, jp_serverapp: Any, fetch: Fetch, run: Callable[[Any], Any], jp_http_port: int
    ) -> None:
        extension = _extension(jp_serverapp)
        run(extension._start_jupyter_server_extension(jp_serverapp))

        def running(not_pid: int | None = None) -> dict[str, Any]:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                info = _json(fetch("_gateway"))
                if info["state"] == "running" and info["healthy"] and info["pid"] != not_pid:
                    return dict(info)
                run(asyncio.sleep(0.1))
            raise TimeoutError(info)

        first = running()
        assert first["managed"] is True and first["url"] == os.environ["ASYNCNB_GATEWAY"]
        token = os.environ["ASYNCNB_TOKEN"]
        with Client(first["url"], token) as client:
            client.deploy(Echo, "echo")
        assert fetch("echo").code == 200
        endpoint = f"http://127.0.0.1:{jp_http_port}{BASE}asyncnb/echo"
        assert _json(fetch("echo"))["endpoint"] == endpoint

        os.kill(first["pid"], signal.SIGKILL)
        second = running(not_pid=first["pid"])
        assert second["port"] == first["port"] and second["restarts"] == 1
        assert os.environ["ASYNCNB_TOKEN"] == token  # same URL and token for the kernels
        accepted = fetch(
            "echo",
            method="POST",
            body='{"after": "restart"}',
            headers={"Content-Type": "application/json"},
        )
        assert accepted.code == 202
        assert _wait_completed(fetch, "echo", _json(accepted)["id"])["result"] == {
            "after": "restart"
        }

        run(extension.stop_extension())
        assert not alive(second["pid"])


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCNB_")}
    env["ASYNCNB_TOKEN"] = TOKEN
    return env


def test_a_gateway_that_cannot_start_is_left_failed(tmp_path: Path) -> None:
    import logging

    async def scenario() -> GatewayProcess:
        process = GatewayProcess(
            lambda port: ["--port", str(port), "--scheduler", "tcp://nowhere:1", "--workers", "1"],
            _child_env(),
            free_port(),
            logging.getLogger("test"),
            check_interval=0.1,
            max_start_failures=2,
        )
        process.start()
        deadline = time.monotonic() + 60
        while process.state != "failed" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        detail = Upstream("", TOKEN, process=process).down_detail()
        assert detail.startswith("the asyncnb gateway failed to start: error: --scheduler excludes")
        await process.stop()
        return process

    process = asyncio.run(scenario())
    assert process.restarts == 1 and process.state == "stopped"


def test_a_taken_port_moves_the_gateway(tmp_path: Path) -> None:
    import logging
    import socket

    moved: list[int] = []

    async def scenario() -> tuple[GatewayProcess, int]:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            process = GatewayProcess(
                lambda p: ["--port", str(p), "--storage", str(tmp_path), "--workers", "1"],
                _child_env(),
                port,
                logging.getLogger("test"),
                check_interval=0.1,
                on_port_change=moved.append,
            )
            process.start()
            deadline = time.monotonic() + 90
            while process.state != "running" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        pid = process.pid
        await process.stop()
        assert pid is not None
        return process, pid

    process, pid = asyncio.run(scenario())
    assert process.state == "stopped" and not alive(pid)
    assert moved == [process.port]
