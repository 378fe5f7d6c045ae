"""Shared pieces of the issue-6 benchmarks: an `asyncnb serve` subprocess, deploys, RSS sampling.

The process helpers come from `bench.processes` (new session per server, SIGTERM then SIGKILL of the
process group), so every benchmark starts and stops servers the same way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.processes import (
    BIN_DIR,
    DEPLOY_TIMEOUT_S,
    HOST,
    REPO_ROOT,
    BenchError,
    Proc,
    child_env,
    cpu_model,
    free_port,
    http_get,
    run_deploy,
    start_process,
    wait_until,
)

ASYNCNB_BIN = BIN_DIR / "asyncnb"
KB = 1000
MB = 1000 * 1000
MIB = 1024 * 1024

__all__ = [
    "HOST",
    "KB",
    "MB",
    "MIB",
    "REPO_ROOT",
    "BenchError",
    "Gateway",
    "RssSampler",
    "api_status",
    "deadline",
    "deploy_api",
    "hard_kill",
    "log",
    "log_targets",
    "machine_meta",
    "percentiles_ms",
    "start_gateway",
    "target",
    "wait_api_state",
    "write_json",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the gateway


@dataclass
class Gateway:
    proc: Proc
    base: str
    storage: Path
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def url(self, api: str) -> str:
        return f"{self.base}/{api}"

    def rss(self) -> int:
        """Resident memory of the `asyncnb serve` process alone (Dask workers are children)."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the `asyncnb serve` process alone, all its threads."""
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)


def start_gateway(
    stack: contextlib.ExitStack,
    workdir: Path,
    *,
    workers: int,
    storage: Path | None = None,
    extra: Sequence[str] = (),
    name: str = "asyncnb-serve",
    startup_timeout: float = 120.0,
) -> Gateway:
    """`asyncnb serve` on a free loopback port with a local-disk journal; stopped by `stack`."""
    if not ASYNCNB_BIN.exists():
        raise BenchError(f"asyncnb CLI not found at {ASYNCNB_BIN}; install the package")
    if storage is None:
        storage = workdir / "storage"
        storage.mkdir(exist_ok=True)
    port = free_port()
    argv = [
        str(ASYNCNB_BIN), "serve", "--host", HOST, "--port", str(port),
        "--storage", f"file://{storage}", "--workers", str(workers), *extra,
    ]  # fmt: skip
    proc = start_process(stack, name, argv, workdir, child_env())
    gateway = Gateway(proc, f"http://{HOST}:{port}", storage, workdir)
    wait_until(
        f"{gateway.base}/healthz",
        lambda: http_get(f"{gateway.base}/healthz")[0] == 200,
        [proc],
        startup_timeout,
    )
    return gateway


def hard_kill(proc: Proc) -> None:
    """`kill -9` of the whole process group, as a crash would leave it: no shutdown runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(30)


def deploy_api(gateway: Gateway, target: str, name: str, **options: Any) -> None:
    """`asyncnb deploy FILE.py:Class --name NAME [--option value]`, as a user would."""
    argv = [str(ASYNCNB_BIN), "deploy", target, "--name", name, "--gateway", gateway.base]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", json.dumps(value)]
    run_deploy(argv, name)


def api_status(gateway: Gateway, api: str, timeout: float = 5.0) -> dict[str, Any]:
    code, raw = http_get(gateway.url(api), timeout=timeout)
    if code != 200:
        raise BenchError(f"GET /{api} answered {code}: {raw[:300]!r}")
    status: dict[str, Any] = json.loads(raw)
    return status


def wait_api_state(
    gateway: Gateway, api: str, *, workers: int = 0, timeout: float = DEPLOY_TIMEOUT_S
) -> None:
    """Until the API is ready and at least `workers` Dask workers can run it."""

    def ready() -> bool:
        status = api_status(gateway, api)
        if status.get("state") == "error":
            raise BenchError(f"API {api} failed to start: {status.get('error')}")
        return status.get("state") == "ready" and int(status.get("workers", 0)) >= workers

    wait_until(f"API {api} ready with {workers} workers", ready, [gateway.proc], timeout)


# --------------------------------------------------------------------------- memory


@dataclass
class RssSampler:
    """Peak RSS of some processes, sampled on a thread while the caller's event loop works.

    A thread (not a task) keeps sampling even when the caller's loop is busy streaming.
    """

    pids: dict[str, int]
    interval: float = 0.02
    baseline: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        procs = {name: psutil.Process(pid) for name, pid in self.pids.items()}
        self.baseline = {name: int(p.memory_info().rss) for name, p in procs.items()}
        self.peak = dict(self.baseline)
        self._thread = threading.Thread(target=self._run, args=(procs,), daemon=True)
        self._thread.start()
        return self

    def _run(self, procs: dict[str, psutil.Process]) -> None:
        while not self._stop.wait(self.interval):
            for name, proc in procs.items():
                with contextlib.suppress(psutil.Error):
                    self.peak[name] = max(self.peak[name], int(proc.memory_info().rss))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def growth(self, name: str) -> int:
        return self.peak[name] - self.baseline[name]


# --------------------------------------------------------------------------- results


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/mean/min/max in milliseconds (nearest rank, like bench.loadgen)."""
    from bench.loadgen import percentile

    if not samples_s:
        return {k: None for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")}
    return {
        "p50_ms": percentile(samples_s, 50) * 1000,
        "p90_ms": percentile(samples_s, 90) * 1000,
        "p99_ms": percentile(samples_s, 99) * 1000,
        "mean_ms": sum(samples_s) / len(samples_s) * 1000,
        "min_ms": min(samples_s) * 1000,
        "max_ms": max(samples_s) * 1000,
    }


def target(name: str, goal: str, measured: str, met: bool | None) -> dict[str, Any]:
    """One issue-6 target as the report shows it; `met` None when it could not be measured."""
    return {"name": name, "goal": goal, "measured": measured, "met": met}


def log_targets(tag: str, checks: Sequence[dict[str, Any]]) -> None:
    for check in checks:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[check["met"]]
        log(f"[{tag}] {verdict}: {check['name']}: {check['measured']} (target {check['goal']})")


def machine_meta(command: Sequence[str]) -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": " ".join(command),
    }


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    from bench.loadgen import json_safe

    text = json.dumps(json_safe(payload), indent=2) + "\n"
    if path is None:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    log(f"wrote {path}")


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """SIGALRM after `seconds`: a benchmark that hangs must still stop and clean up.

    The alarm raises in the main thread, so every ExitStack above it stops its servers.
    """

    def expired(signum: int, frame: Any) -> None:
        raise BenchError(f"{what} exceeded its {seconds:.0f} s time limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
