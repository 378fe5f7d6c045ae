"""A real `asyncnb serve` probed as an attacker on the network would, over real sockets: slow
and oversize heads, connection floods from one address, repeated headers, lax parsing, Host
reflection, webhook destinations on a shared gateway."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway, WebhookReceiver

USER, ADMIN = "user-hardening-token", "admin-hardening-token"
AUTH = {"Authorization": f"Bearer {USER}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Short timeouts so that the tests do not wait long; a low cap per client address."""
    storage = tmp_path_factory.mktemp("hardening")
    gw = Gateway(
        "--storage",
        str(storage),
        "--workers",
        "1",
        "--token",
        USER,
        "--admin-token",
        ADMIN,
        "--head-timeout",
        "2",
        "--first-byte-timeout",
        "1",
        "--max-connections-per-client",
        "300",
    ).start()
    with Client(gw.url, ADMIN) as admin:
        admin.deploy(predictors.Echo, "echo")
    gw.wait_ready("echo", USER)
    yield gw
    gw.stop()


def address(gateway: Gateway) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").split(":")
    return host, int(port)


def raw(gateway: Gateway, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` as it is on a new connection; everything that comes back."""
    with socket.create_connection(address(gateway), timeout=timeout) as sock:
        sock.sendall(request)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def detail_of(answer: bytes) -> str:
    return str(json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"])


# slow and silent clients -----------------------------------------------------------------------
def test_trickling_heads_are_closed_and_others_are_served_meanwhile(gateway: Gateway) -> None:
    trickling = [socket.create_connection(address(gateway), timeout=10) for _ in range(200)]
    answers: list[bytes] = []
    try:
        for sock in trickling:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                for sock in trickling:
                    try:
                        sock.sendall(b"a")
                    except OSError:
                        pass
                time.sleep(0.3)

        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as http:
            served = [http.get("/healthz").status_code for _ in range(20)]
            served.append(http.post("/echo", json={"x": 1}).status_code)
        assert served == [200] * 20 + [202]
        for sock in trickling:
            answers.append(read_all(sock))  # the gateway ends them: 408, then closed
        stop.set()
    finally:
        for sock in trickling:
            sock.close()
    assert {status_of(answer) for answer in answers} == {408}
    assert "not complete within 2 s" in detail_of(answers[0])


def test_a_silent_connection_is_closed(gateway: Gateway) -> None:
    with socket.create_connection(address(gateway), timeout=10) as sock:
        assert read_all(sock) == b""  # closed by the gateway, with nothing sent


def test_one_address_cannot_take_every_connection(tmp_path: Path) -> None:
    gw = Gateway(
        "--storage", str(tmp_path), "--workers", "0", "--max-connections-per-client", "20"
    ).start()
    held = [socket.create_connection(address(gw), timeout=10) for _ in range(20)]
    try:
        refused = raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(refused) == 503 and "more than 20 connections" in detail_of(refused)
        held.pop().close()
        time.sleep(0.2)
        assert (
            status_of(raw(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            == 200
        )
    finally:
        for sock in held:
            sock.close()
        gw.stop()


# oversize heads --------------------------------------------------------------------------------
def test_oversize_heads_get_431_and_the_gateway_stays_small(gateway: Gateway) -> None:
    big = raw(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000)
    assert status_of(big) == 431 and "over 65536 bytes" in detail_of(big)
    many = b"".join(b"X-%d: 1\r\n" % n for n in range(101))
    answer = raw(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(answer) == 431 and "more than 100 headers" in detail_of(answer)
    assert gateway.proc is not None
    process = psutil.Process(gateway.proc.pid)
    before = process.memory_info().rss

    def endless_header() -> None:
        with socket.create_connection(address(gateway), timeout=10) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                for _ in range(128):  # 16 MiB each, unless the gateway stops it first
                    sock.sendall(b"b" * 128 * 1024)
            except OSError:
                pass

    threads = [threading.Thread(target=endless_header) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert process.memory_info().rss - before < 50 * 1024 * 1024


# one reading of each header --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_line", "extra"),
    [
        (b"POST /echo", b"Content-Type: application/json\r\nContent-Length: 2\r\n"),  # fast path
        (b"GET /echo/" + b"0" * 32, b""),  # fast path poll
        (b"GET /apis", b""),  # a FastAPI route
        (b"GET /echo", b""),
    ],
)
def test_a_repeated_authorization_is_refused_on_every_path(
    gateway: Gateway, request_line: bytes, extra: bytes
) -> None:
    head = (
        request_line
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"Authorization: Bearer wrong\r\n"
        + f"Authorization: Bearer {USER}\r\n".encode()
        + extra
        + b"\r\n"
    )
    answer = raw(gateway, head + (b"{}" if extra else b""))
    assert status_of(answer) == 400 and "repeats the authorization header" in detail_of(answer)


@pytest.mark.parametrize("name", [b"X-Priority", b"Idempotency-Key", b"Content-Length"])
def test_other_repeated_headers_are_refused(gateway: Gateway, name: bytes) -> None:
    value = b"2" if name != b"Idempotency-Key" else b"k"
    head = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {USER}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + (b"Content-Length: 2\r\n" if name != b"Content-Length" else b"")
        + name + b": " + value + b"\r\n"
        + name + b": " + value + b"\r\n\r\n{}"
    )  # fmt: skip
    answer = raw(gateway, head)
    assert status_of(answer) == 400, answer[:200]


# strict parsing --------------------------------------------------------------------------------
@pytest.mark.parametrize("prefer", ["wait=1e9", "wait=", "wait=-1", "wait=ten", "wait=1.5s"])
def test_prefer_wait_must_be_plain_seconds(gateway: Gateway, prefer: str) -> None:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as http:
        answer = http.post("/echo", json={}, headers={"Prefer": prefer})
        assert answer.status_code == 400 and "Prefer: wait" in answer.json()["detail"]
        assert http.post(
            "/echo", json={}, headers={"Prefer": "respond-async, wait=1"}
        ).status_code in (
            200,
            202,
        )


@pytest.mark.parametrize("priority", ["+5", "1_000", "0x10", "1e3", "5.0"])
def test_priorities_are_plain_integers(gateway: Gateway, priority: str) -> None:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as http:
        answer = http.post("/echo", json={}, headers={"X-Priority": priority})
        assert answer.status_code == 422 and "must be an integer" in answer.json()["detail"]


def test_the_host_header_is_not_reflected(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as http:
        record = http.get("/echo", headers={"Host": "evil.example"}).json()
        assert record["endpoint"] == f"{gateway.url}/echo"
        listed = http.get("/apis", headers={"Host": "evil.example"}).json()["apis"]
        assert all("evil.example" not in api["endpoint"] for api in listed)
        slash = http.get("/apis/", headers={"Host": "evil.example"})
        assert "evil.example" not in slash.headers.get("location", "")


def test_the_docs_page_needs_no_internet(gateway: Gateway) -> None:
    page = httpx.get(f"{gateway.url}/docs", params={"token": USER}, timeout=10)
    assert page.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in page.text
    assert "cdn." not in page.text and "https://" not in page.text
    script = httpx.get(f"{gateway.url}/docs/assets/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    for other in (
        "index.html",
        "swagger-ui.js.map",
        "..%2F__init__.py",
    ):  # only what the page needs
        assert httpx.get(f"{gateway.url}/docs/assets/{other}", timeout=10).status_code == 404


def test_an_admin_token_alone_is_warned_about(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    gw = Gateway(
        "--storage", str(tmp_path / "s"), "--workers", "0", "--admin-token", ADMIN, log=log
    ).start()
    gw.stop()
    assert "warning: --admin-token without --token" in log.read_text()


# webhooks on a shared gateway ------------------------------------------------------------------
SPELLINGS = [
    "http://127.0.0.1:{port}/hook",
    "http://2130706433:{port}/hook",
    "http://0x7f000001:{port}/hook",
    "http://127.1:{port}/hook",
    "http://[::ffff:127.0.0.1]:{port}/hook",
    "http://localhost:{port}/hook",
    "http://user:pw@127.0.0.1:{port}/hook",
    "http://[64:ff9b::7f00:1]:{port}/hook",
    "http://[2002:7f00:1::]:{port}/hook",
    "http://[::127.0.0.1]:{port}/hook",
    "http://[::1]:{port}/hook",
    "http://10.0.0.1:{port}/hook",
    "http://192.168.1.1:{port}/hook",
    "http://172.16.0.1:{port}/hook",
    "http://100.64.0.1:{port}/hook",
    "http://[fd00::1]:{port}/hook",
    "http://x.localhost:{port}/hook",
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway others can reach: every interface, with a token."""
    storage = tmp_path_factory.mktemp("shared")
    gw = Gateway(
        "--host", "0.0.0.0", "--storage", str(storage), "--workers", "1", "--token", USER
    ).start()
    gw.url = gw.url.replace("0.0.0.0", "127.0.0.1")
    with Client(gw.url, USER) as admin:
        admin.deploy(predictors.Echo, "echo")
    gw.wait_ready("echo", USER)
    yield gw
    gw.stop()


def test_a_shared_gateway_refuses_its_own_network_in_every_spelling(shared: Gateway) -> None:
    with WebhookReceiver() as receiver, httpx.Client(base_url=shared.url, headers=AUTH) as http:
        port = int(receiver.url.rsplit(":", 1)[1].split("/")[0])
        for spelling in SPELLINGS:
            url = spelling.format(port=port)
            answer = http.post("/echo", json={"x": 1}, headers={"X-Webhook-URL": url})
            assert answer.status_code == 422, (url, answer.text)
            assert "X-Webhook-URL" in answer.json()["detail"], url
        assert receiver.calls == 0
        # a public destination stays acceptable
        public = http.post("/echo", json={}, headers={"X-Webhook-URL": "https://example.com/h"})
        assert public.status_code == 202


def test_webhook_allow_opens_the_internal_network_explicitly(tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        gw = Gateway(
            "--host",
            "0.0.0.0",
            "--storage",
            str(tmp_path),
            "--workers",
            "1",
            "--token",
            USER,
            "--webhook-allow",
            "127.0.0.1/32",
        ).start()
        url = gw.url.replace("0.0.0.0", "127.0.0.1")
        try:
            with Client(url, USER) as client:
                client.deploy(predictors.Echo, "echo")
                gw.url = url
                gw.wait_ready("echo", USER)
                work = client.api("echo").submit({"x": 2}, webhook_url=receiver.url)
                work.result(timeout=60)
            receiver.wait_for(1)
            assert receiver.received[0]["json"]["id"] == work.id
        finally:
            gw.stop()


def test_a_notebook_gateway_on_loopback_still_calls_loopback_receivers(gateway: Gateway) -> None:
    with WebhookReceiver() as receiver, httpx.Client(base_url=gateway.url, headers=AUTH) as http:
        answer = http.post("/echo", json={"x": 3}, headers={"X-Webhook-URL": receiver.url})
        assert answer.status_code == 202
        receiver.wait_for(1)
