"""Cost of a growing queue: submit rate and gateway memory at 1k/10k/100k queued workloads.

    python -m bench.queue_cost [--levels 1000,10000,100000] [--quick] [--json out.json]

`asyncnb serve --workers 0 --min-workers 0 --max-workers 0` runs no Dask worker and may start
none, so nothing drains the queue: every accepted workload stays queued in the gateway. The
no-op API is deployed (it stays `deploying`, which still accepts work) and 64 aiohttp
submitters POST small JSON workloads until each level is reached. At each level we record

- the submit rate of the last tenth of the submits before the level, at least `--window` of
  them (warm, steady state). A tenth keeps a deep queue's rare costs in proportion: at 100k
  queued one garbage collection over the queue took 170 ms, once in the whole fill, which a
  window of 10,000 submits weighs as the long run does and one of 1,000 holds or misses;
- the RSS of the `asyncnb serve` process alone, as growth per queued workload relative to the
  empty queue.

The fill is repeated `--repeats` times, each on a new gateway with empty storage: on a shared
2-core VM the wall-clock rate drifts by tens of percent within seconds, whatever the queue
depth (the 1k level's window lasts ~0.2 s), while the gateway's CPU time per submit moves
much less. Each level reports the median over the repeats, with the CPU time per submit
beside the rate, and the target is judged on the median of the per-fill rate ratios (largest
level / smallest), since both rates of one ratio come from the same gateway.

After the last fill the gateway is killed with SIGKILL and restarted on the same storage, and
we time how long it takes until `GET /noop` reports every workload queued again (the journal
replay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    BenchError,
    Gateway,
    api_status,
    deadline,
    deploy_api,
    hard_kill,
    log,
    log_targets,
    machine_meta,
    start_gateway,
    target,
    write_json,
)
from bench.loadgen import check_loopback, percentile

API = "noop"
WARMUP_API = "warmup"
PREDICTOR = "bench/noop_predictor.py:NoOp"
NO_WORKERS = ("--min-workers", "0", "--max-workers", "0")
DEFAULT_LEVELS = (1_000, 10_000, 100_000)
QUICK_LEVELS = (1_000, 3_000, 10_000)
RATE_TARGET = 0.8  # submit rate at the largest level, relative to the smallest
BYTES_TARGET = 2048  # gateway RSS per queued small workload


@dataclass
class Level:
    depth: int
    window: int
    submit_per_s: float
    batch_per_s: float
    # Gateway CPU time per submit over the same window: what one submit costs the gateway,
    # unlike wall time, which drifts with the VM's neighbours.
    cpu_us_per_submit: float
    submit_p50_ms: float
    submit_p99_ms: float
    submit_max_ms: float
    rss_bytes: int
    rss_growth_bytes: int
    bytes_per_workload: float
    phase_s: float


# --------------------------------------------------------------------------- submitting


@dataclass
class Batch:
    """One batch of submits: completion times and latencies in completion order, and the
    gateway's CPU time read every `CPU_EVERY` completions, by completion index."""

    done: list[float]
    latency: list[float]
    cpu: dict[int, float]


CPU_EVERY = 250


async def submit_batch(
    session: aiohttp.ClientSession,
    url: str,
    first: int,
    count: int,
    concurrency: int,
    cpu_seconds: Callable[[], float] | None = None,
) -> Batch:
    """POST `count` workloads with `concurrency` lanes."""
    batch = Batch([], [], {})
    indices = iter(range(first, first + count))

    async def lane() -> None:
        for i in indices:  # the lanes share one iterator: each index is sent once
            sent = time.perf_counter()
            async with session.post(url, json={"x": i}) as resp:
                body = await resp.read()
                if resp.status != 202:
                    raise BenchError(f"POST {url} answered {resp.status}: {body[:200]!r}")
            batch.done.append(time.perf_counter())
            batch.latency.append(batch.done[-1] - sent)
            if cpu_seconds is not None and len(batch.done) % CPU_EVERY == 0:
                batch.cpu[len(batch.done) - 1] = cpu_seconds()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return batch


def steady_window(count: int, window: int, edge: int) -> tuple[int, int]:
    """Indices [start, end] of the last `window` completions of the steady part of a batch.

    The first and last `edge` completions are left out: at the start the lanes ramp up, and
    at the end the last requests in flight complete with nothing sent behind them, which
    would inflate the rate.
    """
    edge = min(edge, max(0, (count - 2) // 4))
    end = count - 1 - edge
    return max(edge, end - window), end


def rate(done: Sequence[float], start: int, end: int) -> float:
    return (end - start) / (done[end] - done[start]) if end > start else float("nan")


async def warm_up(
    session: aiohttp.ClientSession, gateway: Gateway, count: int, concurrency: int
) -> None:
    """Submit `count` workloads to a second API right before the first level.

    Without it the first level pays alone for opening the keep-alive connections, for the
    gateway's first submits, and for starting up after idling (on this 2-core VM the first
    few hundred submits after a second of quiet run at about half speed), which would flatter
    the rate ratio. The warm-up workloads stay queued on the other API, and the empty-queue
    baseline is read after them.
    """
    if count > 0:
        await submit_batch(session, gateway.url(WARMUP_API), 0, count, concurrency)


async def fill_levels(
    gateway: Gateway, levels: Sequence[int], window: int, concurrency: int, warmup: int
) -> tuple[int, list[Level]]:
    url = gateway.url(API)
    check_loopback(url)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await warm_up(session, gateway, warmup, concurrency)
        # Levels follow each other without a pause (see warm_up); one RSS reading is enough
        # since nothing in the gateway frees memory while the queue only grows.
        empty = gateway.rss()
        results: list[Level] = []
        depth = 0
        for level in levels:
            phase_start = time.perf_counter()
            batch = await submit_batch(
                session, url, depth, level - depth, concurrency, gateway.cpu_seconds
            )
            depth = level
            rss = gateway.rss()
            await check_depth(session, url, level)
            found = summarise_level(level, batch, max(window, level // 10), concurrency)
            found.rss_bytes, found.rss_growth_bytes = rss, rss - empty
            found.bytes_per_workload = (rss - empty) / level
            found.phase_s = time.perf_counter() - phase_start
            results.append(found)
    for found in results:
        log(
            f"[queue] {found.depth:>7} queued: {found.submit_per_s:7.0f} submits/s "
            f"(last {found.window}), {found.cpu_us_per_submit:.0f} us of gateway CPU each, "
            f"RSS +{found.rss_growth_bytes / 2**20:.1f} MiB = "
            f"{found.bytes_per_workload:.0f} B/workload"
        )
    return empty, results


def cpu_per_submit(cpu: dict[int, float], start: int, end: int) -> float:
    """Gateway CPU seconds per submit between the first and last CPU reading in [start, end]."""
    inside = sorted(i for i in cpu if start <= i <= end)
    if len(inside) < 2:
        return float("nan")
    first, last = inside[0], inside[-1]
    return (cpu[last] - cpu[first]) / (last - first)


def summarise_level(level: int, batch: Batch, window: int, concurrency: int) -> Level:
    """The rate and latency figures of one level; memory is filled in by the caller."""
    done, latency = batch.done, batch.latency
    start, end = steady_window(len(done), window, concurrency)
    first, _ = steady_window(len(done), len(done), concurrency)
    recent = latency[start + 1 : end + 1]
    cpu = cpu_per_submit(batch.cpu, start, end)
    return Level(
        depth=level,
        window=end - start,
        submit_per_s=rate(done, start, end),
        batch_per_s=rate(done, first, end),
        cpu_us_per_submit=cpu * 1e6,
        submit_p50_ms=percentile(recent, 50) * 1000,
        submit_p99_ms=percentile(recent, 99) * 1000,
        # The slowest submit of the whole batch: where the gateway's event loop stalled.
        submit_max_ms=max(latency, default=float("nan")) * 1000,
        rss_bytes=0,
        rss_growth_bytes=0,
        bytes_per_workload=0.0,
        phase_s=0.0,
    )


async def check_depth(session: aiohttp.ClientSession, url: str, expected: int) -> None:
    async with session.get(url) as resp:
        depth = int((await resp.json())["queue_depth"])
    if depth != expected:
        raise BenchError(f"queue_depth is {depth}, expected {expected}: did a worker drain it?")


# --------------------------------------------------------------------------- restart


def journal_bytes(storage: Path) -> int:
    total = 0
    for folder, _, files in os.walk(storage / "journal"):
        total += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    return total


def time_restart(
    stack: contextlib.ExitStack, gateway: Gateway, expected: int, timeout: float
) -> dict[str, Any]:
    """SIGKILL the gateway, start it on the same storage, time until the queue is back."""
    hard_kill(gateway.proc)
    started = time.perf_counter()
    again = start_gateway(
        stack,
        gateway.workdir,
        workers=0,
        storage=gateway.storage,
        extra=NO_WORKERS,
        name="asyncnb-serve-restart",
        startup_timeout=timeout,
    )
    healthy = time.perf_counter() - started
    while True:
        depth = int(api_status(again, API)["queue_depth"])
        if depth == expected:
            break
        if depth > expected or time.perf_counter() - started > timeout:
            raise BenchError(f"after the restart queue_depth is {depth}, expected {expected}")
        time.sleep(0.02)
    recovered = time.perf_counter() - started
    return {
        "queued": expected,
        "healthz_s": healthy,
        "recovered_s": recovered,
        "rss_after_bytes": again.rss(),
    }


# --------------------------------------------------------------------------- the run


def fill_once(
    opts: argparse.Namespace, levels: Sequence[int], restart: bool
) -> tuple[dict[str, Any], list[Level]]:
    """One fill on a new gateway; the restart, when asked, comes after it."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        started = time.perf_counter()
        gateway = start_gateway(stack, Path(tmp), workers=0, extra=NO_WORKERS)
        cold_start_s = time.perf_counter() - started
        deploy_api(gateway, PREDICTOR, API)
        deploy_api(gateway, PREDICTOR, WARMUP_API)
        log(f"[queue] gateway up in {cold_start_s:.1f} s; filling to {list(levels)}")
        empty, found = asyncio.run(fill_levels(gateway, levels, opts.window, opts.c, opts.warmup))
        out: dict[str, Any] = {
            "cold_start_s": cold_start_s,
            "empty_rss_bytes": empty,
            "journal_bytes": journal_bytes(gateway.storage),
        }
        if restart:
            log(f"[queue] kill -9 and restart with {levels[-1]} queued")
            out["restart"] = time_restart(stack, gateway, levels[-1], opts.restart_timeout)
            log(f"[queue] recovered in {out['restart']['recovered_s']:.2f} s")
        return out, found


def median_levels(fills: Sequence[Sequence[Level]]) -> list[dict[str, Any]]:
    """Per level, the median of every figure over the fills (window and depth are the same)."""
    merged = []
    for same_level in zip(*fills, strict=True):
        rows = [asdict(level) for level in same_level]
        merged.append(
            {
                key: statistics.median(row[key] for row in rows)
                if key not in ("depth", "window")
                else rows[0][key]
                for key in rows[0]
            }
        )
    return merged


def run(opts: argparse.Namespace) -> dict[str, Any]:
    levels = sorted(opts.levels)
    fills: list[list[Level]] = []
    out: dict[str, Any] = {}
    for i in range(opts.repeats):
        last = i == opts.repeats - 1
        out, found = fill_once(opts, levels, restart=last and opts.restart)
        fills.append(found)
    ratios = [f[-1].submit_per_s / f[0].submit_per_s for f in fills]
    log(f"[queue] rate ratios (largest / smallest level) per fill: {_percents(ratios)}")
    return {
        **out,  # the last fill's start-up, memory baseline, journal size and restart
        "concurrency": opts.c,
        "warmup": opts.warmup,
        "repeats": opts.repeats,
        "levels": median_levels(fills),
        "fills": [[asdict(level) for level in fill] for fill in fills],
        "rate_ratios": ratios,
    }


def _percents(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.0%}" for v in values)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    levels = results["levels"]
    first, last = levels[0], levels[-1]
    ratios = results.get("rate_ratios") or [last["submit_per_s"] / first["submit_per_s"]]
    ratio = statistics.median(ratios)
    per = last["bytes_per_workload"]
    spread = f"; per fill {_percents(ratios)}" if len(ratios) > 1 else ""
    return [
        target(
            f"submit rate at {last['depth']:,} queued vs {first['depth']:,}",
            f">= {RATE_TARGET:.0%}",
            f"{ratio:.0%}, median of {len(ratios)} fills (medians {last['submit_per_s']:.0f}/s "
            f"vs {first['submit_per_s']:.0f}/s{spread})",
            ratio >= RATE_TARGET,
        ),
        target(
            f"gateway memory per queued small workload (at {last['depth']:,})",
            f"<= {BYTES_TARGET / 1024:.0f} KiB",
            f"{per:.0f} B",
            per <= BYTES_TARGET,
        ),
    ]


def _levels(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_cost", description=__doc__)
    parser.add_argument("--levels", type=_levels, default=None, help="e.g. 1000,10000,100000")
    parser.add_argument("--window", type=int, default=1000, help="fewest submits per rate sample")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="fills, each on a new gateway (5; --quick: 1)",
    )
    parser.add_argument("-c", type=int, default=64, help="concurrent submitters")
    parser.add_argument("--warmup", type=int, default=1000, help="submits before measuring")
    parser.add_argument("--no-restart", dest="restart", action="store_false")
    parser.add_argument("--restart-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for it all")
    parser.add_argument("--quick", action="store_true", help=f"levels {QUICK_LEVELS}")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    if args.levels is None:
        args.levels = list(QUICK_LEVELS if args.quick else DEFAULT_LEVELS)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if min(args.levels) < 1 or args.window < 1 or args.repeats < 1:
        parser.error("levels, window and repeats must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    meta = machine_meta(["python -m bench.queue_cost", *raw])
    try:
        with deadline(args.timeout, "bench.queue_cost"):
            results = run(args)
    except BenchError as exc:
        log(f"[queue] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    checks = evaluate(results)
    log_targets("queue", checks)
    write_json(args.json, {"meta": meta, "results": results, "targets": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
