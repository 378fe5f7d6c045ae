"""`asyncnb serve` as a Hub-managed service (issue 15): the hub starts and stops the gateway,
single-user servers reach it with `c.AsyncNB.gateway_url` and `gateway_token`, and an API
alice deployed keeps serving while her single-user server is stopped (as a culler would).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..support.hub import HubKernel, JupyterHub, hub_missing
from ..support.jupyter import wait_done

pytest.importorskip("websocket")
pytestmark = pytest.mark.timeout(600)

DEPLOY = """
import asyncnb, os

class Echo:
    def predict(self, payload):
        return {"echo": payload}

asyncnb.deploy(Echo, "echo")
print(os.environ["ASYNCNB_GATEWAY"])
"""


def submit(http: httpx.Client, path: str, payload: Any) -> dict[str, Any]:
    """POST `payload` to the API at `path` of `http`, then its finished record."""
    response = http.post(path, json=payload)
    assert response.status_code == 202, f"{response.status_code} {response.text}"
    return wait_done(http, f"{path}/{response.json()['id']}")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterHub]:
    """A hub running `asyncnb serve` as its service, with alice's server pointed at it;
    stopping the hub must stop the service and leave no process behind."""
    problem = hub_missing()
    if problem:
        pytest.fail(problem)
    hub = JupyterHub(tmp_path_factory.mktemp("hub-service"), service=True)
    try:
        hub.start()
        hub.wait_gateway(hub.start_server("alice"))
        yield hub
    finally:
        left = hub.stop()
    assert not left, f"left behind (and killed): {left}\n{hub.log_tail()}"


def test_alice_server_uses_the_hub_service(hub: JupyterHub) -> None:
    info = hub.server_gateway("alice")
    assert info["managed"] is False and info["healthy"] is True, info
    assert info["url"] == hub.gateway_url
    # No gateway of her own: the one `asyncnb serve` is the hub's (a process of no user).
    assert hub.gateways("alice") == []
    serving = hub.gateways()
    assert len(serving) == 1, hub.describe(hub.processes())
    assert serving[0].environ().get("JUPYTERHUB_USER", "") == ""
    assert str(hub.service_storage) in serving[0].cmdline()


def test_api_outlives_alice_server(hub: JupyterHub) -> None:
    alice = hub.server("alice")
    kernel = HubKernel.start_on(alice)
    try:
        reply, out = kernel.execute(DEPLOY)
    finally:
        kernel.close()
    assert reply["status"] == "ok", f"{out}\n{hub.log_tail()}"
    assert out.strip() == hub.gateway_url  # the kernel deploys to the service
    with alice.http() as http:
        first = submit(http, "/asyncnb/echo", {"n": 1})
    assert first["result"] == {"echo": {"n": 1}}

    # Her server goes (culled, or she stopped it): its processes end, the service stays.
    hub.stop_server("alice")
    hub.wait_no_processes("alice")
    with alice.http() as http:
        refused = http.post("/asyncnb/echo", json={"n": "server stopped"})
        redirected = http.get("/asyncnb/echo")
        not_running = http.get("/asyncnb/echo", follow_redirects=True)
    # Meanwhile the hub answers her URL itself: a POST gets 403 (the hub's XSRF check), a GET
    # a redirect to the hub's "Server not running" page (424). Nothing reaches the gateway.
    assert refused.status_code == 403 and "_xsrf" in refused.text, refused.status_code
    assert redirected.status_code == 302
    assert redirected.headers["Location"] == f"{hub.url}/hub/user/alice/asyncnb/echo"
    assert not_running.status_code == 424 and "Server not running" in not_running.text
    # The API still serves: work submitted to the gateway itself runs.
    with hub.gateway() as gateway:
        while_stopped = submit(gateway, "/echo", {"n": 2})
    assert while_stopped["result"] == {"echo": {"n": 2}}

    # Her next server finds the API and its workloads without a redeploy.
    alice = hub.start_server("alice")
    hub.wait_gateway(alice)
    with alice.http() as http:
        again = wait_done(http, f"/asyncnb/echo/{while_stopped['id']}")
        assert again["result"] == {"echo": {"n": 2}}
        assert submit(http, "/asyncnb/echo", {"n": 3})["result"] == {"echo": {"n": 3}}
        assert http.get("/asyncnb/echo").json()["version"] == 1


def test_keys_live_in_the_service(hub: JupyterHub) -> None:
    """Keys alice creates through her server are the service's (its admin token manages
    them, its storage keeps them): bob calls her API with one through her URL, and the
    gateway itself knows it by name."""
    alice = hub.server("alice")
    with alice.http() as http:
        created = http.post(
            "/asyncnb/_keys", json={"name": "bob", "apis": ["echo"], "scopes": ["invoke"]}
        )
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    with alice.http(token=None, headers={"Authorization": f"Bearer {key}"}) as bob:
        record = submit(bob, "/asyncnb/echo", {"from": "bob"})
        assert record["result"] == {"echo": {"from": "bob"}}
        assert record["submitted_by"] == "bob"
        assert bob.get("/api/kernels").status_code == 403
    with hub.gateway() as gateway:
        names = [k["name"] for k in gateway.get("/keys").json()["keys"]]
        assert names == ["bob"]
        # The key works on the gateway itself too, which is where it is checked.
        direct = gateway.get(f"/echo/{record['id']}", headers={"Authorization": f"Bearer {key}"})
        assert direct.status_code == 200 and direct.json()["submitted_by"] == "bob"
