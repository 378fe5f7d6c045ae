"""asyncnb API keys through the Jupyter extension (issue 15, item 2), with real processes: a
`jupyter server` with the extension and its managed gateway, APIs deployed from a kernel, and
colleagues who hold keys, never the Jupyter token.

The security checks: a key on every Jupyter route (403), a key for API x on API y (403), a
revoked and an expired key (401), a read key submitting (403), a key on another caller's
workload (403), rate limits relayed (429 + Retry-After), and no key in either log, in the
listing answers or in the storage.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from asyncnb.contract.keys import parse_key

from ..support.jupyter import JupyterServer, Kernel, alive, wait_done
from ..support.processes import Gateway

websocket = pytest.importorskip("websocket")
pytestmark = pytest.mark.timeout(600)

BASE = "/jupyter/"
DEPLOY = """
import time
import asyncnb

class Echo:
    def predict(self, payload):
        return {"echo": payload}

class Sleeper:
    def predict(self, payload):
        time.sleep(float(payload.get("sleep", 0)))
        return payload

class Reverse:
    def predict(self, payload):
        return bytes(payload)[::-1]

class Streamer:
    def predict(self, payload):
        for n in range(int(payload["n"])):
            time.sleep(float(payload["delay"]))
            print("line", n)
            yield n

for name, cls in [("echo", Echo), ("other", Echo), ("sleeper", Sleeper), ("reverse", Reverse),
                  ("streamer", Streamer)]:
    asyncnb.deploy(cls, name, max_concurrency=2)
print("deployed")
"""
# Every key text a test creates: none may appear in a log, a listing or the storage.
CREATED: list[str] = []
KEY_ONLY = "reaches only the workload routes"


class Deployed:
    """The module's Jupyter server, with echo, other, sleeper, reverse and streamer deployed."""

    def __init__(self, server: JupyterServer, storage: Path) -> None:
        self.server = server
        self.storage = storage
        self.owner = server.http()

    def key(self, name: str, apis: list[str] | None = None, **fields: Any) -> dict[str, Any]:
        """A new key through the extension (the owner's POST /asyncnb/_keys)."""
        body = {"name": name, "apis": apis or ["echo"], **fields}
        answer = self.owner.post("/asyncnb/_keys", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.headers["Cache-Control"] == "no-store"
        created: dict[str, Any] = answer.json()
        CREATED.append(created["key"])
        return created

    def as_key(self, key: dict[str, Any] | str, scheme: str = "Bearer") -> httpx.Client:
        text = key if isinstance(key, str) else key["key"]
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"{scheme} {text}"},
            timeout=90,
            follow_redirects=False,
        )


def local(location: str) -> str:
    """A Location under the base URL, as a path for a client whose base URL has it."""
    assert location.startswith(BASE), location
    return "/" + location.removeprefix(BASE)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("jupyter-keys")
    storage = tmp / "storage"
    server = JupyterServer(
        tmp,
        f"--AsyncNB.storage={storage}",
        "--AsyncNB.n_workers=1",
        "--AsyncNB.threads_per_worker=4",
        # Everything either side logs lands in the server's log (the gateway's output is
        # prefixed 'asyncnb gateway:'), at the most talkative levels, for the no-key check.
        "--AsyncNB.log_level=debug",
        "--ServerApp.log_level=DEBUG",
        base_url=BASE,
    ).start()
    gateway_pid = None
    try:
        with server.http() as owner:
            gateway_pid = server.wait_gateway(owner)["pid"]
            kernel = Kernel.start(server, owner)
            try:
                reply, out = kernel.execute(DEPLOY, timeout=180)
                assert reply["status"] == "ok", out
            finally:
                kernel.close()
            assert owner.delete(f"/api/kernels/{kernel.id}").status_code == 204
            for name in ("echo", "other", "sleeper", "reverse", "streamer"):
                deadline = time.monotonic() + 120
                while owner.get(f"/asyncnb/{name}").json().get("state") != "ready":
                    assert time.monotonic() < deadline, f"{name} not ready"
                    time.sleep(0.2)
        found = Deployed(server, storage)
        try:
            yield found
        finally:
            found.owner.close()
    finally:
        server.stop()
        if gateway_pid is not None and alive(gateway_pid):
            os.killpg(gateway_pid, signal.SIGKILL)


# key management ---------------------------------------------------------------------------------
def test_the_owner_creates_lists_and_revokes_keys(deployed: Deployed) -> None:
    owner = deployed.owner
    created = deployed.key("alice", scopes=["invoke", "read"], rate_limit=5, max_queued=10)
    assert re.fullmatch(r"ank_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", created["key"])
    assert created["prefix"] == f"ank_{created['id']}_" and created["state"] == "active"
    assert (created["rate_limit"], created["max_queued"]) == (5, 10)

    listed = owner.get("/asyncnb/_keys")
    assert listed.status_code == 200 and listed.headers["Cache-Control"] == "no-store"
    records = {k["id"]: k for k in listed.json()["keys"]}
    assert records[created["id"]]["name"] == "alice"
    assert "key" not in records[created["id"]] and created["key"] not in listed.text
    only_other = owner.get("/asyncnb/_keys", params={"api": "other"}).json()["keys"]
    assert created["id"] not in [k["id"] for k in only_other]

    # The gateway's validation comes back as it is.
    for bad in (
        {"name": "owner", "apis": ["echo"]},
        {"name": "x", "apis": []},
        {"name": "x", "apis": ["echo"], "scopes": ["admin"]},
    ):
        refused = owner.post("/asyncnb/_keys", json=bad)
        assert refused.status_code == 422, refused.text
        assert refused.headers["Cache-Control"] == "no-store"
    assert owner.delete("/asyncnb/_keys/0123456789abcdef").status_code == 404
    assert owner.delete("/asyncnb/_keys/not-a-key-id").status_code == 404  # no such route

    revoked = owner.delete(f"/asyncnb/_keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert revoked.headers["Cache-Control"] == "no-store"


def test_key_management_is_the_owners_only(deployed: Deployed) -> None:
    server = deployed.server
    created = deployed.key("mallory")
    with server.http(token=None) as stranger:
        assert stranger.get("/asyncnb/_keys").status_code == 403
        assert stranger.post("/asyncnb/_keys", json={"name": "m", "apis": ["*"]}).status_code == 403
        assert stranger.delete(f"/asyncnb/_keys/{created['id']}").status_code == 403
    # A browser logged in by cookie must send Jupyter's XSRF token to change keys.
    with server.http() as login:
        assert login.get("/api/status").status_code == 200  # token → login cookie
        cookies = login.cookies
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as browser:
        assert browser.get("/asyncnb/_keys").status_code == 200
        forged = browser.post("/asyncnb/_keys", json={"name": "csrf", "apis": ["*"]})
        assert forged.status_code == 403, forged.text
        assert browser.delete(f"/asyncnb/_keys/{created['id']}").status_code == 403
    assert "csrf" not in [k["name"] for k in deployed.owner.get("/asyncnb/_keys").json()["keys"]]


# a key reaches nothing of Jupyter -----------------------------------------------------------------
JUPYTER_ROUTES = [
    ("GET", "/api/kernels"),
    ("POST", "/api/kernels"),
    ("GET", "/api/kernelspecs"),
    ("GET", "/api/contents"),
    ("PUT", "/api/contents/planted.py"),
    ("GET", "/api/terminals"),
    ("POST", "/api/terminals"),
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions"),
    ("GET", "/api/me"),
    ("GET", "/api/status"),
    ("GET", "/lab"),
    ("GET", "/lab/tree/x.ipynb"),
    ("GET", "/tree"),
    ("GET", "/files/x.txt"),
    ("GET", "/login"),
    ("GET", "/asyncnb/"),
    ("GET", "/asyncnb"),
    ("GET", "/asyncnb/apis"),
    ("GET", "/asyncnb/_gateway"),
    ("GET", "/asyncnb/_keys"),
    ("POST", "/asyncnb/_keys"),
    ("DELETE", "/asyncnb/_keys/{key_id}"),
    ("GET", "/asyncnb/echo/not-an-id/deeper"),
]


@pytest.mark.parametrize("scheme", ["Bearer", "token"])
def test_a_key_gets_403_on_every_jupyter_route(deployed: Deployed, scheme: str) -> None:
    key = deployed.key(f"wanderer-{scheme.lower()}", apis=["*"], scopes=["invoke", "read"])
    (deployed.server.tmp / "notebooks" / "x.txt").write_text("the owner's file")
    failures = []
    with deployed.as_key(key, scheme) as colleague:
        for method, route in JUPYTER_ROUTES:
            path = route.format(key_id=key["id"])
            body = {"name": "x", "apis": ["*"]} if method in ("POST", "PUT") else None
            response = colleague.request(method, path, json=body)
            if response.status_code != 403 or KEY_ONLY not in response.text:
                failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
            if "the owner's file" in response.text:
                failures.append(f"{method} {path} showed a file")
        # ...while the same key works where keys belong.
        assert colleague.get("/asyncnb/echo").status_code == 200
    assert not failures, "\n".join(failures)
    owner = deployed.owner
    contents = owner.get("/api/contents").json()["content"]
    assert "planted.py" not in [c["name"] for c in contents]
    assert owner.get("/api/terminals").json() == []
    assert owner.get("/api/kernels").json() == []


def test_a_key_opens_no_kernel_websocket(deployed: Deployed) -> None:
    owner = deployed.owner
    kernel_id = owner.post("/api/kernels", json={"name": "python3"}).json()["id"]
    try:
        key = deployed.key("socket", apis=["*"])
        url = deployed.server.url.replace("http://", "ws://")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(
                f"{url}/api/kernels/{kernel_id}/channels",
                header=[f"Authorization: Bearer {key['key']}"],
                timeout=30,
            )
        assert refused.value.status_code == 403
    finally:
        assert owner.delete(f"/api/kernels/{kernel_id}").status_code == 204


def test_a_key_with_the_owners_cookie_is_still_only_a_key(deployed: Deployed) -> None:
    """The key decides, even from a browser that is also logged in as the owner."""
    server = deployed.server
    key = deployed.key("both", apis=["echo"], scopes=["invoke"])
    with server.http() as login:
        assert login.get("/api/status").status_code == 200
        cookies = login.cookies
    with httpx.Client(
        base_url=server.url,
        cookies=cookies,
        headers={"Authorization": f"Bearer {key['key']}"},
        timeout=30,
        follow_redirects=False,
    ) as both:
        assert both.get("/api/kernels").status_code == 403
        assert both.get("/asyncnb/apis").status_code == 403
        assert both.get("/asyncnb/other").status_code == 403  # the key's APIs, not the owner's
        accepted = both.post("/asyncnb/echo", json={"from": "both"})
        assert accepted.status_code == 202, accepted.text
        assert wait_done(both, local(accepted.headers["Location"]))["submitted_by"] == "both"


def test_a_key_in_the_url_is_refused(deployed: Deployed) -> None:
    key = deployed.key("in-url")
    with deployed.server.http(token=None) as anyone:
        # a connection per request: the server may drop one it refused (a reset, seen once,
        # on the next request of a kept-alive connection), and the answers are what is tested
        anyone.headers["Connection"] = "close"
        for path in ("/api/kernels", "/asyncnb/echo", "/asyncnb/"):
            response = anyone.get(path, params={"token": key["key"]}, follow_redirects=False)
            assert response.status_code == 403, f"{path}: {response.status_code}"
            assert "never in the URL" in response.text
        posted = anyone.post("/asyncnb/echo", params={"token": key["key"]}, json={})
        assert posted.status_code == 403 and "never in the URL" in posted.text


# a key on the workload routes ---------------------------------------------------------------------
def test_a_key_submits_polls_and_fetches_results(deployed: Deployed) -> None:
    key = deployed.key("bob", scopes=["invoke", "read"])
    with deployed.as_key(key) as bob:
        accepted = bob.post("/asyncnb/echo", json={"text": "good"})
        assert accepted.status_code == 202, accepted.text
        workload_id = accepted.json()["id"]
        assert accepted.headers["Location"] == f"{BASE}asyncnb/echo/{workload_id}"
        record = wait_done(bob, local(accepted.headers["Location"]))
        assert record["status"] == "completed" and record["result"] == {"echo": {"text": "good"}}
        assert record["submitted_by"] == "bob"
        result = bob.get(f"/asyncnb/echo/{workload_id}/result")
        assert result.status_code == 200 and result.json() == {"echo": {"text": "good"}}
        assert result.headers["Content-Security-Policy"].endswith("sandbox")
        # Prefer: wait on the submit answers with the finished record.
        waited = bob.post("/asyncnb/echo", json=[1], headers={"Prefer": "wait=30"})
        assert waited.status_code == 200 and waited.json()["result"] == {"echo": [1]}
        # read: the API's status (endpoint at this Jupyter URL) and its recent workloads
        status = bob.get("/asyncnb/echo")
        assert status.status_code == 200
        assert status.json()["endpoint"] == f"{deployed.server.url}/asyncnb/echo"
        listed = bob.get("/asyncnb/echo/workloads", params={"submitted_by": "bob"})
        assert listed.status_code == 200
        assert workload_id in [w["id"] for w in listed.json()["workloads"]]
        # An idempotent replay is the key's own.
        headers = {"Idempotency-Key": "bob-1"}
        first = bob.post("/asyncnb/echo", json={"n": 1}, headers=headers)
        again = bob.post("/asyncnb/echo", json={"n": 1}, headers=headers)
        assert first.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers.get("Idempotent-Replayed") == "true"
    # The owner sees who submitted it.
    seen = deployed.owner.get(f"/asyncnb/echo/{workload_id}").json()
    assert seen["submitted_by"] == "bob" and seen["result"] == {"echo": {"text": "good"}}


def test_the_owner_keeps_full_access_as_owner(deployed: Deployed) -> None:
    owner = deployed.owner
    accepted = owner.post("/asyncnb/echo", json={"by": "owner"})
    assert accepted.status_code == 202, accepted.text
    record = wait_done(owner, local(accepted.headers["Location"]))
    assert record["submitted_by"] == "owner" and record["result"] == {"echo": {"by": "owner"}}
    assert owner.get("/asyncnb/apis").status_code == 200
    assert owner.get("/asyncnb/").status_code == 200
    assert owner.get("/api/kernels").status_code == 200
    # The owner reaches a key's workloads too, and cancels them.
    key = deployed.key("dora", apis=["sleeper"])
    with deployed.as_key(key) as dora:
        blocker = [dora.post("/asyncnb/sleeper", json={"sleep": 3}) for _ in range(2)]
        queued = dora.post("/asyncnb/sleeper", json={"sleep": 0})
    assert all(b.status_code == 202 for b in blocker) and queued.status_code == 202
    cancelled = owner.delete(f"/asyncnb/sleeper/{queued.json()['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    mine = owner.get("/asyncnb/sleeper/workloads", params={"submitted_by": "dora"}).json()
    assert {w["submitted_by"] for w in mine["workloads"]} == {"dora"}


def test_a_key_for_one_api_is_refused_on_another(deployed: Deployed) -> None:
    key = deployed.key("xonly", apis=["echo"], scopes=["invoke", "read"])
    theirs = deployed.owner.post("/asyncnb/other", json={"n": 1}).json()["id"]
    with deployed.as_key(key) as colleague:
        for method, path in [
            ("POST", "/asyncnb/other"),
            ("GET", "/asyncnb/other"),
            ("GET", "/asyncnb/other/workloads"),
            ("GET", f"/asyncnb/other/{theirs}"),
            ("DELETE", f"/asyncnb/other/{theirs}"),
            ("GET", f"/asyncnb/other/{theirs}/result"),
        ]:
            response = colleague.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 403, f"{method} {path}: {response.status_code}"
            assert "may not call API 'other'" in response.json()["detail"]
        assert colleague.post("/asyncnb/echo", json={}).status_code == 202


def test_a_revoked_key_gets_401(deployed: Deployed) -> None:
    key = deployed.key("leaver")
    with deployed.as_key(key) as leaver:
        accepted = leaver.post("/asyncnb/echo", json={"n": 1})
        assert accepted.status_code == 202
        assert deployed.owner.delete(f"/asyncnb/_keys/{key['id']}").status_code == 200
        for method, path in [
            ("POST", "/asyncnb/echo"),
            ("GET", local(accepted.headers["Location"])),
            ("GET", "/asyncnb/echo/workloads"),
        ]:
            refused = leaver.request(method, path, json={} if method == "POST" else None)
            assert refused.status_code == 401, f"{method} {path}: {refused.status_code}"
            assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
            assert "revoked" in refused.json()["detail"]


def test_an_expired_key_gets_401(deployed: Deployed) -> None:
    key = deployed.key("brief", expires_in_s=1.5)
    with deployed.as_key(key) as brief:
        assert brief.post("/asyncnb/echo", json={}).status_code == 202
        time.sleep(2)
        refused = brief.post("/asyncnb/echo", json={})
        assert refused.status_code == 401 and "expired" in refused.json()["detail"]
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    listed = deployed.owner.get("/asyncnb/_keys", params={"api": "echo"}).json()["keys"]
    assert {k["id"]: k["state"] for k in listed}[key["id"]] == "expired"


def test_an_unknown_key_gets_401(deployed: Deployed) -> None:
    made_up = "ank_0123456789abcdef_" + "A" * 43
    with deployed.as_key(made_up) as nobody:
        refused = nobody.post("/asyncnb/echo", json={})
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
        # Not a route of keys: 403 before anything asks the gateway.
        assert nobody.get("/api/kernels").status_code == 403


def test_a_read_key_may_not_submit(deployed: Deployed) -> None:
    key = deployed.key("reader", scopes=["read"])
    with deployed.as_key(key) as reader:
        refused = reader.post("/asyncnb/echo", json={"n": 1})
        assert refused.status_code == 403 and "lacks the 'invoke' scope" in refused.text
        # A streamed body is refused as cleanly (read, dropped, then the 403).
        big = reader.post(
            "/asyncnb/reverse",
            content=iter([b"x" * 65536] * 64),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert big.status_code == 403
        assert reader.get("/asyncnb/echo").status_code == 200
        assert reader.get("/asyncnb/echo/workloads").status_code == 200
    assert "reader" not in {
        w["submitted_by"]
        for w in deployed.owner.get("/asyncnb/echo/workloads", params={"limit": 1000}).json()[
            "workloads"
        ]
    }


def test_invoke_on_another_callers_workload_is_refused(deployed: Deployed) -> None:
    first = deployed.key("first", apis=["sleeper"])
    second = deployed.key("second", apis=["sleeper"])
    watcher = deployed.key("watcher", apis=["sleeper"], scopes=["read"])
    with deployed.as_key(first) as one, deployed.as_key(second) as two:
        accepted = one.post("/asyncnb/sleeper", json={"sleep": 0, "secret": "first's"})
        assert accepted.status_code == 202
        path = local(accepted.headers["Location"])
        assert wait_done(one, path)["result"] == {"sleep": 0, "secret": "first's"}
        owners = deployed.owner.post("/asyncnb/sleeper", json={"sleep": 0}).json()["id"]
        for target in (path, f"/asyncnb/sleeper/{owners}"):
            for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/result")]:
                refused = two.request(method, target + suffix)
                assert refused.status_code == 403, f"{method} {target}{suffix}"
                assert "submitted by another caller" in refused.json()["detail"]
                assert "first's" not in refused.text
    with deployed.as_key(watcher) as reads:
        # read: another caller's status record, without its data
        record = reads.get(path)
        assert record.status_code == 200 and record.json()["status"] == "completed"
        assert "result" not in record.json() and "first's" not in record.text
        assert reads.get(path + "/result").status_code == 403
        assert reads.delete(path).status_code == 403


def test_rate_limit_and_max_queued_come_back_as_429(deployed: Deployed) -> None:
    slow = deployed.key("slow", rate_limit=0.2)
    with deployed.as_key(slow) as caller:
        assert caller.get("/asyncnb/echo/workloads").status_code in (200, 403)
        limited = caller.post("/asyncnb/echo", json={})
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) >= 1
        assert "rate limit" in limited.json()["detail"]
    capped = deployed.key("capped", apis=["sleeper"], max_queued=1)
    with deployed.as_key(capped) as caller:
        first = caller.post("/asyncnb/sleeper", json={"sleep": 3})
        assert first.status_code == 202, first.text
        second = caller.post("/asyncnb/sleeper", json={"sleep": 0})
        assert second.status_code == 429, second.text
        assert "max_queued" in second.json()["detail"], second.text
        assert wait_done(caller, local(first.headers["Location"]))["status"] == "completed"
        assert caller.post("/asyncnb/sleeper", json={"sleep": 0}).status_code == 202


def test_a_large_streamed_payload_with_a_key(deployed: Deployed) -> None:
    key = deployed.key("uploader", apis=["reverse"])
    payload = os.urandom(4 * 1024 * 1024 + 13)
    octets = {"Content-Type": "application/octet-stream"}

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]

    with deployed.as_key(key) as uploader:
        for content in (chunks(), payload):  # chunked, then with a Content-Length
            accepted = uploader.post("/asyncnb/reverse", content=content, headers=octets)
            assert accepted.status_code == 202, accepted.text
            path = local(accepted.headers["Location"])
            assert wait_done(uploader, path)["status"] == "completed"
            result = uploader.get(path + "/result")
            assert result.status_code == 200 and result.content == payload[::-1]


# an external gateway reached with a user token ----------------------------------------------
def test_an_external_gateway_with_only_a_user_token(tmp_path: Path) -> None:
    user, admin = "user-" + os.urandom(8).hex(), "admin-" + os.urandom(8).hex()
    gateway = Gateway(
        "--storage", str(tmp_path / "storage"), "--workers", "1", "--token", user,
        env={"ASYNCNB_ADMIN_TOKEN": admin},
    ).start()  # fmt: skip
    server = JupyterServer(
        tmp_path, f"--AsyncNB.gateway_url={gateway.url}", f"--AsyncNB.gateway_token={user}"
    )
    try:
        server.start()
        with server.http() as owner:
            for response in (
                owner.get("/asyncnb/_keys"),
                owner.post("/asyncnb/_keys", json={"name": "x", "apis": ["*"]}),
                owner.delete("/asyncnb/_keys/0123456789abcdef"),
            ):
                assert response.status_code == 502, response.text
                assert "needs the gateway's admin token" in response.json()["detail"]
                assert response.headers["Cache-Control"] == "no-store"
            page = owner.get("/asyncnb/")
            assert page.status_code == 200 and "admin token" in page.text
            assert owner.get("/asyncnb/apis").status_code == 200  # the rest still works
            assert user not in page.text and admin not in page.text
    finally:
        server.stop()
        gateway.stop()


# nothing leaks ------------------------------------------------------------------------------------
def test_no_key_in_logs_answers_or_storage(deployed: Deployed) -> None:
    """Run last: every key created above, in full or its secret alone, is nowhere."""
    assert len(CREATED) >= 10
    parsed = [parse_key(key) for key in CREATED]
    secrets = [secret for _id, secret in filter(None, parsed)]
    assert len(secrets) == len(CREATED)
    log = deployed.server.log.read_text(errors="replace")
    # Both sides' logs are there: the server's own lines and the gateway's output.
    assert "asyncnb gateway: " in log and "/asyncnb/echo" in log
    listing = deployed.owner.get("/asyncnb/_keys").text
    page = deployed.owner.get("/asyncnb/").text
    stored = b"".join(path.read_bytes() for path in deployed.storage.rglob("*") if path.is_file())
    for secret in secrets:
        assert secret not in log, "a key is in the server's or the gateway's log"
        assert secret not in listing and secret not in page
        assert secret.encode() not in stored, "a key is in the storage"
    # The listing shows every key by its public prefix only.
    listed = json.loads(listing)["keys"]
    assert {k["prefix"] for k in listed} >= {f"ank_{key_id}_" for key_id, _ in filter(None, parsed)}


# streaming through the proxy (issue 16) ---------------------------------------------------------
def test_a_key_streams_its_workloads_events_through_the_proxy(deployed: Deployed) -> None:
    """The extension relays the gateway's Server-Sent Events event by event (not buffered
    until the end), and `Last-Event-ID` reaches the gateway."""
    key = deployed.key("stella", apis=["streamer"])
    with deployed.as_key(key) as stella:
        accepted = stella.post("/asyncnb/streamer", json={"n": 4, "delay": 0.4})
        assert accepted.status_code == 202, accepted.text
        path = local(accepted.headers["Location"])
        events: list[tuple[float, dict[str, Any]]] = []
        status_at_first_output = None
        with stella.stream("GET", path + "/events", headers={"Accept": "text/event-stream"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[len("data: ") :])
                    events.append((time.monotonic(), event))
                    if event["type"] == "output" and status_at_first_output is None:
                        status_at_first_output = stella.get(path).json()["status"]
        assert status_at_first_output == "in_progress"
        outputs = [(t, e) for t, e in events if e["type"] == "output"]
        assert [e["value"] for _, e in outputs] == [0, 1, 2, 3]
        assert outputs[-1][0] - outputs[0][0] > 0.6  # they came as they were made
        assert events[-1][1]["type"] == "completed"
        resumed = stella.get(
            path + "/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "3"}
        )
        ids = [int(x[4:]) for x in resumed.text.splitlines() if x.startswith("id: ")]
        assert ids and ids[0] == 4 and ids == sorted(set(ids))
        logs = stella.get(path + "/logs")
        assert logs.status_code == 200 and logs.text == "line 0\nline 1\nline 2\nline 3\n"
    # another key gets nothing of it
    with deployed.as_key(deployed.key("snoop", apis=["streamer"])) as snoop:
        assert snoop.get(path + "/events").status_code == 403
        assert snoop.get(path + "/logs").status_code == 403
