"""Autoscaling a LocalCluster on queue depth, GPU workers, and resource waits."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from asyncnb.client import Client

from ..support import predictors
from ..support.processes import Gateway


def wait_until(probe, timeout: float = 60, every: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"condition not met within {timeout} s")


def test_scale_from_zero_to_max_and_back_to_zero(tmp_path: Path) -> None:
    gateway = Gateway(
        "--storage",
        str(tmp_path),
        "--workers",
        "0",
        "--min-workers",
        "0",
        "--max-workers",
        "2",
        "--autoscale-interval",
        "1",
    ).start()
    try:
        with Client(gateway.url) as client, gateway.client() as http:
            api = client.deploy(
                predictors.Sleepy,
                "elastic",
                min_replicas=0,
                max_replicas=2,
                window=2,
                target_in_flight=1,
                upscale_stabilization_period=0,
                downscale_stabilization_period=3,
            )
            idle = http.get("/elastic").json()
            assert idle["workers"] == 0 and idle["state"] == "deploying"
            started = time.monotonic()
            first = api.submit({"sleep": 0})
            first.result(timeout=90)
            from_zero = time.monotonic() - started
            print(f"scale from zero: first workload completed after {from_zero:.1f} s")
            burst = [api.submit({"sleep": 1.0}) for _ in range(12)]
            wait_until(lambda: http.get("/elastic").json()["workers"] == 2, timeout=60)
            api.gather(burst, timeout=120, progress=False)
            drained = wait_until(
                lambda: (s := http.get("/elastic").json())["workers"] == 0 and s, timeout=60
            )
        events = drained["scaling_events"]
        targets = [e["to"] for e in events]
        assert 2 in targets and targets[-1] == 0, events
        assert all({"time", "from", "to", "reason"} <= e.keys() for e in events)
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert 'asyncnb_scaling_events_total{api="elastic"}' in metrics
    finally:
        gateway.stop()


def test_gpu_detection_pins_one_worker_per_device(tmp_path: Path) -> None:
    gateway = Gateway("--storage", str(tmp_path), env={"CUDA_VISIBLE_DEVICES": "0,1"}).start()
    try:
        with Client(gateway.url) as client:
            api = client.deploy(predictors.WhichGPU, "pinned", gpu=1, max_concurrency=1)
            gateway.wait_ready("pinned")
            results = api.gather(
                [api.submit({"sleep": 0.3}) for _ in range(8)], timeout=60, progress=False
            )
            assert {r["device"] for r in results} == {"0", "1"}
            assert api.status()["workers"] == 2
    finally:
        gateway.stop()


def test_api_waits_for_resources_no_worker_offers(tmp_path: Path) -> None:
    gateway = Gateway(
        "--storage", str(tmp_path), "--workers", "1", "--autoscale-interval", "1"
    ).start()
    try:
        with Client(gateway.url) as client, gateway.client() as http:
            api = client.deploy(predictors.Echo, "needs-gpu", gpu=1)
            workload = api.submit({"x": 1})
            status = wait_until(
                lambda: (
                    (s := http.get("/needs-gpu").json())["state"] == "waiting_for_resources" and s
                ),
                timeout=30,
            )
            assert "GPU" in status["waiting_for"]
            assert workload.status() == "in_queue"
            assert client.deploy(predictors.Echo, "cpu-only").submit({"x": 2}).result(30)
    finally:
        gateway.stop()
