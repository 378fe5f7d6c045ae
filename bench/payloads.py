"""Payload sizes: throughput and latency at 1 KB / 1 MB / 100 MB, a 1 GB upload, a 100 MB result.

    python -m bench.payloads [--quick] [--json out.json]

1. For 1 and 2 workers (`asyncnb serve --workers W`), N workloads of each size are submitted
   as raw bytes (`application/octet-stream`) with the load generator of `bench.run`, polled
   to completion; the predictor (`bench/size_predictor.py:SizeEcho`) returns the length, so
   only moving the payload costs. Bodies up to 1 MiB stay in the gateway's memory and travel
   to the worker inside the Dask task; larger ones are streamed to storage at submit and read
   by the worker from there.
2. A 1 GB upload to a gateway with no workers (so nothing reads it back), the body coming
   from an async generator (never held by the client), while the RSS of the `asyncnb serve`
   process is sampled: its growth is what streaming to storage costs the gateway.
3. A 100 MB bytes result (`BytesResult` returns `b"x" * n`) fetched from
   `GET /{api}/{id}/result` with client-side streaming: time and gateway RSS growth.

Storage is a local folder in a temporary directory, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    MB,
    MIB,
    BenchError,
    Gateway,
    RssSampler,
    deadline,
    deploy_api,
    log,
    log_targets,
    machine_meta,
    start_gateway,
    target,
    wait_api_state,
    write_json,
)
from bench.loadgen import check_loopback, run_load

ECHO = "bench/size_predictor.py:SizeEcho"
RESULT = "bench/size_predictor.py:BytesResult"
ECHO_API = "size"
RESULT_API = "bytes-result"
UPLOAD_RSS_TARGET = 100 * MB
STREAM_CHUNK = MIB
# size in bytes → (workloads, concurrent requests); few of the big ones, they take seconds each
DEFAULT_PLAN = {1_000: (2000, 64), 1_000_000: (200, 16), 100_000_000: (5, 5)}
QUICK_PLAN = {1_000: (300, 32), 1_000_000: (40, 8), 100_000_000: (2, 2)}


def label(size: int) -> str:
    for unit, name in ((10**9, "GB"), (MB, "MB"), (1000, "KB")):
        if size >= unit:
            return f"{size / unit:g} {name}"
    return f"{size} B"


def http_session(timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


# --------------------------------------------------------------------------- throughput


async def check_echo(url: str, size: int, timeout: float) -> None:
    """One workload of `size` bytes end to end: the predictor must see every byte."""
    async with (
        http_session(timeout) as session,
        session.post(
            url,
            data=b"x" * size,
            headers={"Content-Type": "application/octet-stream", "Prefer": "wait=60"},
        ) as resp,
    ):
        body = await resp.json(content_type=None)
    if resp.status != 200 or body.get("result") != {"size": size}:
        raise BenchError(f"{label(size)} echo answered {resp.status}: {str(body)[:300]}")


async def measure_size(
    url: str, size: int, n: int, concurrency: int, timeout: float
) -> dict[str, Any]:
    await check_echo(url, size, timeout)
    result = await run_load(
        url,
        n,
        concurrency,
        poll_interval=0.01,
        timeout=timeout,
        body=b"x" * size,
        request_timeout=timeout,
    )
    if result["failures"] or result["timed_out"]:
        raise BenchError(f"{label(size)}: {result['failures']} failures {result['errors']}")
    return {
        "size": size,
        "label": label(size),
        "n": n,
        "concurrency": concurrency,
        "e2e_per_s": result["e2e_per_s"],
        "mb_per_s": result["e2e_per_s"] * size / MB,
        "e2e_p50_ms": result["e2e_p50_ms"],
        "e2e_p99_ms": result["e2e_p99_ms"],
        "submit_p50_ms": result["submit_p50_ms"],
        "wall_s": result["wall_s"],
    }


def throughput_phase(
    workers: int, plan: dict[int, tuple[int, int]], opts: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every payload size against one gateway; the big-result check on the last gateway."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-payloads-", dir=opts.tmp) as tmp,
        contextlib.ExitStack() as stack,
    ):
        gateway = start_gateway(stack, Path(tmp), workers=workers)
        deploy_api(gateway, ECHO, ECHO_API)
        wait_api_state(gateway, ECHO_API, workers=workers)
        rows = []
        for size, (n, concurrency) in sorted(plan.items()):
            log(f"[payloads] {workers} worker(s): {n} x {label(size)}, c={concurrency}")
            row = asyncio.run(measure_size(gateway.url(ECHO_API), size, n, concurrency, 300.0))
            rows.append({"workers": workers, **row})
            log(
                f"[payloads]   {row['e2e_per_s']:.1f} workloads/s, {row['mb_per_s']:.1f} MB/s, "
                f"e2e p50 {row['e2e_p50_ms']:.0f} ms"
            )
        big_result = None
        if workers == max(opts.workers) and opts.result_bytes:
            big_result = result_phase(gateway, opts.result_bytes, workers)
        return rows, big_result


# --------------------------------------------------------------------------- big upload


async def generated_body(size: int, chunk: int = STREAM_CHUNK) -> AsyncIterator[bytes]:
    """`size` bytes made on the fly: the client never holds more than one chunk."""
    block = b"x" * chunk
    sent = 0
    while sent < size:
        part = block if size - sent >= chunk else block[: size - sent]
        sent += len(part)
        yield part


async def upload(url: str, size: int, timeout: float) -> tuple[int, dict[str, Any], float]:
    check_loopback(url)
    started = time.perf_counter()
    async with (
        http_session(timeout) as session,
        session.post(
            url,
            data=generated_body(size),
            headers={"Content-Type": "application/octet-stream"},
        ) as resp,
    ):
        body = await resp.json(content_type=None)
    return resp.status, body, time.perf_counter() - started


def upload_phase(size: int, opts: argparse.Namespace) -> dict[str, Any]:
    """A gateway with no workers keeps the upload queued: only the gateway's side is measured."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-upload-", dir=opts.tmp) as tmp,
        contextlib.ExitStack() as stack,
    ):
        gateway = start_gateway(
            stack, Path(tmp), workers=0, extra=("--min-workers", "0", "--max-workers", "0")
        )
        deploy_api(gateway, ECHO, ECHO_API)
        time.sleep(0.5)  # let the deploy's allocations settle before the baseline
        log(f"[payloads] uploading {label(size)} as a stream")
        sampler = RssSampler({"gateway": gateway.pid, "client": os.getpid()})
        with sampler:
            status, body, seconds = asyncio.run(upload(gateway.url(ECHO_API), size, 600.0))
        if status != 202:
            raise BenchError(f"the {label(size)} upload answered {status}: {str(body)[:300]}")
        stored = gateway.storage / "workloads" / ECHO_API / body["id"] / "payload"
        stored_size = stored.stat().st_size if stored.exists() else -1
        if stored_size != size:
            raise BenchError(f"the stored payload has {stored_size} bytes, not {size}")
        return {
            "size": size,
            "label": label(size),
            "seconds": seconds,
            "mb_per_s": size / MB / seconds,
            "gateway_rss_before_bytes": sampler.baseline["gateway"],
            "gateway_rss_growth_bytes": sampler.growth("gateway"),
            "client_rss_growth_bytes": sampler.growth("client"),
        }


# --------------------------------------------------------------------------- big result


async def fetch_result(url: str, size: int, timeout: float) -> dict[str, Any]:
    """Make the result, then stream it back and count the bytes without keeping them."""
    check_loopback(url)
    async with http_session(timeout) as session:
        async with session.post(url, json={"n": size}, headers={"Prefer": "wait=60"}) as resp:
            record = await resp.json(content_type=None)
        if resp.status != 200 or record.get("result_size") != size:
            raise BenchError(f"the {label(size)} result workload: {str(record)[:300]}")
        started = time.perf_counter()
        first_byte = None
        received = 0
        async with session.get(f"{url}/{record['id']}/result") as resp:
            if resp.status != 200:
                raise BenchError(f"GET result answered {resp.status}")
            async for chunk in resp.content.iter_chunked(STREAM_CHUNK):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                received += len(chunk)
        seconds = time.perf_counter() - started
    if received != size:
        raise BenchError(f"streamed {received} bytes of a {size}-byte result")
    return {"seconds": seconds, "first_byte_s": first_byte, "mb_per_s": size / MB / seconds}


def result_phase(gateway: Gateway, size: int, workers: int) -> dict[str, Any]:
    deploy_api(gateway, RESULT, RESULT_API)
    wait_api_state(gateway, RESULT_API, workers=workers)
    log(f"[payloads] streaming a {label(size)} result back")
    sampler = RssSampler({"gateway": gateway.pid, "client": os.getpid()})
    with sampler:
        timing = asyncio.run(fetch_result(gateway.url(RESULT_API), size, 300.0))
    return {
        "size": size,
        "label": label(size),
        **timing,
        "gateway_rss_growth_bytes": sampler.growth("gateway"),
        "client_rss_growth_bytes": sampler.growth("client"),
    }


# --------------------------------------------------------------------------- the run


def run(opts: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"throughput": [], "upload": None, "result": None}
    for workers in opts.workers:
        rows, big_result = throughput_phase(workers, opts.plan, opts)
        out["throughput"] += rows
        out["result"] = big_result or out["result"]
    if opts.upload_bytes:
        out["upload"] = upload_phase(opts.upload_bytes, opts)
        growth = out["upload"]["gateway_rss_growth_bytes"]
        log(f"[payloads] upload: gateway RSS +{growth / MB:.1f} MB")
    return out


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    up = results.get("upload")
    if up:
        growth = up["gateway_rss_growth_bytes"]
        checks.append(
            target(
                f"gateway RSS growth during a {up['label']} upload",
                f"< {UPLOAD_RSS_TARGET / MB:.0f} MB",
                f"{growth / MB:.1f} MB",
                growth < UPLOAD_RSS_TARGET,
            )
        )
    res = results.get("result")
    if res:
        growth = res["gateway_rss_growth_bytes"]
        # The issue sets no figure for results; holding them to the upload's bound says
        # whether the result is streamed rather than loaded whole.
        checks.append(
            target(
                f"gateway RSS growth streaming a {res['label']} result",
                f"< {UPLOAD_RSS_TARGET / MB:.0f} MB (same bound as uploads)",
                f"{growth / MB:.1f} MB in {res['seconds']:.2f} s",
                growth < UPLOAD_RSS_TARGET,
            )
        )
    return checks


def _plan(text: str) -> dict[int, tuple[int, int]]:
    """`1000:2000:64,1e6:200:16` → {size: (workloads, concurrency)}."""
    plan = {}
    for part in text.split(","):
        size, n, concurrency = part.split(":")
        plan[int(float(size))] = (int(n), int(concurrency))
    return plan


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.payloads", description=__doc__)
    parser.add_argument("--plan", type=_plan, default=None, help="SIZE:N:C,... (bytes)")
    parser.add_argument("--workers", type=lambda t: [int(w) for w in t.split(",")], default=[1, 2])
    parser.add_argument("--upload-bytes", type=lambda t: int(float(t)), default=None)
    parser.add_argument("--result-bytes", type=lambda t: int(float(t)), default=None)
    parser.add_argument("--tmp", default=None, help="folder for the temporary storage")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for it all")
    parser.add_argument("--quick", action="store_true", help="small sizes and counts")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    if args.plan is None:
        args.plan = QUICK_PLAN if args.quick else DEFAULT_PLAN
    if args.upload_bytes is None:
        args.upload_bytes = 200 * MB if args.quick else 1000 * MB
    if args.result_bytes is None:
        args.result_bytes = 20 * MB if args.quick else 100 * MB
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    meta = machine_meta(["python -m bench.payloads", *raw])
    try:
        with deadline(args.timeout, "bench.payloads"):
            results = run(args)
    except BenchError as exc:
        log(f"[payloads] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    checks = evaluate(results)
    log_targets("payloads", checks)
    write_json(args.json, {"meta": meta, "results": results, "targets": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
