"""The managed gateway: `asyncnb serve` as a child process that is watched and restarted."""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tornado.ioloop import PeriodicCallback

READY = re.compile(r"ready at (http://\S+)")
ADDRESS_IN_USE = re.compile(r"address already in use|errno 98|errno 48", re.IGNORECASE)
EXCEPTION_LINE = re.compile(r"^[\w.]+: \S")

# Runs in the child before `asyncnb serve`: on Linux the kernel sends it SIGTERM when the Jupyter
# server dies, even by SIGKILL, so no orphaned gateway keeps the port and the storage lock.
# The death signal survives exec; it is tied to the thread that forked, which is always the
# server's event-loop thread here.
_LAUNCHER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(0)
os.execv(sys.argv[2], sys.argv[2:])
"""


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(lines: list[str]) -> str:
    """The line of a failed start's output that says why: its error, else its exception."""
    for line in lines:
        if line.lower().startswith("error"):
            return line
    for line in reversed(lines):
        if EXCEPTION_LINE.match(line) and not line.startswith("SystemExit"):
            return line
    return lines[-1] if lines else ""


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class GatewayProcess:
    """`asyncnb serve` in its own process group on a fixed loopback port.

    A periodic check (on the server's event loop) notices when it dies and starts it again on
    the same port with the same environment, so its URL and token stay valid for kernels and
    for the proxy. Consecutive starts that never become ready back off, and after
    `max_start_failures` of them the gateway is left stopped (state "failed").
    """

    def __init__(
        self,
        command: Callable[[int], list[str]],
        env: dict[str, str],
        port: int,
        log: logging.Logger,
        *,
        check_interval: float = 1.0,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        max_start_failures: int = 5,
        on_port_change: Callable[[int], None] | None = None,
    ) -> None:
        self.command = command
        self.env = env
        self.port = port
        self.log = log
        self.check_interval = check_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.max_start_failures = max_start_failures
        self.on_port_change = on_port_change
        self.state = "stopped"
        self.restarts = 0
        self.failure = ""
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=200)
        self._pump_thread: threading.Thread | None = None
        self._started_at = 0.0
        self._ready_at = 0.0
        self._restart_at = 0.0
        self._failures = 0
        self._periodic: PeriodicCallback | None = None
        self._atexit_registered = False

    # public -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def info(self) -> dict[str, Any]:
        """What the status route shows."""
        return {
            "state": self.state,
            "pid": self.pid,
            "port": self.port,
            "restarts": self.restarts,
            "failure": self.failure or None,
            "uptime_s": round(time.monotonic() - self._ready_at, 1)
            if self.state == "running"
            else None,
        }

    def start(self) -> None:
        """Start the process and its watchdog; call on the running event loop."""
        if self._periodic is not None:
            return
        self._spawn()
        self._periodic = PeriodicCallback(self.check, self.check_interval * 1000)
        self._periodic.start()
        if not self._atexit_registered:
            atexit.register(self._terminate)
            self._atexit_registered = True

    async def stop(self) -> None:
        """Stop the watchdog, then the gateway: SIGTERM, and SIGKILL to its group if slow."""
        if self._periodic is not None:
            self._periodic.stop()
            self._periodic = None
        await asyncio.get_running_loop().run_in_executor(None, self._terminate)
        if self._atexit_registered:
            atexit.unregister(self._terminate)
            self._atexit_registered = False

    def check(self) -> None:
        """One watchdog round: note readiness, time out slow starts, restart after a death."""
        if self.state in ("stopped", "failed"):
            return
        if self.state == "restarting":
            if time.monotonic() >= self._restart_at:
                try:
                    self._spawn()
                except OSError as exc:
                    self.state, self.failure = "failed", f"cannot start asyncnb serve: {exc}"
                    self.log.error("%s", self.failure)
            return
        proc = self._proc
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            if self.state == "starting":
                if self._ready.is_set():
                    self.state = "running"
                    self._ready_at = time.monotonic()
                    self.log.info("asyncnb gateway ready at %s (pid %d)", self.url, proc.pid)
                elif time.monotonic() - self._started_at > self.start_timeout:
                    self.log.error(
                        "asyncnb gateway (pid %d) not ready after %g s; killing it",
                        proc.pid,
                        self.start_timeout,
                    )
                    self._kill(proc)
                    self._died(proc, None)
            return
        self._died(proc, code)

    # internals ------------------------------------------------------------------------------
    def _spawn(self) -> None:
        argv = [sys.executable, "-m", "asyncnb.cli", "serve", *self.command(self.port)]
        self._ready = threading.Event()
        self._tail.clear()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=self.env,
            start_new_session=True,
        )
        self._proc = proc
        self._started_at = time.monotonic()
        self.state = "starting"
        self._pump_thread = threading.Thread(
            target=self._pump, args=(proc, self._ready), name="asyncnb-gateway-log", daemon=True
        )
        self._pump_thread.start()
        self.log.info("asyncnb gateway starting on %s (pid %d)", self.url, proc.pid)

    def _pump(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.rstrip()
            self._tail.append(text)
            if READY.search(text):
                ready.set()
            self.log.info("asyncnb gateway: %s", text)

    def _died(self, proc: subprocess.Popen[str], code: int | None) -> None:
        # LocalCluster workers outlive a SIGKILL of their gateway: end the whole group.
        _kill_group(proc.pid, signal.SIGKILL)
        if self._pump_thread is not None:
            # Its last lines say why it died; the pipe closes once the group is gone.
            self._pump_thread.join(2)
        was_running = self.state == "running"
        lines = list(self._tail)
        if was_running:
            self._failures = 0
            self.log.warning(
                "asyncnb gateway (pid %d) exited with code %s; restarting it on port %d",
                proc.pid,
                code,
                self.port,
            )
        else:
            self._failures += 1
            self.log.error(
                "asyncnb gateway (pid %d) failed to start (code %s, attempt %d of %d):\n%s",
                proc.pid,
                code,
                self._failures,
                self.max_start_failures,
                "\n".join(lines[-12:]),
            )
            if any(ADDRESS_IN_USE.search(line) for line in lines):
                self._move_port()
        if self._failures >= self.max_start_failures:
            self.state = "failed"
            self.failure = summary(lines) or f"exit code {code}"
            self.log.error(
                "asyncnb gateway left stopped after %d failed starts; fix the c.AsyncNB "
                "settings and restart the Jupyter server",
                self._failures,
            )
            return
        self.restarts += 1
        self.state = "restarting"
        self._restart_at = time.monotonic() + min(30.0, 0.5 * 2**self._failures)

    def _move_port(self) -> None:
        old, self.port = self.port, free_port()
        self.log.warning(
            "port %d is taken; the asyncnb gateway moves to port %d (running kernels see the "
            "new URL after a restart)",
            old,
            self.port,
        )
        if self.on_port_change is not None:
            self.on_port_change(self.port)

    def _kill(self, proc: subprocess.Popen[str]) -> None:
        _kill_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def _terminate(self) -> None:
        self.state = "stopped"
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            # The gateway alone first: it closes its LocalCluster and its storage cleanly.
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.log.warning("asyncnb gateway (pid %d) slow to stop; killing it", proc.pid)
            except ProcessLookupError:
                pass
        self._kill(proc)
        self.log.info("asyncnb gateway (pid %d) stopped", proc.pid)
