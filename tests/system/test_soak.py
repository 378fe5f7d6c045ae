"""The short chaos soak (bench/soak.py): 60 s of load while each fault strikes at least once.

Two `asyncnb serve --standby` gateways on one moto_server S3 prefix, an external scheduler and
two `dask worker` processes; a worker, the active gateway and the scheduler are killed with -9
and S3 is stopped with SIGSTOP. Every accepted workload must complete once with its result,
and a workload runs twice only when a fault struck while it ran.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos import FAULT_KINDS
from bench.processes import REPO_ROOT, child_env


@pytest.mark.timeout(900)
def test_short_soak_loses_nothing_while_every_fault_strikes(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "bench.soak", "--duration", "60", "--every", "4:8"]
    argv += ["--seed", "17", "--json", str(out), "--workdir", str(tmp_path / "run")]
    done = subprocess.run(argv, cwd=REPO_ROOT, env=child_env(), capture_output=True, timeout=900)
    print(done.stderr.decode(errors="replace")[-4000:])
    result = json.loads(out.read_text())
    report = result["report"]
    print(json.dumps({k: v for k, v in report.items() if k != "fault_log"}, indent=1))
    assert result["problems"] == [], result["problems"]
    assert done.returncode == 0
    assert set(report["faults"]) == set(FAULT_KINDS)
    assert all(f["not_recovered"] == 0 for f in report["faults"].values())
    assert report["accepted"] >= 200
    assert report["completed"] == report["accepted"] == report["records_in_storage"]
    assert report["lost"] == report["failed"] == report["queue_entries_left"] == 0
    assert report["duplicates"] == report["duplicates_at_a_fault"]
    # the clients rode out the faults: some submits had to be retried elsewhere
    assert report["submit_attempts"] > report["accepted"]
