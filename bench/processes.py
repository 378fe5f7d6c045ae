"""Benchmark processes: real servers on free loopback ports, started and stopped the same way.

Every server gets a new session, so whatever it forks (celery prefork children, Dask workers)
is reaped with its process group; `stop_process` sends SIGTERM, then SIGKILL to the group.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 60.0
DEPLOY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0

# urllib honours *_proxy variables; a proxy must never see loopback benchmark traffic.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """A system could not be started or driven; the message is meant for the table."""


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with {code}:\n{self.log_tail()}")


def free_port() -> int:
    # uvicorn/redis cannot report a port they picked themselves, so reserve one and hand it
    # over; the tiny race with other processes is acceptable on a benchmark box.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    env.update(extra or {})
    return env


def start_process(
    stack: contextlib.ExitStack, name: str, argv: Sequence[str], workdir: Path, env: dict[str, str]
) -> Proc:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        # A new session makes the child a process-group leader, so stragglers it forks
        # (celery prefork children, dask workers) can be reaped by that group id.
        popen = subprocess.Popen(
            list(argv),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(name, popen, log_path)
    stack.callback(stop_process, proc)
    return proc


def stop_process(proc: Proc) -> None:
    """SIGTERM the leader so it can shut its children down, then SIGKILL whatever is left."""
    pid = proc.popen.pid
    if proc.popen.poll() is None:
        proc.popen.terminate()
        try:
            proc.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(STOP_GRACE_S)
    # Fails harmlessly when the group is already empty.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with _HTTP.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_until(what: str, probe: Callable[[], bool], procs: Sequence[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check_alive()
        try:
            if probe():
                return
        except (OSError, ValueError):
            pass  # not listening yet, or a half-initialised answer
        time.sleep(0.1)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def wait_http_ok(url: str, procs: Sequence[Proc]) -> None:
    wait_until(url, lambda: http_get(url)[0] == 200, procs, STARTUP_TIMEOUT_S)


def wait_redis(port: int, procs: Sequence[Proc]) -> None:
    def ping() -> bool:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    wait_until(f"redis on port {port}", ping, procs, STARTUP_TIMEOUT_S)


def run_deploy(argv: list[str], name: str) -> None:
    """Run an `asyncnb deploy` command line as a user would; BenchError when it fails."""
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=child_env(), capture_output=True, timeout=DEPLOY_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"asyncnb deploy {name} timed out after {DEPLOY_TIMEOUT_S:.0f}s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
        raise BenchError(f"asyncnb deploy {name} exited {done.returncode}:\n{output}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
