"""A real `jupyter server` process with the asyncnb extension, and a kernel driven over its
websocket, for the Jupyter extension tests."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from .processes import BIN, free_port

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_DIR = ROOT / "jupyter_extension"
SHIPPED_CONFIG = (
    EXTENSION_DIR / "jupyter-config" / "jupyter_server_config.d" / "asyncnb_jupyter.json"
)


def ensure_importable() -> None:
    """Import `asyncnb_jupyter` from the source tree when it is not installed."""
    try:
        import asyncnb_jupyter  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(EXTENSION_DIR))


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, which no init may reap in a container, is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def jupyter_env(tmp: Path) -> dict[str, str]:
    """An isolated Jupyter (home, config, data, runtime) that enables the extension through
    the shipped jupyter_server_config.d file, as an install would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCNB_", "JUPYTER_"))}
    dirs = {name: tmp / name for name in ("home", "config", "data", "runtime")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    conf_d = dirs["config"] / "jupyter_server_config.d"
    conf_d.mkdir(exist_ok=True)
    shutil.copy(SHIPPED_CONFIG, conf_d / SHIPPED_CONFIG.name)
    env.update(
        HOME=str(dirs["home"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        PYTHONPATH=os.pathsep.join(filter(None, [str(EXTENSION_DIR), env.get("PYTHONPATH")])),
    )
    return env


class JupyterServer:
    """`jupyter server` on a free loopback port, in its own process group."""

    def __init__(self, tmp: Path, *args: str, base_url: str = "/") -> None:
        self.tmp = tmp
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base_url = base_url
        self.args = list(args)
        self.env = jupyter_env(tmp)
        self.log = tmp / "jupyter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url.rstrip('/')}"

    def start(self, timeout: float = 60) -> JupyterServer:
        root = self.tmp / "notebooks"
        root.mkdir(exist_ok=True)
        cmd = [
            str(BIN / "jupyter"),
            "server",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.base_url={self.base_url}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            *self.args,
        ]
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=root,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with self.http() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if http.get("/api/status").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"jupyter server did not start:\n{self.log_tail()}")

    def http(self, token: str | None = "server") -> httpx.Client:
        """A client of the server; `token="server"` sends the server's token, None nothing."""
        chosen = self.token if token == "server" else token
        headers = {"Authorization": f"token {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=90)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def gateway(self, http: httpx.Client) -> dict[str, Any]:
        return dict(http.get("/asyncnb/_gateway").json())

    def wait_gateway(
        self, http: httpx.Client, timeout: float = 120, not_pid: int | None = None
    ) -> dict[str, Any]:
        """The managed gateway's status once it runs (with a pid other than `not_pid`)."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = self.gateway(http)
            if info.get("state") == "running" and info.get("healthy") and info["pid"] != not_pid:
                return info
            time.sleep(0.2)
        raise TimeoutError(f"gateway not running: {info}\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (Jupyter's clean shutdown), then SIGKILL to the group; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        return self.proc.returncode


class Kernel:
    """A kernel started through the server's REST API, run over its websocket channel."""

    def __init__(self, server: JupyterServer, kernel_id: str) -> None:
        import websocket

        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        ws_url = server.url.replace("http://", "ws://")
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{self.id}/channels?session_id={self.session}",
            header=[f"Authorization: token {server.token}"],
            timeout=60,
        )

    @classmethod
    def start(cls, server: JupyterServer, http: httpx.Client) -> Kernel:
        response = http.post("/api/kernels", json={"name": "python3"})
        response.raise_for_status()
        return cls(server, str(response.json()["id"]))

    def execute(self, code: str, timeout: float = 90) -> tuple[dict[str, Any], str]:
        """Run `code`; (the execute_reply content, the text of its stream and error output)."""
        import websocket

        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "test",
                        "session": self.session,
                        "version": "5.3",
                        "date": datetime.now(timezone.utc).isoformat(),
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                    "buffers": [],
                }
            )
        )
        output: list[str] = []
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while not (reply is not None and idle):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {code[:60]!r}; output so far: {output}")
            self.ws.settimeout(left)
            try:
                message = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind == "error":
                output.append("\n".join(content.get("traceback", [])))
            elif kind == "execute_reply":
                reply = content
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
        return reply, "".join(output)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def pytest_jupyter_fixtures() -> dict[str, Any]:
    """pytest-jupyter's server fixtures, for a test module to put in its own namespace.

    Loaded this way rather than as a plugin so that its autouse fixtures (an event loop per
    test, a ServerApp cleanup after each) apply to that module only, not to the whole suite.
    """
    import pytest_jupyter.jupyter_server as plugin

    prefixes = ("jp_", "http_server", "io_loop", "echo_kernel_spec")
    return {name: getattr(plugin, name) for name in dir(plugin) if name.startswith(prefixes)}


def wait_done(http: httpx.Client, url: str, timeout: float = 60) -> dict[str, Any]:
    """The workload record at `url` once it has finished (long polls with Prefer: wait)."""
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(url, headers={"Prefer": "wait=10"})
        assert response.status_code == 200, f"{response.status_code} {response.text}"
        record = response.json()
        if record["status"] in ("completed", "failed", "cancelled"):
            return record
    raise AssertionError(f"{url} did not finish: {record}")
