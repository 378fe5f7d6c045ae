"""Latency at light load: one workload at a time through asyncnb, against raw Dask.

    python -m bench.latency [-n 300] [--pauses 0,50] [--quick] [--json out.json]

- **asyncnb**: `asyncnb serve --workers 2` with the no-op predictor; each workload is one
  `POST /noop` with `Prefer: wait=30`, answered `200` once it completed, so no polling adds
  to the figure. The next one is sent when the answer is in (no concurrency).
- **Dask**: the same no-op on a `LocalCluster` with 2 worker processes, started in this
  process: `client.submit(noop, x, pure=False).result()`, one at a time.
- **HTTP floor**: `GET /healthz` on the same gateway, for how much of the gap is HTTP alone.

The asyncnb figure includes what Dask costs (the gateway submits a Dask task per chunk), so
the difference of the medians is the gateway's own overhead per workload. asyncnb's time is
also split by the timestamps of each status record (accepted → started → finished → answer).

Each measurement runs twice by default: back to back, and with 50 ms of idle time before each
workload (`--pauses`). Dask's client batches what it sends to the scheduler and sends at most
once per 10 ms, so back-to-back submits wait out the rest of that interval, in asyncnb as in
raw Dask; after an idle gap a submit goes out at once, which shows the actual round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    REPO_ROOT,
    BenchError,
    Gateway,
    deadline,
    deploy_api,
    log,
    log_targets,
    machine_meta,
    percentiles_ms,
    start_gateway,
    target,
    wait_api_state,
    write_json,
)
from bench.loadgen import check_loopback

API = "noop"
PREDICTOR = "bench/noop_predictor.py:NoOp"
WORKERS = 2
THREADS_PER_WORKER = 4  # what `asyncnb serve` gives each LocalCluster worker by default
OVERHEAD_TARGET_MS = 5.0


def noop(payload: Any) -> Any:
    """What NoOp.predict does, as a plain function for Dask."""
    return payload


# --------------------------------------------------------------------------- asyncnb


def stamp(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Phases:
    """Where one workload's time went, from the timestamps of its status record."""

    total: list[float] = field(default_factory=list)
    to_start: list[float] = field(default_factory=list)  # accepted → chunk started on a worker
    running: list[float] = field(default_factory=list)  # started → predict finished
    to_answer: list[float] = field(default_factory=list)  # finished → answer at the client

    def add(self, elapsed: float, answered: float, record: dict[str, Any]) -> None:
        created, started = stamp(record["created_at"]), stamp(record["started_at"])
        finished = stamp(record["finished_at"])
        self.total.append(elapsed)
        self.to_start.append(started - created)
        self.running.append(finished - started)
        self.to_answer.append(answered - finished)

    def summary(self) -> dict[str, Any]:
        return {
            **percentiles_ms(self.total),
            "phases": {
                "accepted_to_started": percentiles_ms(self.to_start),
                "started_to_finished": percentiles_ms(self.running),
                "finished_to_answer": percentiles_ms(self.to_answer),
            },
        }


async def sequential_posts(url: str, n: int, warmup: int, pause: float) -> Phases:
    check_loopback(url)
    samples = Phases()
    headers = {"Prefer": "wait=30"}
    # One connection, kept alive: a fresh TCP handshake per request is not the gateway's cost.
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        for i in range(warmup + n):
            await asyncio.sleep(pause)
            started = time.perf_counter()
            async with session.post(url, json={"x": i}, headers=headers) as resp:
                body = await resp.json(content_type=None)
            elapsed = time.perf_counter() - started
            answered = time.time()
            if resp.status != 200 or body.get("status") != "completed":
                raise BenchError(f"POST answered {resp.status}: {str(body)[:300]}")
            if i >= warmup:
                samples.add(elapsed, answered, body)
    return samples


async def sequential_gets(url: str, n: int) -> list[float]:
    samples: list[float] = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(n):
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            samples.append(time.perf_counter() - started)
    return samples


def measure_asyncnb(n: int, warmup: int, pauses: Sequence[float]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        gateway: Gateway = start_gateway(stack, Path(tmp), workers=WORKERS)
        deploy_api(gateway, PREDICTOR, API)
        wait_api_state(gateway, API, workers=WORKERS)
        runs = {}
        for pause in pauses:
            log(f"[latency] asyncnb: {n} POSTs with Prefer: wait, {pause * 1000:g} ms apart")
            posts = asyncio.run(sequential_posts(gateway.url(API), n, warmup, pause))
            runs[pause] = posts.summary()
        gets = asyncio.run(sequential_gets(f"{gateway.base}/healthz", n))
    return {"runs": runs, "http_floor": percentiles_ms(gets)}


# --------------------------------------------------------------------------- raw Dask


def measure_dask(n: int, warmup: int, pauses: Sequence[float]) -> dict[float, Any]:
    from distributed import Client, LocalCluster

    # Worker processes import this module to find `noop`; they inherit the environment.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
    )
    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=THREADS_PER_WORKER,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(WORKERS, timeout=120)
        runs = {}
        for pause in pauses:
            log(f"[latency] Dask: {n} x client.submit(...).result(), {pause * 1000:g} ms apart")
            runs[pause] = percentiles_ms(dask_round_trips(client, n, warmup, pause))
    return runs


def dask_round_trips(client: Any, n: int, warmup: int, pause: float) -> list[float]:
    samples: list[float] = []
    for i in range(warmup + n):
        time.sleep(pause)
        started = time.perf_counter()
        value = client.submit(noop, {"x": i}, pure=False).result()
        elapsed = time.perf_counter() - started
        if value != {"x": i}:
            raise BenchError(f"Dask returned {value!r}")
        if i >= warmup:
            samples.append(elapsed)
    return samples


# --------------------------------------------------------------------------- the run


def run(opts: argparse.Namespace) -> dict[str, Any]:
    pauses = [ms / 1000 for ms in opts.pauses]
    gateway = measure_asyncnb(opts.n, opts.warmup, pauses)
    dask = measure_dask(opts.n, opts.warmup, pauses)
    runs = []
    for pause in pauses:
        ours, theirs = gateway["runs"][pause], dask[pause]
        runs.append(
            {
                "pause_ms": pause * 1000,
                "asyncnb": ours,
                "dask": theirs,
                "overhead_p50_ms": ours["p50_ms"] - theirs["p50_ms"],
            }
        )
        log_run(runs[-1])
    floor = gateway["http_floor"]
    log(f"[latency] HTTP floor (GET /healthz): p50 {floor['p50_ms']:.2f} ms")
    return {"n": opts.n, "workers": WORKERS, "runs": runs, "http_floor": floor}


def log_run(row: dict[str, Any]) -> None:
    log(f"[latency] {row['pause_ms']:g} ms between workloads:")
    for name in ("asyncnb", "dask"):
        found = row[name]
        log(f"[latency]   {name:>8}: p50 {found['p50_ms']:.2f} ms, p99 {found['p99_ms']:.2f} ms")
    for phase, found in row["asyncnb"]["phases"].items():
        log(f"[latency]     {phase}: p50 {found['p50_ms']:.2f} ms, p99 {found['p99_ms']:.2f} ms")


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for row in results["runs"]:
        overhead = row["overhead_p50_ms"]
        spacing = "back to back" if not row["pause_ms"] else f"{row['pause_ms']:g} ms apart"
        checks.append(
            target(
                f"light-load latency p50 above raw Dask ({spacing})",
                f"<= {OVERHEAD_TARGET_MS:g} ms",
                f"{overhead:+.2f} ms ({row['asyncnb']['p50_ms']:.2f} vs "
                f"{row['dask']['p50_ms']:.2f} ms)",
                overhead <= OVERHEAD_TARGET_MS,
            )
        )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("-n", type=int, default=None, help="measured workloads (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured workloads first")
    parser.add_argument(
        "--pauses",
        type=lambda t: [float(p) for p in t.split(",")],
        default=[0.0, 50.0],
        help="ms of idle time before each workload, one run per value (default 0,50)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for it all")
    parser.add_argument("--quick", action="store_true", help="n=60")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    if args.n is None:
        args.n = 60 if args.quick else 300
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    meta = machine_meta(["python -m bench.latency", *raw])
    try:
        with deadline(args.timeout, "bench.latency"):
            results = run(args)
    except BenchError as exc:
        log(f"[latency] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    checks = evaluate(results)
    log_targets("latency", checks)
    write_json(args.json, {"meta": meta, "results": results, "targets": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
