"""The Jupyter extension end to end: a real `jupyter server`, a kernel that deploys with
`%%async_api`, and a colleague who calls the API through the server with its token."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.jupyter import JupyterServer, Kernel, alive, jupyter_env
from ..support.processes import BIN

pytest.importorskip("websocket")

CELL = """%%async_api echo
class Echo:
    def predict(self, payload):
        return {"echo": payload}
"""

ENV_CHECK = "import os; print(os.environ['ASYNCNB_GATEWAY'], 'ASYNCNB_TOKEN' in os.environ)"


def _result(http: httpx.Client, location: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = http.get(location, headers={"Prefer": "wait=10"}).json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return dict(record)
    raise TimeoutError(f"{location} did not finish")


def _submit_and_wait(colleague: httpx.Client, payload: Any) -> dict[str, Any]:
    response = colleague.post("/asyncnb/echo", json=payload)
    assert response.status_code == 202, response.text
    location = response.headers["Location"]
    assert location == f"{colleague.base_url.path.rstrip('/')}/asyncnb/echo/{response.json()['id']}"
    record = _result(colleague, location.removeprefix(colleague.base_url.path.rstrip("/")))
    assert record["status"] == "completed", record
    return record


def test_extension_list_shows_it_enabled_and_ok(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "jupyter"), "server", "extension", "list"],
        env=jupyter_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # colours
    assert "asyncnb_jupyter enabled" in text, text
    assert "asyncnb_jupyter 0.1.0 OK" in text, text


def test_colleague_calls_an_api_deployed_from_a_kernel(tmp_path: Path) -> None:
    server = JupyterServer(
        tmp_path,
        f"--AsyncNB.storage={tmp_path / 'storage'}",
        "--AsyncNB.n_workers=1",
        "--AsyncNB.check_interval=0.25",
        base_url="/jupyter/",
    ).start()
    gateway_pids: list[int] = []
    try:
        with server.http() as owner, server.http() as colleague:
            gateway = server.wait_gateway(owner)
            gateway_pids.append(gateway["pid"])

            # The data scientist: a kernel of this server deploys with %%async_api.
            kernel = Kernel.start(server, owner)
            try:
                reply, out = kernel.execute(ENV_CHECK)
                assert reply["status"] == "ok", out
                assert out.split() == [gateway["url"], "True"]
                reply, out = kernel.execute("%load_ext asyncnb")
                assert reply["status"] == "ok", out
                reply, out = kernel.execute(CELL)
                assert reply["status"] == "ok", out
            finally:
                kernel.close()

            # The colleague: only the Jupyter URL and the server's token.
            record = _submit_and_wait(colleague, {"n": 1})
            assert record["result"] == {"echo": {"n": 1}}
            listed = colleague.get("/asyncnb/apis").json()["apis"]
            assert [a["endpoint"] for a in listed] == [f"{server.url}/asyncnb/echo"]

            with server.http(token=None) as stranger:
                assert stranger.post("/asyncnb/echo", json={"n": 2}).status_code in (401, 403)
                assert stranger.get("/asyncnb/apis").status_code in (401, 403)
                assert stranger.get(f"/asyncnb/echo?token={server.token}").status_code == 200
            with server.http(token="wrong") as impostor:
                assert impostor.post("/asyncnb/echo", json={"n": 2}).status_code in (401, 403)

            # The kernel restarts (and keeps the gateway in its environment), then goes away;
            # the API keeps serving.
            assert owner.post(f"/api/kernels/{kernel.id}/restart").status_code == 200
            assert _submit_and_wait(colleague, {"n": 2})["result"] == {"echo": {"n": 2}}
            restarted = Kernel(server, kernel.id)
            try:
                reply, out = restarted.execute(ENV_CHECK)
                assert out.split() == [gateway["url"], "True"], out
            finally:
                restarted.close()
            assert owner.delete(f"/api/kernels/{kernel.id}").status_code == 204
            assert kernel.id not in [k["id"] for k in owner.get("/api/kernels").json()]
            assert _submit_and_wait(colleague, {"n": 3})["result"] == {"echo": {"n": 3}}

            # The gateway is killed; the extension starts it again on the same port, and the
            # durable storage brings the API and its finished workloads back.
            os.kill(gateway["pid"], signal.SIGKILL)
            again = server.wait_gateway(owner, not_pid=gateway["pid"])
            gateway_pids.append(again["pid"])
            assert again["port"] == gateway["port"] and again["restarts"] >= 1
            assert colleague.get(f"/asyncnb/echo/{record['id']}").json()["status"] == "completed"
            assert _submit_and_wait(colleague, {"n": 4})["result"] == {"echo": {"n": 4}}
            assert "exited with code -9; restarting it" in server.log.read_text()

        # Jupyter's clean shutdown stops the gateway too.
        server.stop()
        deadline = time.monotonic() + 15
        while alive(gateway_pids[-1]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(gateway_pids[-1]), server.log_tail()
    finally:
        server.stop()
        for pid in gateway_pids:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_gateway_ends_when_the_server_is_killed(tmp_path: Path) -> None:
    server = JupyterServer(
        tmp_path, f"--AsyncNB.storage={tmp_path / 'storage'}", "--AsyncNB.n_workers=1"
    ).start()
    pid = None
    try:
        with server.http() as http:
            pid = server.wait_gateway(http)["pid"]
        server.kill9()
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        server.stop()
        if pid is not None and alive(pid):
            os.killpg(pid, signal.SIGKILL)
