"""Faults under load with real processes: the Dask scheduler restarts mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import BIN, Gateway, free_port, stop_group


def _dask(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "dask"), *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class WorkerSupervisor:
    """Dask workers exit when their scheduler goes away; in production their supervisor
    (Kubernetes, systemd, a batch system) starts them again. This thread plays that part."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log = args, log
        self.proc = _dask(args, log)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            if self.proc.poll() is not None:
                self.proc = _dask(self.args, self.log)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        stop_group(self.proc)


def scheduler_gateway(address: str, tmp_path: Path) -> Gateway:
    """A gateway (not started) on the Dask scheduler at `address`, logging to gateway.log."""
    return Gateway(
        "--scheduler",
        address,
        "--storage",
        str(tmp_path / "storage"),
        "--log-level",
        "info",
        log=tmp_path / "gateway.log",
    )


def test_scheduler_restart_requeues_and_finishes(tmp_path: Path) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler_args = ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    scheduler = _dask(scheduler_args, tmp_path / "scheduler.log")
    time.sleep(2)
    workers = WorkerSupervisor(
        [
            "worker",
            address,
            "--nthreads",
            "2",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
            "--death-timeout",
            "60",
        ],
        tmp_path / "worker.log",
    )
    gateway = scheduler_gateway(address, tmp_path).start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.Sleepy, "survivor")
            gateway.wait_ready("survivor")
            workloads = [api.submit({"sleep": 0.05, "name": n}) for n in range(200)]
            time.sleep(1.0)
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait(10)
            time.sleep(1.0)
            scheduler = _dask(scheduler_args, tmp_path / "scheduler.log")
            results = api.gather(workloads, timeout=120, progress=False)
            assert sorted(r["name"] for r in results) == list(range(200))
            # the API reads its workers from a snapshot the gateway refreshes: on a loaded
            # machine it can say waiting_for_resources a moment after the last result
            gateway.wait_ready("survivor", timeout=30)
            assert api.submit({"sleep": 0, "name": "after"}).result(timeout=60)["name"] == "after"
        assert "the Dask scheduler was replaced" in (tmp_path / "gateway.log").read_text()
    finally:
        gateway.stop()
        workers.stop()
        stop_group(scheduler)
