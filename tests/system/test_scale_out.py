"""Production shape: `dask scheduler`, two `dask worker --resources GPU=1`, moto_server as S3,
and `asyncnb serve --scheduler ... --storage s3://...`, all separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import BIN, Gateway, MotoServer, stop_group


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]], MotoServer]]:
    moto = MotoServer().start()
    moto.make_bucket("scale-out")
    scheduler_file = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                str(BIN / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            moto.env,
            tmp_path / "scheduler.log",
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for n in range(2):
        procs.append(
            _start(
                [
                    str(BIN / "dask"),
                    "worker",
                    address,
                    "--resources",
                    "GPU=1",
                    "--nthreads",
                    "2",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--name",
                    f"gpu-worker-{n}",
                ],
                moto.env,
                tmp_path / f"worker{n}.log",
            )
        )
    yield address, procs, moto
    for proc in procs:
        stop_group(proc)
    moto.stop()


def test_hundred_workloads_on_remote_workers_survive_a_worker_kill(
    cluster: tuple[str, list[subprocess.Popen[bytes]], MotoServer],
) -> None:
    address, procs, moto = cluster
    gateway = Gateway(
        "--scheduler", address, "--storage", "s3://scale-out/prod", env=moto.env
    ).start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.WhichGPU, "gpu-api", gpu=1)
            deadline = time.monotonic() + 60
            while api.status()["workers"] < 2:
                assert time.monotonic() < deadline, api.status()
                time.sleep(0.2)
            gateway.wait_ready("gpu-api")
            workloads = [api.submit({"sleep": 0.05, "n": n}) for n in range(100)]
            time.sleep(1.0)
            os.killpg(procs[1].pid, signal.SIGKILL)  # one whole `dask worker` (nanny included)
            results = api.gather(workloads, timeout=180, progress=False)
            assert len(results) == 100
            status = api.status()
            assert status["completed"] == 100 and status["failed"] == 0
            assert status["desired_workers"] >= 1  # published for an external scaler
        keys = set(moto.keys("scale-out", "prod/"))
        for workload in workloads:
            assert f"prod/workloads/gpu-api/{workload.id}/status.json" in keys
        assert not [k for k in keys if k.startswith("prod/queue/")]
    finally:
        gateway.stop()


def test_local_storage_is_refused_for_a_remote_scheduler(tmp_path: Path) -> None:
    for storage, text in ((str(tmp_path), "cannot read"), ("memory://x", "memory://")):
        # 192.0.2.0/24 is reserved for documentation: the check happens before any connection
        result = subprocess.run(
            [
                str(BIN / "asyncnb"),
                "serve",
                "--port",
                "0",
                "--scheduler",
                "tcp://192.0.2.1:8786",
                "--storage",
                storage,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0
        assert result.stderr.startswith("error: ") and text in result.stderr
        assert result.stderr.strip().count("\n") == 0
