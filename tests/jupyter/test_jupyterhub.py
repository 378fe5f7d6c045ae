"""The Jupyter extension behind a real JupyterHub (issue 15): `jupyterhub`, the npm
`configurable-http-proxy`, SimpleLocalProcessSpawner and the dummy authenticator with alice and
bob. Alice's single-user server runs the extension and its managed gateway; she deploys from a
kernel and calls her API through the proxy with her hub token; bob and strangers are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..support.hub import HubKernel, JupyterHub, UserServer, hub_missing
from ..support.jupyter import wait_done

pytest.importorskip("websocket")
pytestmark = pytest.mark.timeout(600)

DEPLOY = """
import asyncnb

class Echo:
    def predict(self, payload):
        return {"echo": payload}

api = asyncnb.deploy(Echo, "echo")
print(api.status()["endpoint"])
"""


def submit(hub: JupyterHub, http: httpx.Client, payload: Any) -> dict[str, Any]:
    """POST to alice's echo API through the proxy, then its finished record."""
    response = http.post("/asyncnb/echo", json=payload)
    assert response.status_code == 202, f"{response.status_code} {response.text}"
    location = response.headers["Location"]
    assert location == f"/user/alice/asyncnb/echo/{response.json()['id']}"
    return wait_done(http, hub.url + location)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterHub]:
    """A hub with alice's server started (and its managed gateway up), shared by the module;
    stopping it must leave no process behind."""
    problem = hub_missing()
    if problem:
        pytest.fail(problem)
    hub = JupyterHub(tmp_path_factory.mktemp("hub"))
    try:
        hub.start()
        hub.wait_gateway(hub.start_server("alice"))
        yield hub
    finally:
        left = hub.stop()
    assert not left, f"left behind (and killed): {left}\n{hub.log_tail()}"


@pytest.fixture(scope="module")
def alice(hub: JupyterHub) -> UserServer:
    return hub.server("alice")


@pytest.fixture(scope="module")
def echo(hub: JupyterHub, alice: UserServer) -> str:
    """Alice deploys `echo` from a kernel of her server, then shuts the kernel down (the API
    outlives it); the endpoint the notebook shows."""
    kernel = HubKernel.start_on(alice)
    try:
        reply, out = kernel.execute(DEPLOY)
    finally:
        kernel.close()
    assert reply["status"] == "ok", f"{out}\n{hub.log_tail()}"
    with alice.http() as http:
        assert http.delete(f"/api/kernels/{kernel.id}").status_code == 204
    return out.strip()


def test_alice_server_runs_the_extension(hub: JupyterHub, alice: UserServer) -> None:
    with alice.http() as http:
        response = http.get("/asyncnb/_gateway")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["managed"] is True and info["state"] == "running" and info["healthy"], info
    # Its gateway is a process of alice's server, serving her own storage.
    gateways = hub.gateways("alice")
    assert [p.pid for p in gateways] == [info["pid"]], hub.describe(hub.processes())
    assert str(hub.storage("alice")) in gateways[0].cmdline()


def test_alice_calls_her_api_through_the_proxy(
    hub: JupyterHub, alice: UserServer, echo: str
) -> None:
    # The endpoint a notebook shows is the hub's public URL, not the server's own address.
    assert echo == f"{hub.url}/user/alice/asyncnb/echo"
    with alice.http() as http:
        record = submit(hub, http, {"n": 1})
        assert record["result"] == {"echo": {"n": 1}}
        listed = http.get("/asyncnb/apis").json()["apis"]
    assert [(api["name"], api["endpoint"]) for api in listed] == [("echo", echo)]


BOB_ROUTES = [
    ("POST", "/asyncnb/echo"),
    ("GET", "/asyncnb/echo"),
    ("GET", "/asyncnb/echo/{id}"),
    ("GET", "/asyncnb/apis"),
    ("GET", "/asyncnb/_gateway"),
    ("GET", "/api/kernels"),
    ("POST", "/api/kernels"),
]


@pytest.mark.parametrize("who", ["bob", "no token", "made-up token"])
def test_others_are_refused_on_alice_server(
    hub: JupyterHub, alice: UserServer, echo: str, who: str
) -> None:
    """Alice's server admits only tokens with access to it: bob's own valid hub token gets
    403 like no token at all (the single-user server's API routes never redirect)."""
    with alice.http() as http:
        done = submit(hub, http, {"n": "seen"})
        submitted = http.get("/asyncnb/echo").json()["submitted"]
    token = {"bob": hub.user_token("bob"), "no token": None, "made-up token": "0" * 32}[who]
    with alice.http(token=token) as other:
        for method, route in BOB_ROUTES:
            path = route.format(id=done["id"])
            response = other.request(method, path, json={"n": who} if method == "POST" else None)
            assert response.status_code == 403, f"{method} {path}: {response.status_code}"
            assert "echo" not in response.text, response.text
        # The HTML page sends a browser without credentials to the hub's login (OAuth).
        page = other.get("/asyncnb/")
        if who == "bob":
            assert page.status_code == 403
        else:
            assert page.status_code == 302
            assert page.headers["Location"].startswith(f"{hub.url}/hub/api/oauth2/authorize?")
    with alice.http() as http:
        assert http.get("/asyncnb/echo").json()["submitted"] == submitted
    if who == "bob":
        # The token itself is good: it is bob's, for bob's things.
        with httpx.Client(base_url=hub.url, headers={"Authorization": f"token {token}"}) as bob:
            assert bob.get("/hub/api/user").json()["name"] == "bob"


KEY = re.compile(r"ank_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
KEY_REFUSED_ROUTES = [
    ("GET", "/api/kernels"),
    ("POST", "/api/kernels"),
    ("GET", "/api/contents"),
    ("GET", "/api/terminals"),
    ("GET", "/lab"),
    ("GET", "/asyncnb/"),
    ("GET", "/asyncnb/apis"),
    ("GET", "/asyncnb/_keys"),
]


def test_bob_calls_alice_api_with_a_key_she_created(
    hub: JupyterHub, alice: UserServer, echo: str
) -> None:
    """The sharing the hub cannot give: alice creates a key for bob (what her page and
    `%async_api share` do), and bob, who has no access to her server, calls her API through
    the proxy with it, and reaches nothing else of her server or of the hub."""
    kernel = HubKernel.start_on(alice)
    try:
        reply, out = kernel.execute("%load_ext asyncnb\n%async_api share echo --to bob")
    finally:
        kernel.close()
    assert reply["status"] == "ok", out
    with alice.http() as http:
        assert http.delete(f"/api/kernels/{kernel.id}").status_code == 204
    # What she hands bob: the key, and curl lines for the hub's URL of her API.
    found = KEY.search(out)
    assert found, out
    key = found.group(0)
    assert f"curl -s -X POST {echo} " in out, out
    with alice.http() as http:
        (created,) = [k for k in http.get("/asyncnb/_keys").json()["keys"] if k["name"] == "bob"]
        assert key not in http.get("/asyncnb/_keys").text
    with alice.http(token=None, headers={"Authorization": f"Bearer {key}"}) as bob:
        record = submit(hub, bob, {"from": "bob"})
        assert record["result"] == {"echo": {"from": "bob"}}
        assert record["submitted_by"] == "bob"
        for method, path in KEY_REFUSED_ROUTES:
            response = bob.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 403, f"{method} {path}: {response.status_code}"
            assert key not in response.text
        # Nor is it a credential of the hub's.
        with httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {key}"}) as raw:
            assert raw.get("/hub/api/user").status_code == 403
            assert raw.get("/hub/api/users").status_code == 403
    # Alice sees who submitted it.
    with alice.http() as http:
        mine = http.get("/asyncnb/echo/workloads", params={"submitted_by": "bob"}).json()
        assert [w["id"] for w in mine["workloads"]] == [record["id"]]
        # She revokes it; from then on bob's key gets 401 through the proxy.
        assert http.delete(f"/asyncnb/_keys/{created['id']}").status_code == 200
    with alice.http(token=None, headers={"Authorization": f"Bearer {key}"}) as bob:
        refused = bob.post("/asyncnb/echo", json={"from": "bob again"})
        assert refused.status_code == 401, refused.text
        assert "revoked" in refused.json()["detail"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_login_form_session_reaches_only_own_server(
    hub: JupyterHub, alice: UserServer, echo: str
) -> None:
    """As a browser: the hub's login form, then the OAuth hop to the single-user server."""
    with hub.login("alice") as browser:
        page = browser.get("/user/alice/asyncnb/")
        assert page.status_code == 200 and "echo" in page.text, page.text[:300]
        apis = browser.get("/user/alice/asyncnb/apis")
        assert apis.status_code == 200 and apis.json()["apis"][0]["name"] == "echo"
    with hub.login("bob") as browser:
        assert browser.get("/user/alice/asyncnb/apis").status_code == 403
        assert browser.get("/user/alice/asyncnb/").status_code == 403


def test_bob_server_has_its_own_gateway_and_stops_with_it(
    hub: JupyterHub, alice: UserServer, echo: str
) -> None:
    """Each user's server runs its own gateway on its own storage; stopping a server through
    the hub ends its gateway and the gateway's Dask workers, and nothing of alice's."""
    bob = hub.start_server("bob")
    info = hub.wait_gateway(bob)
    assert info["managed"] and info["port"] != hub.server_gateway("alice")["port"]
    with bob.http() as http:
        assert http.get("/asyncnb/apis").json()["apis"] == []
    with bob.http(token=alice.token) as http:
        assert http.get("/asyncnb/apis").status_code == 403
    # bob's server, its gateway, and the gateway's Dask worker (and resource tracker)
    assert [p.pid for p in hub.gateways("bob")] == [info["pid"]]
    assert len(hub.processes("bob")) >= 3, hub.describe(hub.processes("bob"))
    alice_gateway = hub.server_gateway("alice")["pid"]

    hub.stop_server("bob")
    hub.wait_no_processes("bob")
    assert [p.pid for p in hub.gateways("alice")] == [alice_gateway]
    assert alice.pid in {p.pid for p in hub.processes("alice")}
    with alice.http() as http:
        assert submit(hub, http, {"n": 2})["result"] == {"echo": {"n": 2}}
