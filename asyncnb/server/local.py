"""The local gateway: one `asyncnb serve` process per storage, shared by every process of the
user that has no gateway configured (notebooks, scripts, the CLI, papermill runs, `make demo`).

Every gateway records where it listens in a runtime file once it is ready, and removes it when
it stops: `~/.asyncnb/run/<hash of the storage URL>.json`, mode 0600 since it holds the token,
beside the default storage and never inside a storage (which may be shared, or backed up). A
process without `ASYNCNB_GATEWAY` reads that file and connects; when there is none, or it names
a process that is gone, it starts `asyncnb serve` in a session of its own, so that the signals
a terminal or Jupyter sends to its process group (Ctrl-C, a kernel interrupt) never reach the
gateway or its Dask workers. A
gateway started that way stops after `LOCAL_IDLE_TIMEOUT_S` without requests and without
unfinished work (`ASYNCNB_LOCAL_IDLE_TIMEOUT` sets it, 0 for never), or on `asyncnb local stop`.
Accepted work is durable, so the next process that needs the gateway starts it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..contract.settings import GatewaySettings, serve_argv
from ..contract.version import __version__
from ..errors import GatewayStartFailed, UsageError
from ..storage import Storage

LOCAL_IDLE_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 120.0
_LOG_ROTATE_BYTES = 5 * 1024 * 1024
# what a gateway started on demand must not inherit from the process that starts it
_DROPPED_ENV = ("ASYNCNB_GATEWAY", "ASYNCNB_TOKEN", "ASYNCNB_ADMIN_TOKEN", "ASYNCNB_STORAGE")


@dataclass
class RuntimeRecord:
    """Where a gateway serving a storage listens, and how to reach it."""

    url: str
    pid: int
    storage: str
    token: str | None = None
    admin_token: str | None = None
    started_at: float = 0.0
    idle_timeout_s: float | None = None
    shape: dict[str, Any] = field(default_factory=dict)  # the cluster it was started with
    version: str = __version__

    @property
    def client_token(self) -> str | None:
        """The token that may do everything on it (deploy included)."""
        return self.admin_token or self.token


def shape_of(settings: GatewaySettings) -> dict[str, Any]:
    return {
        "n_workers": settings.n_workers,
        "threads_per_worker": settings.threads_per_worker,
        "worker_resources": dict(settings.worker_resources),
    }


# the runtime file -------------------------------------------------------------------------------
def _paths(storage_url: str) -> tuple[Path, Path]:
    """(runtime file, log file) of the gateway serving `storage_url`."""
    url = Storage(storage_url).url
    name = "gateway-" + hashlib.sha256(url.encode()).hexdigest()[:16]
    run = Path.home() / ".asyncnb" / "run"
    return run / f"{name}.json", run / f"{name}.log"


def runtime_file(storage_url: str) -> Path:
    return _paths(storage_url)[0]


def read_runtime_file(storage_url: str) -> RuntimeRecord | None:
    try:
        data = json.loads(runtime_file(storage_url).read_text())
        return RuntimeRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_runtime_file(record: RuntimeRecord) -> Path:
    path = runtime_file(record.storage)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(record), out)
    os.replace(tmp, path)
    return path


def remove_runtime_file(storage_url: str, pid: int) -> None:
    """Remove the file if it still names `pid` (a newer gateway may have replaced it)."""
    found = read_runtime_file(storage_url)
    if found is not None and found.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            runtime_file(storage_url).unlink()


# finding one ------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_gateway(pid: int) -> bool:
    """Whether `pid` still runs `asyncnb serve`, not a process that reused a dead gateway's pid
    (where the system says: /proc; elsewhere a live pid counts)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return True
    return any(part.endswith(b"asyncnb") or part == b"asyncnb.cli" for part in command) and (
        b"serve" in command
    )


def answers(url: str, timeout: float = 3.0) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def find_local_gateway(storage_url: str) -> RuntimeRecord | None:
    """The gateway serving `storage_url` now, or None (a stale file is removed)."""
    found = read_runtime_file(storage_url)
    if found is None:
        return None
    if not alive(found.pid) or not is_gateway(found.pid):
        remove_runtime_file(storage_url, found.pid)
        return None
    if not answers(found.url):
        raise GatewayStartFailed(
            f"the gateway of {storage_url} (pid {found.pid}, {found.url}) does not answer: "
            "`asyncnb local stop` stops it"
        )
    return found


# starting one -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _starting(storage_url: str) -> Iterator[None]:
    """One process at a time starts the gateway of a storage; the others wait, then find it."""
    path = runtime_file(storage_url).with_suffix(".lock")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GatewayStartFailed(
                        f"another process has been starting the gateway of {storage_url} "
                        f"for {START_TIMEOUT_S:g} s"
                    ) from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def idle_timeout_from_env() -> float | None:
    text = os.environ.get("ASYNCNB_LOCAL_IDLE_TIMEOUT")
    if text is None or not text.strip():
        return LOCAL_IDLE_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"ASYNCNB_LOCAL_IDLE_TIMEOUT={text!r} is not a number") from None
    return value if value > 0 else None


def local_gateway(
    storage_url: str,
    settings: GatewaySettings | None = None,
    *,
    port: int = 0,
) -> tuple[RuntimeRecord, bool]:
    """The gateway of `storage_url`: found, or started now; and whether this call started it.

    `settings` shape the cluster of a gateway started here (`n_workers`, `threads_per_worker`,
    `worker_resources`); one already running with another shape is refused.
    """
    storage_url = Storage(storage_url).url
    wanted = shape_of(settings) if settings is not None else None
    with _starting(storage_url):
        found = find_local_gateway(storage_url)
        if found is None:
            return _start(storage_url, settings or GatewaySettings(), port), True
    if wanted is not None and found.shape and found.shape != wanted:
        raise UsageError(
            f"the gateway of {storage_url} (pid {found.pid}) runs with other settings "
            f"({found.shape}); stop it first (`asyncnb local stop`) to change them"
        )
    return found, False


def _start(storage_url: str, settings: GatewaySettings, port: int) -> RuntimeRecord:
    _, log_path = _paths(storage_url)
    token = secrets.token_urlsafe(32)
    argv = serve_argv(
        {
            "host": "127.0.0.1",
            "port": port,
            "storage": storage_url,
            "n_workers": settings.n_workers,
            "threads_per_worker": settings.threads_per_worker,
            "worker_resources": settings.worker_resources,
            "idle_timeout_s": idle_timeout_from_env(),
        }
    )
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["ASYNCNB_TOKEN"] = token  # in the environment, which other users cannot read
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _rotate(log_path)
    with open(log_path, "ab") as log:
        started_at = log.tell()
        log.write(
            f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} asyncnb serve {' '.join(argv)}\n".encode()
        )
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncnb.cli", "serve", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(log_path.parent),
            start_new_session=True,  # out of this process's group: its signals stay here
        )
    # reaped when it ends, so that a finished gateway never lingers as a zombie of ours
    threading.Thread(target=process.wait, name="asyncnb-local-gateway", daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = read_runtime_file(storage_url)
        if found is not None and found.pid == process.pid:
            return found
        if process.poll() is not None:
            raise GatewayStartFailed(
                f"the gateway of {storage_url} could not start: {_reason(log_path, started_at)}"
                f" (log: {log_path})"
            )
        time.sleep(0.05)
    _kill_group(process.pid)
    raise GatewayStartFailed(
        f"the gateway of {storage_url} was not ready after {START_TIMEOUT_S:g} s (log: {log_path})"
    )


def _rotate(log_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if log_path.stat().st_size > _LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_suffix(".log.1"))


def _reason(log_path: Path, offset: int) -> str:
    """The line of a failed start's output that says why."""
    with open(log_path, "rb") as log:
        log.seek(offset)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines[1:] if line]
    for line in lines:
        if line.lower().startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else "it exited without a word"


# stopping one -----------------------------------------------------------------------------------
def _kill_group(pid: int) -> None:
    """SIGKILL a gateway and its group: the workers of a LocalCluster outlive a killed parent."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def stop_local_gateway(storage_url: str, timeout: float = 30.0) -> RuntimeRecord | None:
    """Stop the gateway serving `storage_url` (SIGTERM; its whole group is killed if it does
    not end in `timeout`); the record of what was stopped, or None when none ran."""
    storage_url = Storage(storage_url).url
    found = read_runtime_file(storage_url)
    if found is None:
        return None
    if alive(found.pid) and is_gateway(found.pid):  # never a process that reused its pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(found.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(found.pid):
            _kill_group(found.pid)
    remove_runtime_file(storage_url, found.pid)
    with contextlib.suppress(FileNotFoundError):
        runtime_file(storage_url).with_suffix(".lock").unlink()
    return found
