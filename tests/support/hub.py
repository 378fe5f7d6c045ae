"""A real JupyterHub for the tests: `jupyterhub`, the npm `configurable-http-proxy`, the
dummy authenticator with users alice and bob, and single-user servers (as this OS user, each
in a home under the hub's folder) that load the asyncnb extension as an install would.

Every process it starts carries a marker in its environment (the hub, the proxy, a managed
service, the single-user servers and what they start: asyncnb gateways, Dask workers,
kernels), so `stop()` can find and end any of them by pid, and say which were left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from .jupyter import EXTENSION_DIR, ROOT, SHIPPED_CONFIG, Kernel
from .processes import BIN, free_port

CHP = ROOT / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"
USERS = ("alice", "bob")
PASSWORD = "hub-test-password"  # the dummy authenticator's one password, for every user
MARKER = "ASYNCNB_TEST_HUB"  # environment variable every process of one hub carries
SERVICE = "asyncnb"  # name of the Hub-managed `asyncnb serve` service (service mode)
HARNESS = "test-harness"  # the service whose admin token the harness uses

# The single-user servers' jupyter_server_config.py (an image's /etc/jupyter would hold it):
# the APIs' endpoint shown in notebooks is the hub's public URL of the server, not the
# single-user server's own loopback address (the extension's default).
SINGLEUSER_CONFIG = """\
import os

c = get_config()  # noqa: F821
if os.environ.get("JUPYTERHUB_PUBLIC_URL"):
    c.AsyncNB.public_url = os.environ["JUPYTERHUB_PUBLIC_URL"].rstrip("/") + "/asyncnb"
"""

_XSRF = re.compile(r'name="_xsrf"\s+value="([^"]+)"')


def hub_missing() -> str | None:
    """Why a real hub cannot run here (in one line, for the test report), or None."""
    if not (BIN / "jupyterhub").exists():
        return "jupyterhub is not installed: pip install -e '.[dev]' (or make install)"
    if not os.access(CHP, os.X_OK):
        return f"{CHP.relative_to(ROOT)} is missing: run `make hub-deps` (npm)"
    return None


@dataclass
class UserServer:
    """A user's single-user server as a client sees it: its URL through the proxy and the
    hub token used to call it (all that `HubKernel` and an HTTP client need)."""

    name: str
    url: str
    token: str
    pid: int | None = None

    def http(
        self, token: str | None = "own", headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Client:
        """A client of this server; `token="own"` sends the owner's hub token, None none
        (`headers` may then bring other credentials, an asyncnb key say)."""
        chosen = self.token if token == "own" else token
        sent = {"Authorization": f"token {chosen}"} if chosen else {}
        sent.update(headers or {})
        return httpx.Client(base_url=self.url, headers=sent, timeout=90, **kwargs)


class HubKernel(Kernel):
    """`Kernel` (execute over the websocket) for a kernel of a server behind the hub: the
    websocket goes through the proxy with the user's hub token."""

    def __init__(self, server: UserServer, kernel_id: str) -> None:
        import websocket

        self.server = server  # type: ignore[assignment]  # Kernel's only needs .url, .token
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        ws_url = server.url.replace("http://", "ws://", 1)
        self.ws = websocket.create_connection(
            f"{ws_url}/api/kernels/{self.id}/channels?session_id={self.session}",
            header=[f"Authorization: token {server.token}"],
            timeout=60,
        )

    @classmethod
    def start_on(cls, server: UserServer) -> HubKernel:
        """Start a kernel through the server's REST API and connect to it."""
        with server.http() as http:
            response = http.post("/api/kernels", json={"name": "python3"})
            response.raise_for_status()
            return cls(server, str(response.json()["id"]))


@dataclass
class Leftover:
    """A process of the hub still alive after `stop()` (then killed), for the report."""

    pid: int
    user: str
    cmdline: str


class JupyterHub:
    """`jupyterhub` with the real proxy on free loopback ports, in `tmp`.

    The spawner is SimpleLocalProcessSpawner: LocalProcessSpawner would need OS accounts
    alice and bob (it switches to their uid and takes their home from the password
    database), which a test cannot create without changing the machine. The rest is the
    same LocalProcessSpawner: one process per server, in a session of its own.

    `service=True` also runs `asyncnb serve` as a Hub-managed service and points every
    single-user server at it with `c.AsyncNB.gateway_url` and `gateway_token` (in the
    single-user servers' Jupyter config, as an image's `/etc/jupyter` would hold them), so
    APIs outlive the single-user servers.
    """

    def __init__(
        self, tmp: Path, *, service: bool = False, singleuser_args: Sequence[str] = ()
    ) -> None:
        self.tmp = tmp
        self.service = service
        self.singleuser_args = ["--AsyncNB.n_workers=1", *singleuser_args]
        self.port = free_port()  # the proxy's public port
        self.proxy_api_port = free_port()
        self.hub_port = free_port()
        self.admin_token = secrets.token_hex(32)  # the harness service's hub API token
        self.run_id = uuid.uuid4().hex
        self.homes = tmp / "homes"
        self.config_dir = tmp / "singleuser-jupyter-config"
        self.log = tmp / "jupyterhub.log"
        self.gateway_port = free_port() if service else 0
        self.gateway_token = secrets.token_urlsafe(32) if service else ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.servers: dict[str, UserServer] = {}  # the running ones, by user
        self._tokens: dict[str, str] = {}

    # urls -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The proxy's public URL: what browsers and colleagues reach."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        """The Hub-managed gateway (service mode): loopback only, not routed by the proxy."""
        return f"http://127.0.0.1:{self.gateway_port}"

    def user_url(self, name: str) -> str:
        return f"{self.url}/user/{name}"

    @property
    def service_storage(self) -> Path:
        """Where the Hub-managed gateway (service mode) keeps its APIs and workloads."""
        return self.tmp / "service-storage"

    def storage(self, name: str) -> Path:
        """Where `name`'s managed gateway keeps its APIs and workloads."""
        return self.homes / name / "asyncnb-storage"

    # life -----------------------------------------------------------------------------------
    def write_config(self) -> Path:
        """The generated jupyterhub_config.py (and the single-user servers' Jupyter config)."""
        self.homes.mkdir(parents=True, exist_ok=True)
        conf_d = self.config_dir / "jupyter_server_config.d"
        conf_d.mkdir(parents=True, exist_ok=True)
        # As an install of asyncnb in the single-user environment puts it in etc/jupyter.
        (conf_d / SHIPPED_CONFIG.name).write_bytes(SHIPPED_CONFIG.read_bytes())
        args = list(self.singleuser_args)
        if os.geteuid() == 0:
            args.append("--ServerApp.allow_root=True")
        services: list[dict[str, Any]] = [{"name": HARNESS, "api_token": self.admin_token}]
        server_config = SINGLEUSER_CONFIG
        if self.service:
            services.append(self._service_spec())
            server_config += (
                f"c.AsyncNB.gateway_url = {self.gateway_url!r}\n"
                f"c.AsyncNB.gateway_token = {self.gateway_token!r}\n"
            )
        (self.config_dir / "jupyter_server_config.py").write_text(server_config)
        config = f"""\
# Generated by tests/support/hub.py
c = get_config()  # noqa: F821

c.JupyterHub.bind_url = {self.url!r}
# Also tells single-user servers their public URL (JUPYTERHUB_PUBLIC_URL).
c.JupyterHub.public_url = {self.url!r}
c.JupyterHub.hub_bind_url = {f"http://127.0.0.1:{self.hub_port}"!r}
c.JupyterHub.db_url = {f"sqlite:///{self.tmp / 'jupyterhub.sqlite'}"!r}
c.JupyterHub.cookie_secret_file = {str(self.tmp / "jupyterhub_cookie_secret")!r}
c.JupyterHub.pid_file = {str(self.tmp / "jupyterhub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# The real proxy, from npm (make hub-deps).
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.ConfigurableHTTPProxy.api_url = {f"http://127.0.0.1:{self.proxy_api_port}"!r}
c.ConfigurableHTTPProxy.pid_file = {str(self.tmp / "proxy.pid")!r}
c.ConfigurableHTTPProxy.should_start = True

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {PASSWORD!r}
c.Authenticator.allowed_users = {set(USERS)!r}

c.JupyterHub.services = {services!r}
c.JupyterHub.load_roles = [{{"name": "admin", "services": [{HARNESS!r}]}}]

# Every user's server as this OS user, in a home of its own under the hub's folder.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(self.homes / "{username}")!r}
c.Spawner.cmd = [{str(BIN / "jupyterhub-singleuser")!r}]
c.Spawner.args = {args!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.env_keep = ["PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", {MARKER!r}]
c.Spawner.environment = {{
    "JUPYTER_CONFIG_DIR": {str(self.config_dir)!r},
    "ASYNCNB_STORAGE": lambda spawner: {str(self.homes)!r} + "/" + spawner.user.name
    + "/asyncnb-storage",
}}
"""
        path = self.tmp / "jupyterhub_config.py"
        path.write_text(config)
        return path

    def _service_spec(self) -> dict[str, Any]:
        home = self.tmp / "service-home"
        home.mkdir(exist_ok=True)
        return {
            "name": SERVICE,
            "command": [
                str(BIN / "asyncnb"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.gateway_port),
                "--storage",
                str(self.service_storage),
                "--workers",
                "1",
            ],
            "cwd": str(home),
            # The token in the environment, not on argv where `ps` shows it.
            "environment": {
                "ASYNCNB_TOKEN": self.gateway_token,
                "HOME": str(home),
                MARKER: self.run_id,  # services get no c.Spawner.env_keep
            },
        }

    def env(self) -> dict[str, str]:
        """The hub's environment: the venv and the repo's extension importable, no outer
        Jupyter or asyncnb settings, and the marker."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ASYNCNB_", "JUPYTER_", "JUPYTERHUB_", "CONFIGPROXY_"))
        }
        env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(BIN.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(EXTENSION_DIR), env.get("PYTHONPATH")])
        )
        env["HOME"] = str(self.tmp / "hub-home")
        (self.tmp / "hub-home").mkdir(exist_ok=True)
        env[MARKER] = self.run_id
        return env

    def start(self, timeout: float = 90) -> JupyterHub:
        """Start the hub (which starts the proxy and services); return once the hub's API
        answers through the proxy and the users exist."""
        problem = hub_missing()
        if problem:
            raise RuntimeError(problem)
        config = self.write_config()
        with open(self.log, "ab") as sink:
            self.proc = subprocess.Popen(
                [str(BIN / "jupyterhub"), "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.tmp,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            with httpx.Client(base_url=self.url, timeout=5) as http:
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}")
                    try:
                        if http.get("/hub/api/").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.2)
                else:
                    raise TimeoutError(f"jupyterhub not up after {timeout} s")
            with self.admin() as admin:
                for name in USERS:
                    if admin.get(f"/users/{name}").status_code == 404:
                        admin.post(f"/users/{name}").raise_for_status()
            if self.service:
                self.wait_service(max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- jupyterhub log ---\n{self.log_tail()}") from exc
        return self

    def stop(self, timeout: float = 60) -> list[Leftover]:
        """Stop everything this hub started; the processes that outlived a clean stop.

        SIGTERM to the hub: its shutdown stops the single-user servers still running
        (`cleanup_servers`), the services and the proxy; each server stops its gateway and
        kernels. Whatever still runs after that, found by the marker, is killed with its
        process group, and returned.
        """
        if self.proc is None:
            return []
        self.servers.clear()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        left = self._wait_gone(15)
        for process in self.processes():
            _kill_group(process.pid)
        if self.proc.poll() is None:
            _kill_group(self.proc.pid)
            self.proc.wait(10)
        return left

    # hub API ----------------------------------------------------------------------------------
    def admin(self) -> httpx.Client:
        """A client of the hub's REST API (`/hub/api`) with the harness's admin token."""
        return httpx.Client(
            base_url=f"{self.url}/hub/api",
            headers={"Authorization": f"token {self.admin_token}"},
            timeout=30,
        )

    def token(self, name: str, scopes: Sequence[str] | None = None, note: str = "tests") -> str:
        """A new hub API token of `name` (by default with the user's own permissions), as
        the user would create on the hub's token page."""
        body: dict[str, Any] = {"note": note, "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = list(scopes)
        with self.admin() as admin:
            response = admin.post(f"/users/{name}/tokens", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["token"])

    def user_token(self, name: str) -> str:
        """One token per user for this hub, made on first use."""
        if name not in self._tokens:
            self._tokens[name] = self.token(name)
        return self._tokens[name]

    @contextlib.contextmanager
    def login(self, name: str, password: str = PASSWORD) -> Iterator[httpx.Client]:
        """A cookie session of `name`, logged in with the hub's login form as a browser is
        (it follows redirects, so the OAuth hop to a single-user server happens too)."""
        with httpx.Client(base_url=self.url, timeout=60, follow_redirects=True) as http:
            form = http.get("/hub/login")
            form.raise_for_status()
            match = _XSRF.search(form.text)
            data = {"username": name, "password": password}
            if match:
                data["_xsrf"] = match.group(1)
            response = http.post("/hub/login", data=data)
            assert response.status_code == 200, response.text[:500]
            assert http.cookies.get("jupyterhub-session-id"), dict(http.cookies)
            yield http

    def user_model(self, name: str) -> dict[str, Any]:
        with self.admin() as admin:
            response = admin.get(f"/users/{name}")
            response.raise_for_status()
            return dict(response.json())

    def start_server(self, name: str, timeout: float = 120) -> UserServer:
        """Start `name`'s server through the hub (as the "Start my server" button does) and
        return once it answers through the proxy with the user's token."""
        with self.admin() as admin:
            response = admin.post(f"/users/{name}/server")
            assert response.status_code in (201, 202), f"{response.status_code} {response.text}"
        deadline = time.monotonic() + timeout
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            model = self.user_model(name)
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                break
            if not model.get("pending") and not server:
                raise AssertionError(f"{name}'s server failed to start: {model}\n{self.log_tail()}")
            time.sleep(0.25)
        else:
            raise AssertionError(f"{name}'s server not ready after {timeout} s: {model}")
        user = UserServer(name, self.user_url(name), self.user_token(name))
        with user.http() as http:
            status = http.get("/api/status")
            assert status.status_code == 200, f"{status.status_code} {status.text}"
        user.pid = model["servers"][""].get("state", {}).get("pid")
        self.servers[name] = user
        return user

    def server(self, name: str) -> UserServer:
        """`name`'s running server (started with `start_server`)."""
        return self.servers[name]

    def server_gateway(self, name: str) -> dict[str, Any]:
        """`/asyncnb/_gateway` of `name`'s running server, now."""
        with self.server(name).http() as http:
            response = http.get("/asyncnb/_gateway")
            assert response.status_code == 200, f"{response.status_code} {response.text}"
            return dict(response.json())

    def stop_server(self, name: str, timeout: float = 60) -> None:
        """Stop `name`'s server through the hub; return once the hub reports it stopped."""
        self.servers.pop(name, None)
        with self.admin() as admin:
            response = admin.delete(f"/users/{name}/server")
            if response.status_code == 400:  # not running
                return
            assert response.status_code in (202, 204), f"{response.status_code} {response.text}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                model = admin.get(f"/users/{name}").json()
                if not model.get("servers") and not model.get("pending"):
                    return
                time.sleep(0.25)
        raise AssertionError(f"{name}'s server not stopped after {timeout} s\n{self.log_tail()}")

    def wait_service(self, timeout: float = 90) -> None:
        """Wait until the Hub-managed gateway (service mode) answers its health check."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.gateway_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the {SERVICE!r} service is not up at {self.gateway_url}")

    def gateway(self) -> httpx.Client:
        """A client of the Hub-managed gateway itself (service mode), with its token."""
        return httpx.Client(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {self.gateway_token}"},
            timeout=60,
        )

    def wait_gateway(self, user: UserServer, timeout: float = 120) -> dict[str, Any]:
        """`/asyncnb/_gateway` of `user`'s server once its gateway is up and healthy."""
        info: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        with user.http() as http:
            while time.monotonic() < deadline:
                response = http.get("/asyncnb/_gateway")
                assert response.status_code == 200, f"{response.status_code} {response.text}"
                info = response.json()
                if info.get("healthy") and info.get("state", "running") == "running":
                    return info
                if info.get("state") == "failed":
                    break
                time.sleep(0.25)
        raise AssertionError(f"gateway of {user.name} not up: {info}\n{self.log_tail()}")

    # processes --------------------------------------------------------------------------------
    def processes(self, user: str | None = None) -> list[psutil.Process]:
        """The live processes of this hub (of one user's server and what it started, with
        `user`; the hub, proxy and services carry no user)."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                env = process.environ()
            except (psutil.Error, OSError):
                continue
            if env.get(MARKER) != self.run_id:
                continue
            if user is not None and env.get("JUPYTERHUB_USER") != user:
                continue
            found.append(process)
        return found

    def gateways(self, user: str | None = None) -> list[psutil.Process]:
        """The live `asyncnb serve` processes of this hub (of `user`'s server)."""
        found = []
        for process in self.processes(user):
            try:
                if "serve" in process.cmdline()[2:4]:  # asyncnb serve, python -m asyncnb.cli serve
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def describe(self, processes: Sequence[psutil.Process]) -> str:
        lines = []
        for process in processes:
            try:
                lines.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
            except psutil.Error:
                lines.append(f"{process.pid}: (gone)")
        return "\n".join(lines)

    def wait_no_processes(self, user: str | None = None, timeout: float = 30) -> None:
        """Wait until no process of the hub (of `user`) runs; fail naming those that do."""
        deadline = time.monotonic() + timeout
        while (left := self.processes(user)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running:\n{self.describe(left)}\n{self.log_tail()}"

    def _wait_gone(self, timeout: float) -> list[Leftover]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        result = []
        for process in left:
            try:
                env = process.environ()
                cmdline = " ".join(process.cmdline())[:200]
            except psutil.Error:
                continue
            result.append(Leftover(process.pid, env.get("JUPYTERHUB_USER", ""), cmdline))
        return result

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _kill_group(pid: int) -> None:
    """SIGKILL `pid`'s process group (every process here starts a session of its own)."""
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():  # never the tests' own group
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
