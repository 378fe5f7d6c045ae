"""The scheduler of the gateway's own LocalCluster stops mid-run: the gateway starts a new
cluster, requeues what the old one held, and every accepted workload still completes."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import distributed

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway

SCHEDULER_AT = re.compile(r"the gateway's Dask cluster: scheduler at (tcp://\S+)")
RESTARTED = re.compile(r"started a new Dask cluster: scheduler at (tcp://\S+)")


def processes_of(gateway: Gateway) -> set[str]:
    """The gateway's process group: itself, its worker processes, multiprocessing's helper."""
    assert gateway.proc is not None
    found = subprocess.run(["pgrep", "-g", str(gateway.proc.pid)], capture_output=True, text=True)
    return set(found.stdout.split())


def test_the_gateway_starts_a_new_cluster_when_its_scheduler_stops(tmp_path: Path) -> None:
    log = tmp_path / "gateway.log"
    gateway = Gateway(
        "--workers", "2", "--storage", str(tmp_path / "storage"), "--log-level", "info", log=log
    ).start()
    try:
        [address] = SCHEDULER_AT.findall(log.read_text())
        with Client(gateway.url) as client:
            api = client.deploy(predictors.Sleepy, "phoenix")
            gateway.wait_ready("phoenix")
            before = processes_of(gateway)
            workloads = [api.submit({"sleep": 0.05, "name": n}) for n in range(100)]
            # Some workloads finish, others are on the workers, the rest queued: then the
            # scheduler goes, as `Client(address).shutdown()` from anyone ends it.
            deadline = time.monotonic() + 30
            while sum(w.status() == "completed" for w in workloads[:10]) < 2:
                assert time.monotonic() < deadline, "no workload completed"
                time.sleep(0.05)
            unfinished = api.status()
            assert unfinished["queue_depth"] + unfinished["in_progress"] > 0
            with distributed.Client(address, timeout=10) as outsider:
                outsider.shutdown()
            results = api.gather(workloads, timeout=60, progress=False)
            assert sorted(r["name"] for r in results) == list(range(100))
            gateway.wait_ready("phoenix", timeout=30)
            after = api.submit({"sleep": 0, "name": "after"}).result(timeout=30)
            assert after["name"] == "after"
            # the old cluster's 2 worker processes are gone, 2 new ones run in their place
            deadline = time.monotonic() + 20
            now = processes_of(gateway)
            while len(now) != len(before) or len(before - now) != 2:
                assert time.monotonic() < deadline, f"processes before {before}, now {now}"
                time.sleep(0.2)
                now = processes_of(gateway)
        text = log.read_text()
        assert "the Dask cluster's scheduler stopped: starting a new cluster" in text
        assert "the Dask scheduler was replaced: requeueing its chunks" in text
        [new_address] = RESTARTED.findall(text)
        assert new_address != address
    finally:
        gateway.stop()
