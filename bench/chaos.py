"""The chaos soak's system under test, and the faults it suffers.

Everything is a real process on loopback, each in a session of its own so that a kill reaches
what it forked:

- `moto_server` as S3, the storage `s3://soak/run`;
- a `dask scheduler` on a fixed port, so that a restarted one is found at the same address;
- `dask worker` processes (each a Nanny and its worker process), brought back when they exit;
- two `asyncnb serve --scheduler ... --standby` gateways on fixed ports: one holds the storage's
  lease, the other stands by.

`Faults` injects one fault of a kind and undoes it: `worker` (kill -9 of a worker process that
is running a predict; its Nanny starts a new one), `gateway` (kill -9 of the active gateway; the
standby takes over and the killed one is started again as the new standby), `scheduler` (kill -9,
then a new scheduler on the same port a second later) and `s3` (SIGSTOP of moto_server for a
few seconds, then SIGCONT).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.processes import BIN_DIR, HOST, REPO_ROOT, BenchError, child_env, free_port, http_get

FAULT_KINDS = ("worker", "gateway", "scheduler", "s3")
BUCKET, PREFIX = "soak", "run"
AWS = {
    "AWS_ACCESS_KEY_ID": "soak",
    "AWS_SECRET_ACCESS_KEY": "soak",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Service:
    """A process that may be killed and started again with the same command line and log."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log, self.env = name, list(argv), log, env
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Service:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def kill9(self) -> None:
        if self.popen is None:
            return
        self.signal_group(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL of the group: what this service forked goes with it."""
        if self.popen is None:
            return
        self.signal_group(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill9()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def wait_for(
    what: str, probe: Callable[[], bool], timeout: float, services: Sequence[Service] = ()
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except OSError:
            pass
        for service in services:
            if not service.alive():
                raise BenchError(f"{service.name} exited:\n{service.log_tail()}")
        time.sleep(0.1)
    tails = "\n".join(f"--- {s.name}\n{s.log_tail()}" for s in services)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


@dataclass
class System:
    workdir: Path
    workers: int = 2
    threads: int = 2
    lease_ttl: float = 6.0
    moto: Service | None = None
    scheduler: Service | None = None
    worker_pool: list[Service] = field(default_factory=list)
    gateways: list[Service] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    endpoint: str = ""
    _supervising: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    worker_restarts: int = 0

    @property
    def storage(self) -> str:
        return f"s3://{BUCKET}/{PREFIX}"

    def env(self) -> dict[str, str]:
        return child_env({**AWS, "AWS_ENDPOINT_URL": self.endpoint})

    def start(self) -> System:
        logs = self.workdir
        port = free_port()
        self.endpoint = f"http://{HOST}:{port}"
        moto_argv = [str(BIN_DIR / "moto_server"), "-H", HOST, "-p", str(port)]
        self.moto = Service("moto_server", moto_argv, logs / "moto.log", self.env()).start()
        wait_for("moto_server", lambda: http_get(self.endpoint)[0] < 500, 60, [self.moto])
        self.s3().create_bucket(Bucket=BUCKET)

        scheduler_port = free_port()
        self.scheduler_address = f"tcp://{HOST}:{scheduler_port}"
        scheduler_argv = [
            str(BIN_DIR / "dask"), "scheduler", "--host", HOST,
            "--port", str(scheduler_port), "--no-dashboard",
        ]  # fmt: skip
        self.scheduler = Service("scheduler", scheduler_argv, logs / "scheduler.log", self.env())
        self.scheduler.start()
        wait_for("the scheduler", lambda: _listening(scheduler_port), 60, [self.scheduler])

        worker_argv = [
            str(BIN_DIR / "dask"), "worker", self.scheduler_address, "--host", HOST,
            "--nthreads", str(self.threads), "--no-dashboard", "--death-timeout", "60",
        ]  # fmt: skip
        self.worker_pool = [
            Service(f"worker-{i}", worker_argv, logs / f"worker-{i}.log", self.env()).start()
            for i in range(self.workers)
        ]
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

        for i in range(2):
            gateway_port = free_port()
            argv = [
                str(BIN_DIR / "asyncnb"), "serve", "--host", HOST, "--port", str(gateway_port),
                "--scheduler", self.scheduler_address, "--storage", self.storage,
                "--standby", "--lease-ttl", str(self.lease_ttl), "--log-level", "info",
            ]  # fmt: skip
            log = logs / f"gateway-{'ab'[i]}.log"
            self.gateways.append(Service(f"gateway-{'ab'[i]}", argv, log, self.env()).start())
            self.urls.append(f"http://{HOST}:{gateway_port}")
            if i == 0:  # the first takes the lease; the second then stands by
                wait_for("the first gateway", lambda: self.active() == 0, 120, self.gateways)
        wait_for("the standby", lambda: self.standing_by() == [1], 120, self.gateways)
        return self

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        )

    def stored_keys(self, prefix: str) -> list[str]:
        s3 = self.s3()
        keys: list[str] = []
        pages = s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}"
        )
        for page in pages:
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return keys

    def _supervise(self) -> None:
        """Bring back `dask worker` processes that exit (after their scheduler went away)."""
        while not self._supervising.wait(0.5):
            for worker in self.worker_pool:
                if not worker.alive():
                    worker.start()
                    self.worker_restarts += 1

    def active(self) -> int | None:
        """Index of the gateway that answers /healthz 200, if any."""
        for i, url in enumerate(self.urls):
            with contextlib.suppress(OSError):
                if http_get(f"{url}/healthz", timeout=2.0)[0] == 200:
                    return i
        return None

    def standing_by(self) -> list[int]:
        found: list[int] = []
        for i, url in enumerate(self.urls):
            with contextlib.suppress(OSError):
                code, body = http_get(f"{url}/healthz", timeout=2.0)
                if code == 503 and b"standby" in body:
                    found.append(i)
        return found

    def worker_processes(self) -> list[psutil.Process]:
        """The Dask worker processes (the Nannies' children), not the Nannies."""
        found: list[psutil.Process] = []
        for service in self.worker_pool:
            if not service.alive():
                continue
            with contextlib.suppress(psutil.Error):
                nanny = psutil.Process(service.pid)
                found.extend(
                    child
                    for child in nanny.children(recursive=True)
                    if "resource_tracker" not in " ".join(child.cmdline())
                )
        return found

    def stop(self) -> None:
        self._supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for service in [*self.gateways, *self.worker_pool, self.scheduler, self.moto]:
            if service is not None:
                service.stop()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class Fault:
    kind: str
    started: float  # time.time()
    detail: str
    recovered: float | None = None  # when a probe workload completed again


class Faults:
    def __init__(
        self, system: System, rng: random.Random, running_pids: Callable[[], list[int]]
    ) -> None:
        self.system = system
        self.rng = rng
        # pids that started a predict and have not ended it (from the executions log)
        self.running_pids = running_pids

    def inject(self, kind: str) -> Fault:
        return getattr(self, f"_{kind}")()

    def _worker(self) -> Fault:
        # a worker in the middle of a predict, if one is within a few seconds
        for _ in range(30):
            processes = self.system.worker_processes()
            busy = set(self.running_pids())
            chosen = [p for p in processes if p.pid in busy]
            if chosen:
                break
            time.sleep(0.1)
        chosen = chosen or processes
        if not chosen:
            return Fault("worker", time.time(), "no worker process to kill")
        victim = self.rng.choice(chosen)
        started = time.time()
        with contextlib.suppress(psutil.Error):
            victim.kill()
        running = "running a predict" if victim.pid in busy else "idle"
        return Fault("worker", started, f"kill -9 of worker pid {victim.pid} ({running})")

    def _gateway(self) -> Fault:
        system = self.system
        active = system.active()
        if active is None:
            return Fault("gateway", time.time(), "no active gateway to kill")
        gateway = system.gateways[active]
        started = time.time()
        gateway.kill9()
        gateway.start()  # on the same port, as the new standby
        return Fault("gateway", started, f"kill -9 of the active {gateway.name}, started again")

    def _scheduler(self) -> Fault:
        scheduler = self.system.scheduler
        assert scheduler is not None
        started = time.time()
        scheduler.kill9()
        time.sleep(1.0)
        scheduler.start()
        return Fault("scheduler", started, "kill -9 of the scheduler, a new one 1 s later")

    def _s3(self) -> Fault:
        moto = self.system.moto
        assert moto is not None
        pause = self.rng.uniform(3.0, 5.0)
        started = time.time()
        moto.signal_group(signal.SIGSTOP)
        time.sleep(pause)
        moto.signal_group(signal.SIGCONT)
        return Fault("s3", started, f"SIGSTOP of moto_server for {pause:.1f} s")
