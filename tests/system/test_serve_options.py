"""Gateway configurations: GPU resources, memory:// storage, result expiry."""

from __future__ import annotations

import time
from pathlib import Path

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway


def test_gpu_apis_run_on_workers_advertising_gpu(tmp_path: Path) -> None:
    gateway = Gateway(
        "--storage", str(tmp_path), "--workers", "1", "--worker-resources", "GPU=1"
    ).start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.Batched, "gpu-batch", gpu=1, max_batch_size=4)
            gateway.wait_ready("gpu-batch")
            results = [
                w.result(timeout=30)
                for w in api.submit_many([{"x": i} for i in range(10)], progress=False)
            ]
            assert [r["x"] for r in results] == [2 * i for i in range(10)]
            assert api.status()["workers"] == 1
            assert api.status()["options"]["gpu"] == 1
            greedy = client.deploy(predictors.Echo, "two-gpus", gpu=2)
            workload = greedy.submit({"x": 1})
            time.sleep(1.5)
            status = greedy.status()
            assert status["workers"] == 0 and status["state"] == "deploying"
            assert workload.status() == "in_queue"  # accepted and kept, not lost or failed
    finally:
        gateway.stop()


def test_memory_storage_runs_workers_in_process() -> None:
    gateway = Gateway("--storage", "memory://asyncnb-test", "--workers", "2").start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.Raw, "mem")
            gateway.wait_ready("mem")
            assert api.submit(b"abc").result(timeout=30) == b"cba"
            assert api.submit({"repeat": 2_000_000}).result(timeout=30) == b"x" * 2_000_000
    finally:
        gateway.stop()


def test_results_expire_after_result_ttl(tmp_path: Path) -> None:
    gateway = Gateway("--storage", str(tmp_path), "--workers", "1").start()
    try:
        with Client(gateway.url) as client, gateway.client() as http:
            client.deploy(predictors.Echo, "short", result_ttl=1)
            gateway.wait_ready("short")
            done = http.post("/short", json={}, headers={"Prefer": "wait=20"}).json()
            assert done["status"] == "completed"
            assert http.get(f"/short/{done['id']}").status_code == 200
            time.sleep(1.5)
            gone = http.get(f"/short/{done['id']}")
            assert gone.status_code == 404 and "not found" in gone.json()["detail"]
    finally:
        gateway.stop()
