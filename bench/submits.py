"""Closed-loop submit rounds against one `asyncnb serve`: what bench.durability and
bench.compat time. `clients` lanes send N submits back to back; only the POST is timed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bench.harness import BenchError, Gateway, api_status
from bench.loadgen import check_loopback, percentile


def numbered(i: int) -> dict[str, Any]:
    return {"x": i}


async def submit_round(
    url: str,
    n: int,
    clients: int,
    body: Callable[[int], Any] = numbered,
    accepted: tuple[int, ...] = (202,),
) -> dict[str, Any]:
    """`n` submits of `body(i)` from `clients` lanes: the accepted rate and submit latency."""
    check_loopback(url)
    latencies: list[float] = []
    failures: list[str] = []
    indices = iter(range(n))
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def lane() -> None:
            for i in indices:
                started = time.perf_counter()
                try:
                    async with session.post(url, json=body(i)) as resp:
                        await resp.read()
                        code = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    failures.append(repr(exc))
                    continue
                if code not in accepted:
                    failures.append(f"POST answered {code}")
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(clients)))
        wall = time.perf_counter() - began
    return {
        "n": n,
        "accepted": len(latencies),
        "failures": len(failures),
        "errors": failures[:5],
        "wall_s": wall,
        "submit_per_s": len(latencies) / wall,
        "submit_p50_ms": percentile(latencies, 50) * 1000,
        "submit_p99_ms": percentile(latencies, 99) * 1000,
    }


def drain(gateway: Gateway, api: str, timeout: float = 300) -> None:
    """Until the round's workloads have run, so the next round has the machine to itself."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = api_status(gateway, api)
        if not status.get("queue_depth") and not status.get("in_progress"):
            return
        time.sleep(0.2)
    raise BenchError(f"the {api} queue did not drain within {timeout:.0f} s")
