"""Fair queuing across callers: one caller's flood against another's trickle, on one worker.

    python -m bench.fairness [--flood 5000] [--quick] [--json out.json]

An in-process engine, built the way `asyncnb serve` builds it (`server.lifespan.gateway_engine`:
a `LocalCluster` of ONE worker process with one thread, the Dask backend, a local-disk journal),
serves a predictor that sleeps 10 ms per workload. No HTTP: workloads are built and accepted
as `gateway/submission.py` does (`Engine.accept`), each with its caller in `submitted_by`:

- key A floods `--flood` workloads at once (5,000; `--quick`: 1,000);
- key B submits one every 100 ms, from the flood's start until A's last workload finished.

Three runs, each on a new cluster and an empty storage: `--queue-policy fair` with the flood,
fair without it (B alone, for `--alone` seconds), and `fifo` with the flood. For B we record
the queue wait as the engine's metric defines it (accepted → the start of its chunk on the
worker) and the end-to-end time (accepted → finished), p50 and p95. For the flood, A's
throughput (its workloads / first accept → last finish), and that of every workload that
finished meanwhile (A's and B's): under fair, B's workloads run inside the flood and take
about a tenth of the worker (10 per second of 10 ms), under fifo they wait until A's end, so
the all-workload rate is the one that says whether chunking still packs the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle

from asyncnb.contract.names import new_workload_id
from asyncnb.contract.options import APIOptions
from asyncnb.contract.settings import GatewaySettings, QueuePolicy
from asyncnb.contract.status import APIPhase, Status
from asyncnb.engine import Engine
from asyncnb.engine.api_state import APIState
from asyncnb.engine.workload import WorkloadState
from asyncnb.server.lifespan import gateway_engine
from bench.harness import (
    BenchError,
    deadline,
    log,
    log_targets,
    machine_meta,
    target,
    write_json,
)
from bench.loadgen import percentile

API = "sleepy"
ITEM_S = 0.01  # what the predictor sleeps per workload
TRICKLE_EVERY_S = 0.1
DEFAULT_FLOOD, QUICK_FLOOD = 5000, 1000
DEFAULT_ALONE_S, QUICK_ALONE_S = 10.0, 3.0
MAX_CHUNK = GatewaySettings().max_chunk
PREFETCH = GatewaySettings().prefetch
# Under fair, B waits at most for the chunk that runs when it arrives and the ones prefetched
# behind it: (1 + prefetch) chunks of A. The goal leaves 20% for Dask's round trips.
FAIR_WAIT_GOAL_S = 1.2 * (1 + PREFETCH) * MAX_CHUNK * ITEM_S
THROUGHPUT_GOAL = 0.9  # all-workload rate during the flood, fair / fifo
RUNS: tuple[tuple[str, QueuePolicy, bool], ...] = (
    ("fair_flood", "fair", True),
    ("fair_alone", "fair", False),
    ("fifo_flood", "fifo", True),
)


class Sleepy:
    """Sleeps `ITEM_S` per workload; the payload comes back."""

    def predict(self, payload: Any) -> Any:
        time.sleep(ITEM_S)
        return payload


def predictor_blob() -> bytes:
    """By value, as a notebook's class ships: the worker processes need no `bench` module."""
    module = sys.modules[Sleepy.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        return bytes(cloudpickle.dumps(Sleepy))
    finally:
        cloudpickle.unregister_pickle_by_value(module)


# --------------------------------------------------------------------------- one run


async def accept(engine: Engine, state: APIState, submitted_by: str, n: int) -> WorkloadState:
    workload = WorkloadState(
        new_workload_id(),
        API,
        created_at=time.time(),
        content_type="application/json",
        body=(body := b'{"n": %d}' % n),
        size=len(body),
        submitted_by=submitted_by,
    )
    return await engine.accept(state, workload)


async def until(probe: Any, timeout: float, what: str, every: float = 0.05) -> None:
    limit = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > limit:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(every)


async def trickle(
    engine: Engine, state: APIState, into: list[WorkloadState], stop: asyncio.Event
) -> None:
    """B: one workload every `TRICKLE_EVERY_S`, on schedule (a late one goes at once)."""
    start = time.monotonic()
    while not stop.is_set():
        into.append(await accept(engine, state, "B", len(into)))
        due = start + len(into) * TRICKLE_EVERY_S
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
        except TimeoutError:
            pass


async def run_once(
    policy: QueuePolicy, flood_n: int, alone_s: float, workdir: Path
) -> dict[str, Any]:
    settings = GatewaySettings(
        storage=f"file://{workdir / 'storage'}",
        n_workers=1,
        threads_per_worker=1,
        queue_policy=policy,
    )
    async with gateway_engine(settings) as engine:
        state, _ = await engine.deploy(API, predictor_blob(), None, APIOptions())
        await until(
            lambda: state.state is not APIPhase.DEPLOYING and state.workers >= 1,
            120,
            "the API ready on one worker",
        )
        if state.state is not APIPhase.READY:
            raise BenchError(f"the API failed to start: {state.error}")
        # one round first: the predictor is built and the worker warm before anything counts
        first = await accept(engine, state, "warmup", 0)
        await until(lambda: first.status.finished, 60, "the warm-up workload")

        lone: list[WorkloadState] = []
        stop = asyncio.Event()
        started = time.time()
        flood = [await accept(engine, state, "A", i) for i in range(flood_n)]
        accepted_s = time.time() - started
        trickling = asyncio.create_task(trickle(engine, state, lone, stop))
        if flood:
            limit = 60 + 4 * flood_n * ITEM_S
            await until(lambda: flood[-1].status.finished, limit, "the flood", every=0.02)
            await until(lambda: all(w.status.finished for w in flood), 60, "the flood")
        else:
            await asyncio.sleep(alone_s)
        stop.set()
        await trickling
        await until(lambda: all(w.status.finished for w in lone), 120, "B's workloads")
    return summarise(policy, started, accepted_s, flood, lone)


def summarise(
    policy: str,
    started: float,
    accepted_s: float,
    flood: list[WorkloadState],
    lone: list[WorkloadState],
) -> dict[str, Any]:
    failed = [w for w in (*flood, *lone) if w.status is not Status.COMPLETED]
    if failed:
        raise BenchError(f"{len(failed)} workloads did not complete: {failed[0].error}")
    waits = [(w.started_at or w.finished_at or 0.0) - w.created_at for w in lone]
    e2e = [(w.finished_at or 0.0) - w.created_at for w in lone]
    out: dict[str, Any] = {
        "policy": policy,
        "b_workloads": len(lone),
        "b_wait_p50_s": percentile(waits, 50),
        "b_wait_p95_s": percentile(waits, 95),
        "b_wait_max_s": max(waits, default=float("nan")),
        "b_e2e_p50_s": percentile(e2e, 50),
        "b_e2e_p95_s": percentile(e2e, 95),
        "flood": len(flood),
    }
    if flood:
        end = max(w.finished_at or 0.0 for w in flood)
        elapsed = end - started
        during = len(flood) + sum(1 for w in lone if (w.finished_at or 0.0) <= end)
        # how many of A's workloads the worker ran while each of B's waited (and ran): A's
        # finishing between B's accept and B's finish
        ends = sorted(w.finished_at or 0.0 for w in flood)
        ahead = [
            bisect.bisect_left(ends, w.finished_at or 0.0) - bisect.bisect_right(ends, w.created_at)
            for w in lone
        ]
        out |= {
            "flood_accept_s": accepted_s,
            "flood_s": elapsed,
            "flood_per_s": len(flood) / elapsed,
            "all_per_s": during / elapsed,
            "b_during_flood": during - len(flood),
            "a_during_b_p50": statistics.median(ahead) if ahead else None,
        }
    return out


# --------------------------------------------------------------------------- the runs


def run(opts: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, policy, flooded in RUNS:
        with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
            flood_n = opts.flood if flooded else 0
            log(f"[fairness] {name}: {policy}, flood of {flood_n}, B every {TRICKLE_EVERY_S}s")
            found = asyncio.run(run_once(policy, flood_n, opts.alone, Path(tmp)))
        results[name] = found
        line = (
            f"[fairness] {name}: B ({found['b_workloads']}) queue wait "
            f"p50 {found['b_wait_p50_s'] * 1000:.0f} ms, p95 {found['b_wait_p95_s'] * 1000:.0f} ms"
        )
        if flooded:
            line += (
                f"; A: {found['flood_per_s']:.1f}/s over {found['flood_s']:.1f} s, "
                f"all: {found['all_per_s']:.1f}/s"
            )
        log(line)
    fair, fifo = results["fair_flood"], results["fifo_flood"]
    return {
        "flood": opts.flood,
        "item_ms": ITEM_S * 1000,
        "trickle_every_ms": TRICKLE_EVERY_S * 1000,
        "alone_s": opts.alone,
        "max_chunk": MAX_CHUNK,
        "prefetch": PREFETCH,
        "runs": results,
        "flood_ratio": fair["flood_per_s"] / fifo["flood_per_s"],
        "all_ratio": fair["all_per_s"] / fifo["all_per_s"],
    }


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    runs = results["runs"]
    fair, alone, fifo = runs["fair_flood"], runs["fair_alone"], runs["fifo_flood"]
    p95 = fair["b_wait_p95_s"]
    return [
        target(
            f"B's queue wait p95 behind a flood of {results['flood']:,}, fair",
            f"<= {FAIR_WAIT_GOAL_S:.2f} s (about {1 + PREFETCH} chunks of "
            f"{MAX_CHUNK} x {ITEM_S * 1000:g} ms)",
            f"{p95:.2f} s (alone {alone['b_wait_p95_s']:.3f} s, fifo {fifo['b_wait_p95_s']:.1f} s)",
            p95 <= FAIR_WAIT_GOAL_S,
        ),
        target(
            "throughput during a flood, fair / fifo (every workload)",
            f">= {THROUGHPUT_GOAL:.0%}",
            f"{results['all_ratio']:.0%} ({fair['all_per_s']:.1f} vs {fifo['all_per_s']:.1f}/s;"
            f" A's alone {results['flood_ratio']:.0%})",
            results["all_ratio"] >= THROUGHPUT_GOAL,
        ),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__)
    parser.add_argument("--flood", type=int, default=None, help="A's workloads (5000)")
    parser.add_argument("--alone", type=float, default=None, help="seconds of B alone (10)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for it all")
    parser.add_argument("--quick", action="store_true", help=f"a flood of {QUICK_FLOOD}")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    if args.flood is None:
        args.flood = QUICK_FLOOD if args.quick else DEFAULT_FLOOD
    if args.alone is None:
        args.alone = QUICK_ALONE_S if args.quick else DEFAULT_ALONE_S
    if args.flood < 1 or args.alone <= 0:
        parser.error("--flood and --alone must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    meta = machine_meta(["python -m bench.fairness", *raw])
    try:
        with deadline(args.timeout, "bench.fairness"):
            results = run(args)
    except BenchError as exc:
        log(f"[fairness] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    checks = evaluate(results)
    log_targets("fairness", checks)
    write_json(args.json, {"meta": meta, "results": results, "targets": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
