"""GPU check: a PyTorch model behind `predict_batch` on GPU workers; batch 1 vs 32.

    python -m bench.gpu_check [-n 2000] [--allow-cpu]

Needs PyTorch; meant for a CUDA machine (one worker per GPU, pinned by the local cluster).
Prints workloads/s at max_batch_size 1 and 32 and the GPU memory each worker used. With
`--allow-cpu` it runs on CPU workers that advertise a GPU, to check the script itself.
Not part of CI: run it when a GPU machine is available and record the table in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import asyncnb


class MLP:
    """A 3-layer MLP (4096 wide): enough arithmetic for batching to matter on a GPU."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        width = int(config.get("width", 4096))
        torch.manual_seed(0)
        self.model = (
            torch.nn.Sequential(
                torch.nn.Linear(256, width),
                torch.nn.ReLU(),
                torch.nn.Linear(width, width),
                torch.nn.ReLU(),
                torch.nn.Linear(width, 16),
            )
            .to(self.device)
            .eval()
        )
        if self.device == "cuda":
            self.model = self.model.half()

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        torch = self.torch
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        with torch.inference_mode():
            x = torch.tensor([p["x"] for p in payloads], dtype=dtype, device=self.device)
            y = self.model(x).float().argmax(dim=1).tolist()
        memory = torch.cuda.max_memory_allocated() if self.device == "cuda" else 0
        return [
            {
                "label": label,
                "device": self.device,
                "pid": os.getpid(),
                "gpu_memory": memory,
                "batch": len(payloads),
            }
            for label in y
        ]


def measure(batch: int, n: int) -> dict[str, Any]:
    api = asyncnb.deploy(MLP, f"mlp-b{batch}", gpu=1, max_batch_size=batch, max_concurrency=1)
    deadline = time.time() + 300
    while api.status()["state"] != "ready":
        if time.time() > deadline or api.status()["state"] == "error":
            raise SystemExit(f"mlp-b{batch} did not start: {api.status().get('error')}")
        time.sleep(0.2)
    payloads = [{"x": [((i * 7 + j) % 13) / 13 for j in range(256)]} for i in range(n)]
    api.gather(api.submit_many(payloads[:64], progress=False), progress=False)  # warm up
    started = time.perf_counter()
    results = api.gather(api.submit_many(payloads, progress=False), progress=False, timeout=600)
    elapsed = time.perf_counter() - started
    memory: dict[int, int] = {}
    for r in results:
        memory[r["pid"]] = max(memory.get(r["pid"], 0), r["gpu_memory"])
    return {
        "batch": batch,
        "per_s": n / elapsed,
        "mean_batch": sum(r["batch"] for r in results) / len(results),
        "device": results[0]["device"],
        "workers": len(memory),
        "memory_mib": [m / 2**20 for m in memory.values()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--allow-cpu", action="store_true")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        raise SystemExit("bench/gpu_check.py needs PyTorch (pip install torch)") from None
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("no CUDA device visible; pass --allow-cpu to check the script on CPU")
    if torch.cuda.is_available():
        print(f"GPUs: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
        asyncnb.start_gateway()
    else:
        asyncnb.start_gateway(workers=1, worker_resources={"GPU": 1})
    rows = [measure(batch, args.n) for batch in (1, 32)]
    print(
        "\n| max_batch_size | mean batch | workloads/s | device | workers "
        "| GPU memory per worker (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        memory = ", ".join(f"{m:.0f}" for m in row["memory_mib"])
        print(
            f"| {row['batch']} | {row['mean_batch']:.1f} | {row['per_s']:.0f} | {row['device']} "
            f"| {row['workers']} | {memory} |"
        )
    print(f"\nbatch 32 / batch 1: {rows[1]['per_s'] / rows[0]['per_s']:.1f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
