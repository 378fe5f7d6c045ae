"""aiohttp load generator for the AsyncAPI contract.

Submits N workloads with at most C HTTP requests in flight, polls each one from the moment it
is accepted until a terminal status, and reports throughput and latency.

Closed loop by default: C submit lanes each send their next workload as soon as the previous
one is accepted, so the system runs at saturation and latency is C / rate (Little's law).
With `--rate R` the same lanes offer the load open loop instead: workload i is due at
start + i/R, a lane sleeps until its workload is due (or sends it at once when late), and the
summary says how late the submissions were, so a rate the system cannot sustain shows.

    python -m bench.loadgen http://127.0.0.1:8000/noop -n 3000 -c 64
    python -m bench.loadgen http://127.0.0.1:8000/noop -n 2500 -c 64 --rate 250
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# A paced submission sent this long after its due time counts as late (timer jitter is ~1 ms).
LATE_S = 0.010


@dataclass
class _Samples:
    """Raw timings collected during one run (all in seconds, perf_counter based)."""

    submit_latency: list[float] = field(default_factory=list)
    e2e_latency: list[float] = field(default_factory=list)
    get_latency: list[float] = field(default_factory=list)
    # Paced runs only: how long after its due time each POST was sent (gate wait included).
    lateness: list[float] = field(default_factory=list)
    first_submit: float = math.inf
    last_submit_done: float = 0.0
    last_completion: float = 0.0
    completed: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failures += 1
        # A handful of samples is enough to diagnose; thousands would swamp the report.
        if len(self.errors) < 5:
            self.errors.append(reason)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no data so empty runs stay visible in the table."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def json_safe(value: Any) -> Any:
    """Replace NaN (not valid JSON) by None, recursively; empty percentiles become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"refusing to load a non-loopback host: {host!r}")


class _Run:
    """State shared by the submitter lanes and pollers of one load run."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        concurrency: int,
        poll_interval: float,
        body: bytes | None = None,
        content_type: str = "application/octet-stream",
        rate: float | None = None,
    ) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.poll_interval = poll_interval
        self.body = body
        self.content_type = content_type
        # One gate for POSTs and GETs alike so C really bounds the requests in flight;
        # asyncio.Semaphore is FIFO, so pollers interleave with submitters instead of starving.
        self.gate = asyncio.Semaphore(concurrency)
        self.samples = _Samples()
        self.pollers: set[asyncio.Task[None]] = set()
        # Open loop when set: workload i is due at `schedule_start + i / rate`.
        self.rate = rate
        self.schedule_start = 0.0

    async def submit_lane(self, indices: Iterator[int]) -> None:
        for i in indices:
            due = None
            if self.rate is not None:
                due = self.schedule_start + i / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                # else: this lane is late (its previous POST took too long); send at once.
            workload_id, started = await self._submit(i, due)
            if workload_id is not None:
                task = asyncio.create_task(self._poll(workload_id, started))
                self.pollers.add(task)
                task.add_done_callback(self.pollers.discard)

    async def _submit(self, i: int, due: float | None = None) -> tuple[str | None, float]:
        s = self.samples
        async with self.gate:
            started = time.perf_counter()
            s.first_submit = min(s.first_submit, started)
            if due is not None:
                s.lateness.append(max(0.0, started - due))
            try:
                async with self._post(i) as resp:
                    body = await resp.json(content_type=None)
                    ok = resp.status == 202 and isinstance(body, dict) and "id" in body
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                s.fail(f"POST: {exc!r}")
                return None, started
            done = time.perf_counter()
        s.last_submit_done = max(s.last_submit_done, done)
        if not ok:
            s.fail(f"POST {resp.status}: {str(body)[:200]}")
            return None, started
        s.submit_latency.append(done - started)
        return str(body["id"]), started

    def _post(self, i: int) -> Any:
        if self.body is None:
            return self.session.post(self.url, json={"x": i})
        # One shared bytes object for every request: large payloads are not copied per lane.
        return self.session.post(
            self.url, data=self.body, headers={"Content-Type": self.content_type}
        )

    async def _poll(self, workload_id: str, submitted: float) -> None:
        s = self.samples
        while True:
            await asyncio.sleep(self.poll_interval)
            status = await self._get_status(workload_id)
            if status is None:
                return
            if status in TERMINAL_STATUSES:
                break
        now = time.perf_counter()
        s.last_completion = max(s.last_completion, now)
        if status == "completed":
            s.completed += 1
            s.e2e_latency.append(now - submitted)
        else:
            s.fail(f"workload {workload_id} ended {status}")

    async def _get_status(self, workload_id: str) -> str | None:
        s = self.samples
        async with self.gate:
            started = time.perf_counter()
            try:
                async with self.session.get(f"{self.url}/{workload_id}") as resp:
                    body = await resp.json(content_type=None)
                    code = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                s.fail(f"GET: {exc!r}")
                return None
            s.get_latency.append(time.perf_counter() - started)
        if code != 200 or not isinstance(body, dict):
            s.fail(f"GET {code}: {str(body)[:200]}")
            return None
        return str(body.get("status"))


def _summarise(
    s: _Samples, n: int, concurrency: int, timed_out: bool, rate: float | None = None
) -> dict[str, Any]:
    wall = s.last_completion - s.first_submit if s.completed else math.nan
    submit_wall = s.last_submit_done - s.first_submit if s.submit_latency else math.nan
    ms = 1000.0
    summary = {
        "n": n,
        "concurrency": concurrency,
        "completed": s.completed,
        # Workloads that never reached a terminal status before the deadline count as failed.
        "failures": n - s.completed if timed_out else s.failures,
        "timed_out": timed_out,
        "wall_s": wall,
        "e2e_per_s": s.completed / wall,
        "submit_per_s": len(s.submit_latency) / submit_wall,
        "submit_p50_ms": percentile(s.submit_latency, 50) * ms,
        "submit_p99_ms": percentile(s.submit_latency, 99) * ms,
        "e2e_p50_ms": percentile(s.e2e_latency, 50) * ms,
        "e2e_p99_ms": percentile(s.e2e_latency, 99) * ms,
        "get_p50_ms": percentile(s.get_latency, 50) * ms,
        "get_p99_ms": percentile(s.get_latency, 99) * ms,
        "gets": len(s.get_latency),
        "errors": s.errors,
    }
    if rate is not None:
        # submit_per_s above is the achieved rate; these say how far behind schedule it ran.
        summary.update({
            "offered_per_s": rate,
            "late_p50_ms": percentile(s.lateness, 50) * ms,
            "late_p99_ms": percentile(s.lateness, 99) * ms,
            "late_max_ms": max(s.lateness, default=math.nan) * ms,
            "late_over_10ms": sum(1 for late in s.lateness if late > LATE_S),
        })  # fmt: skip
    return summary


async def run_load(
    url: str,
    n: int = 3000,
    concurrency: int = 64,
    poll_interval: float = 0.01,
    timeout: float = 120.0,
    *,
    body: bytes | None = None,
    content_type: str = "application/octet-stream",
    request_timeout: float = 30.0,
    rate: float | None = None,
) -> dict[str, Any]:
    """Drive `n` workloads through `url` (``http://host:port/{api}``) and summarise the run.

    Each workload is the JSON ``{"x": i}``, or `body` (sent as `content_type`) when given.
    Without `rate` the `concurrency` lanes submit back to back (closed loop, saturation);
    with it, workload i is offered at start + i/rate by the same lanes (open loop), and the
    summary adds ``offered_per_s`` and the ``late_*`` figures.
    """
    check_loopback(url)
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 workloads/s, not {rate!r}")
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    per_request = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=per_request) as session:
        run = _Run(session, url, concurrency, poll_interval, body, content_type, rate)
        run.schedule_start = time.perf_counter()
        indices = iter(range(n))
        lanes = [run.submit_lane(indices) for _ in range(concurrency)]
        timed_out = False
        try:
            await asyncio.wait_for(_drain(run, lanes), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            for task in list(run.pollers):
                task.cancel()
            await asyncio.gather(*run.pollers, return_exceptions=True)
    return _summarise(run.samples, n, concurrency, timed_out, rate)


async def _drain(run: _Run, lanes: list[Any]) -> None:
    # Lanes share one index iterator, so together they submit each workload exactly once.
    await asyncio.gather(*lanes)
    while run.pollers:
        await asyncio.gather(*list(run.pollers))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url", help="http://127.0.0.1:PORT/API")
    parser.add_argument("-n", type=int, default=3000, help="workloads to submit")
    parser.add_argument("-c", type=int, default=64, help="max HTTP requests in flight")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole run")
    parser.add_argument(
        "--rate", type=float, default=None, help="offer workloads open loop at this rate (/s)"
    )
    args = parser.parse_args(argv)
    if args.rate is not None and not args.rate > 0:
        parser.error("--rate must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        check_loopback(args.url)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(
        run_load(args.url, args.n, args.c, args.poll_interval, args.timeout, rate=args.rate)
    )
    json.dump(json_safe(result), sys.stdout, indent=2)
    print()
    return 0 if result["failures"] == 0 and not result["timed_out"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
