"""Streaming (issue 16): how soon events reach a reader, what 1,000 streams cost one gateway,
and what streaming costs the workloads that do not stream.

    python -m bench.streaming [--quick] [--json out.json] [--parts light,fanout,throughput]

Real processes only: `asyncnb serve` on loopback with `--workers 2` (a LocalCluster) and a
local-disk storage in a temporary folder. The streaming parts deploy `Ticker` (this file's
generator predictor, `asyncnb deploy bench/streaming.py:Ticker`), which yields its outputs on
a schedule its payload gives: the first at `start_at` (epoch seconds), then one every
`interval`, so every reader is connected before the first output and none of its events is
a replay. The readers are a raw-socket SSE client (an asyncio protocol reading HTTP/1.1
chunks), cheap enough that a thousand of them leave the gateway most of the machine.

1. **light**, event latency at light load: one workload yields `--light-n` outputs (200;
   `--quick` 50) 20 ms apart and prints a line before each; one reader records when each
   `output` and `log` event arrives. Latency = the arrival's wall time - the event's
   `timestamp`, which the worker set when the value was yielded (or the line printed), on
   the same machine's clock. One short workload first warms the path up.
2. **fanout**, many streams on one gateway: `--workloads` workloads (100; quick 20) at once,
   each yielding an output every 100 ms for `--seconds` (10; quick 5), their schedules
   staggered over one interval; `--clients` readers (10) per workload, all in one separate
   process, spread over several loopback source addresses (the gateway caps connections per
   client address at 256), connected before the first output: 1,000 streams (quick 200).
   Latency as above over every output of every stream; each stream must receive every output
   of its workload once, in order, then `completed`. The RSS of the `asyncnb serve` process
   itself (its Dask workers, its children, are summed apart): before the workloads, with them
   submitted, with every stream connected, at its peak (sampled every 50 ms), and 2 s after
   the streams ended; the growth per stream is connected - submitted over the streams.
3. **throughput**, non-streaming work before and after streaming: `--throughput-n` no-op
   workloads (3,000; quick 500) driven by `bench.loadgen` as `bench.run` drives them (64
   requests in flight, each workload polled every 10 ms; workloads/s from the first submit to
   the last completion), after 50 warm-up ones, on a new gateway per run: the current code,
   and commit `--before` (903a1d8, the main branch before streaming) checked out as a git
   worktree in a temporary folder (removed at the end) and imported through PYTHONPATH by the
   same virtualenv's Python. Every gateway is started through a one-line launcher that logs
   which `asyncnb/__init__.py` it imported, checked against the tree it should run; the old
   one also answers 404 on `/events`. Runs alternate before/after, `--rounds` times each (2;
   quick 1); the ratio is after/before of the medians. Beside the wall-clock rate, the
   gateway's CPU time per workload, which the neighbours of a shared machine disturb less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import psutil

from bench.harness import (
    HOST,
    REPO_ROOT,
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
from bench.loadgen import percentile, run_load
from bench.processes import (
    DEPLOY_TIMEOUT_S,
    STARTUP_TIMEOUT_S,
    Proc,
    child_env,
    free_port,
    http_get,
    start_process,
    wait_until,
)

PARTS = ("light", "fanout", "throughput")
API = "ticker"
TICKER = "bench/streaming.py:Ticker"
NOOP, NOOP_PREDICTOR = "noop", "bench/noop_predictor.py:NoOp"
WORKERS = 2
BEFORE_COMMIT = "903a1d8"  # main before streaming (issue 16)

LIGHT_N, QUICK_LIGHT_N = 200, 50
LIGHT_INTERVAL_S = 0.02
FANOUT_WORKLOADS, QUICK_FANOUT_WORKLOADS = 100, 20
FANOUT_CLIENTS = 10
FANOUT_SECONDS, QUICK_FANOUT_SECONDS = 10.0, 5.0
FANOUT_INTERVAL_S = 0.1
THROUGHPUT_N, QUICK_THROUGHPUT_N = 3000, 500
ROUNDS, QUICK_ROUNDS = 2, 1
THROUGHPUT_WARMUP = 50
CONCURRENCY, POLL_INTERVAL_S = 64, 0.01  # as bench.run
THROUGHPUT_GOAL = 0.95  # after / before: no drop beyond the noise

# The gateway refuses a client address its 257th connection: readers spread over 127.0.0.x.
STREAMS_PER_SOURCE = 200
# How long before the first output the readers have to connect: a margin, then per stream.
CONNECT_MARGIN_S, CONNECT_PER_STREAM_S = 4.0, 0.006
SETTLE_AFTER_S = 2.0
READ_TIMEOUT_MARGIN_S = 120.0
TERMINAL = ("completed", "failed", "cancelled")

# Runs `asyncnb` as its console script does, saying first which package it imported. `-P`
# keeps the working directory (this repository) off sys.path: PYTHONPATH alone decides.
LAUNCHER = (
    "import sys, asyncnb; "
    "print('asyncnb imported from', asyncnb.__file__, flush=True); "
    "from asyncnb.cli import main; sys.argv[0] = 'asyncnb'; sys.exit(main())"
)
IMPORTED = re.compile(r"asyncnb imported from (\S+)")

T = TypeVar("T")


class Ticker:
    """Yields `n` outputs `{"i": i}`, output i at `start_at + i * interval` (epoch seconds;
    now when unset), printing `tick i` before each when `log` is set."""

    def predict(self, payload: Any) -> Any:
        n, interval = int(payload["n"]), float(payload["interval"])
        start = float(payload.get("start_at") or time.time())
        for i in range(n):
            delay = start + i * interval - time.time()
            if delay > 0:
                time.sleep(delay)
            if payload.get("log"):
                print(f"tick {i}")
            yield {"i": i}


# --------------------------------------------------------------------------- the SSE reader


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class SseReader(asyncio.Protocol):
    """One `GET /{api}/{id}/events` on its own connection: what arrived, when, in what order.

    Arrival is the wall time of the read that completed the event. Checks as it reads: event
    ids increase, outputs come with index 0, 1, 2... (one attempt), a terminal event ends it.
    """

    def __init__(self, host: str, port: int, path: str, expected: int) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        self.expected = expected
        loop = asyncio.get_running_loop()
        self.headers: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.error: str | None = None
        self._head = bytearray()
        self._chunked = False
        self._raw = bytearray()  # chunked body not decoded yet
        self._left = 0  # bytes of the current chunk still to come
        self._crlf = False  # a chunk's closing CRLF is due
        self._ended = False  # the last chunk came: what follows is the trailer
        self._sse = bytearray()  # decoded text not yet a whole event
        self.connected_at: float | None = None
        self.last_event_id = 0
        self.disordered = 0  # events whose id did not increase
        self.indices: list[int] = []
        self.output_latency: list[float] = []
        self.output_sent: list[float] = []  # each output's timestamp, beside its latency
        self.log_latency: list[float] = []
        self.first_output_t: float | None = None
        self.attempts: set[int] = set()
        self.events = 0
        self.keepalives = 0
        self.terminal: str | None = None

    # the connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.terminal is None and self.error is None:
            self.error = f"connection lost before the terminal event ({exc!r})"
        self._finish()

    def _finish(self) -> None:
        for future in (self.headers, self.done):
            if not future.done():
                future.set_result(None)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def fail(self, reason: str) -> None:
        self.error = self.error or reason
        self._finish()

    # reading ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.headers.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            self._chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            if self.status != 200:
                self.fail(f"answered {lines[0]!r}")
                return
            self.connected_at = now
            self.headers.set_result(None)
            data = rest
        if self._chunked:
            self._raw += data
            self._dechunk()
        else:
            self._sse += data
        self._events(now)

    def _dechunk(self) -> None:
        raw = self._raw
        while raw and not self._ended:
            if self._crlf:
                if len(raw) < 2:
                    return
                del raw[:2]
                self._crlf = False
                continue
            if self._left == 0:
                end = raw.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(raw[:end]).split(b";", 1)[0], 16)
                del raw[: end + 2]
                if size == 0:
                    self._ended = True  # the body's end; the terminal event came before it
                    raw.clear()
                    return
                self._left = size
            take = min(self._left, len(raw))
            self._sse += raw[:take]
            del raw[:take]
            self._left -= take
            if self._left == 0:
                self._crlf = True

    def _events(self, now: float) -> None:
        while self.terminal is None:
            end = self._sse.find(b"\n\n")
            if end < 0:
                return
            frame = bytes(self._sse[:end])
            del self._sse[: end + 2]
            data = None
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    data = json.loads(line[5:])
                elif line.startswith(b":"):
                    self.keepalives += 1
            if data is not None:
                self.on_event(data, now)

    def on_event(self, event: dict[str, Any], now: float) -> None:
        self.events += 1
        event_id = int(event["event_id"])
        if event_id <= self.last_event_id:
            self.disordered += 1
        self.last_event_id = event_id
        self.attempts.add(int(event.get("attempt") or 0))
        kind = event["type"]
        if kind == "output":
            self.indices.append(int(event["index"]))
            sent = stamp(event["timestamp"])
            self.first_output_t = self.first_output_t or sent
            self.output_sent.append(sent)
            self.output_latency.append(now - sent)
        elif kind == "log":
            self.log_latency.append(now - stamp(event["timestamp"]))
        elif kind in TERMINAL:
            self.terminal = kind
            self._finish()

    # the verdict --------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """Every output of the workload, once each and in order, then `completed`."""
        return (
            self.error is None
            and self.terminal == "completed"
            and self.disordered == 0
            and self.indices == list(range(self.expected))
        )

    def problem(self) -> str | None:
        if self.complete:
            return None
        if self.error:
            return self.error
        if self.terminal != "completed":
            return f"ended {self.terminal}"
        got, want = self.indices, list(range(self.expected))
        if len(got) != len(want):
            return f"{len(got)} of {len(want)} outputs"
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        return f"output {first} came as index {got[first]}"


async def read_streams(
    host: str,
    port: int,
    streams: Sequence[dict[str, Any]],
    timeout: float,
    on_connected: Callable[[list[SseReader]], None] | None = None,
    connecting: int = 100,
) -> list[SseReader]:
    """Open one reader per stream ({"path", "outputs", "source"}), at most `connecting` at a
    time until their heads are in; then read every one to its end (or `timeout`)."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(connecting)
    readers: list[SseReader] = []

    async def connect(stream: dict[str, Any]) -> None:
        reader = SseReader(host, port, stream["path"], int(stream["outputs"]))
        readers.append(reader)
        async with gate:
            try:
                await loop.create_connection(
                    lambda: reader, host, port, local_addr=(stream.get("source", host), 0)
                )
            except OSError as exc:
                reader.fail(f"connect: {exc!r}")
                return
            await reader.headers

    limit = time.monotonic() + timeout
    try:
        await asyncio.wait_for(asyncio.gather(*(connect(s) for s in streams)), timeout)
        if on_connected is not None:
            on_connected(readers)
        left = max(1.0, limit - time.monotonic())
        await asyncio.wait_for(asyncio.gather(*(r.done for r in readers)), left)
    except TimeoutError:
        for reader in readers:
            reader.fail(f"not finished within {timeout:.0f} s")
    return readers


def run_async(coro: Awaitable[T]) -> T:
    """On uvloop where it is installed (as the gateway runs), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


def ms(value: Any) -> str:
    """A figure in ms for the log; "n/a" when it could not be measured."""
    return "n/a" if value is None else f"{value:.1f} ms"


def latency_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    """count, p50/p95/p99/max/mean in milliseconds (nearest rank, like bench.loadgen)."""
    if not samples_s:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(samples_s),
        "p50_ms": percentile(samples_s, 50) * 1000,
        "p95_ms": percentile(samples_s, 95) * 1000,
        "p99_ms": percentile(samples_s, 99) * 1000,
        "max_ms": max(samples_s) * 1000,
        "mean_ms": statistics.fmean(samples_s) * 1000,
    }


def latency_over_time(readers: Sequence[SseReader], step_s: float = 1.0) -> list[dict[str, Any]]:
    """Output latency per `step_s` of the run (by when the worker yielded each output): a
    backlog that builds up shows as a latency that grows from one step to the next."""
    pairs = [(t, x) for r in readers for t, x in zip(r.output_sent, r.output_latency, strict=True)]
    if not pairs:
        return []
    first = min(t for t, _ in pairs)
    steps: dict[int, list[float]] = {}
    for t, x in pairs:
        steps.setdefault(int((t - first) / step_s), []).append(x)
    return [
        {
            "from_s": step * step_s,
            "count": len(found),
            "p50_ms": percentile(found, 50) * 1000,
            "p95_ms": percentile(found, 95) * 1000,
            "max_ms": max(found) * 1000,
        }
        for step, found in sorted(steps.items())
    ]


def summarise_readers(
    readers: Sequence[SseReader], starts: Sequence[float | None] = ()
) -> dict[str, Any]:
    """What every reader got, together: how many are complete, and the events' latency.

    `starts`, per reader, is when its workload's first output was due: how late the first
    output came says whether every workload really ran at once."""
    problems = [p for r in readers if (p := r.problem()) is not None]
    lags = [
        r.first_output_t - start
        for r, start in zip(readers, starts, strict=False)
        if start is not None and r.first_output_t is not None
    ]
    connected = [r.connected_at for r in readers if r.connected_at is not None]
    return {
        "streams": len(readers),
        "connected": len(connected),
        "complete": sum(1 for r in readers if r.complete),
        "outputs_expected": sum(r.expected for r in readers),
        "outputs_received": sum(len(r.indices) for r in readers),
        "events_received": sum(r.events for r in readers),
        "keepalives": sum(r.keepalives for r in readers),
        "attempts_seen": sorted({a for r in readers for a in r.attempts}),
        "problems": len(problems),
        "first_problems": sorted(set(problems))[:5],
        "last_connected_at": max(connected, default=None),
        "first_output_lag_max_ms": max(lags) * 1000 if lags else None,
        "output_latency": latency_ms([x for r in readers for x in r.output_latency]),
        "log_latency": latency_ms([x for r in readers for x in r.log_latency]),
        "latency_over_time": latency_over_time(readers),
    }


# --------------------------------------------------------------------------- the client process


def clients_main(spec_path: Path, result_path: Path) -> int:
    """The readers of the fan-out, in a process of their own: a line `{"connected": n}` on
    stdout once every head is in, then the summary in `result_path`."""
    spec = json.loads(spec_path.read_text())
    streams = spec["streams"]

    def connected(readers: list[SseReader]) -> None:
        count = sum(1 for r in readers if r.connected_at is not None)
        print(json.dumps({"connected": count, "at": time.time()}), flush=True)

    started = time.time()
    readers = run_async(
        read_streams(spec["host"], spec["port"], streams, spec["timeout"], connected)
    )
    summary = summarise_readers(readers, [s.get("start_at") for s in streams])
    times = psutil.Process().cpu_times()
    summary["client_cpu_s"] = times.user + times.system
    summary["client_wall_s"] = time.time() - started
    summary["client_rss_bytes"] = psutil.Process().memory_info().rss
    result_path.write_text(json.dumps(summary))
    return 0


# --------------------------------------------------------------------------- helpers


def submit(http: httpx.Client, api: str, payload: dict[str, Any]) -> str:
    resp = http.post(f"/{api}", json=payload)
    if resp.status_code != 202:
        raise BenchError(f"POST /{api} answered {resp.status_code}: {resp.text[:300]}")
    return str(resp.json()["id"])


def http_client(base: str) -> httpx.Client:
    # trust_env=False: a proxy from the environment must never see loopback traffic.
    return httpx.Client(base_url=base, timeout=30, trust_env=False)


def children(pid: int) -> dict[str, int]:
    """The gateway's child processes (its Dask workers and their helpers), by name."""
    with contextlib.suppress(psutil.Error):
        return {f"child-{c.pid}": c.pid for c in psutil.Process(pid).children(recursive=True)}
    return {}


def cpu_of(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes, together."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process: a busy event loop shows as one thread."""
    with contextlib.suppress(psutil.Error):
        return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}
    return {}


def rss_of(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += int(psutil.Process(pid).memory_info().rss)
    return total


def event_segments(storage: Path, api: str, ids: Sequence[str] | None = None) -> dict[str, int]:
    """The event segments the gateway wrote for `api` (one storage object per flush), of the
    workloads `ids` (None: all), and how many workloads have any."""
    base = storage / "workloads" / api
    found = base.glob("*/events") if ids is None else (base / i / "events" for i in ids)
    folders = [d for d in found if d.is_dir()]
    return {
        "segments": sum(1 for d in folders for _ in d.glob("*.jsonl")),
        "workloads_with_events": len(folders),
    }


def raise_fd_limit(wanted: int = 8192) -> None:
    """A soft limit of open files enough for the streams (a common default is 1,024), up to
    the hard limit; the gateways and the readers' process inherit it."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def sources(streams: int) -> list[str]:
    """Loopback source addresses enough for `streams` connections under the per-address cap."""
    return [f"127.0.0.{2 + i}" for i in range(max(1, math.ceil(streams / STREAMS_PER_SOURCE)))]


# --------------------------------------------------------------------------- 1. light load


def measure_light(gateway: Gateway, n: int) -> dict[str, Any]:
    port = int(gateway.base.rsplit(":", 1)[1])

    def one(count: int, lead_s: float) -> tuple[dict[str, Any], float]:
        start_at = time.time() + lead_s
        payload = {"n": count, "interval": LIGHT_INTERVAL_S, "start_at": start_at, "log": True}
        with http_client(gateway.base) as http:
            workload_id = submit(http, API, payload)
        stream = {"path": f"/{API}/{workload_id}/events", "outputs": count}
        timeout = lead_s + count * LIGHT_INTERVAL_S + READ_TIMEOUT_MARGIN_S
        readers = run_async(read_streams(HOST, port, [stream], timeout))
        return summarise_readers(readers, [start_at]), start_at

    one(10, 0.5)  # warm-up: the predictor built, the stream's path taken once
    found, start_at = one(n, 1.0)
    connected = found["last_connected_at"]
    found |= {
        "n": n,
        "interval_ms": LIGHT_INTERVAL_S * 1000,
        "connected_before_first_output": connected is not None and connected < start_at,
    }
    out, logs = found["output_latency"], found["log_latency"]
    log(
        f"[streaming] light: {out['count']} outputs p50 {ms(out['p50_ms'])}, p95 "
        f"{ms(out['p95_ms'])}, max {ms(out['max_ms'])}; {logs['count']} log lines p50 "
        f"{ms(logs['p50_ms'])}, p95 {ms(logs['p95_ms'])}; complete: {found['complete']}/1"
    )
    if not found["complete"]:
        log(f"[streaming] light: {found['first_problems']}")
    return found


# --------------------------------------------------------------------------- 2. fan-out


def measure_fanout(
    gateway: Gateway, workdir: Path, workloads: int, clients: int, seconds: float, round_: int = 1
) -> dict[str, Any]:
    n = max(1, round(seconds / FANOUT_INTERVAL_S))
    total = workloads * clients
    port = int(gateway.base.rsplit(":", 1)[1])
    kids = children(gateway.pid)
    rss_before, workers_before = gateway.rss(), rss_of(list(kids.values()))
    lead = CONNECT_MARGIN_S + total * CONNECT_PER_STREAM_S
    start_at = time.time() + lead
    starts = [start_at + k / workloads * FANOUT_INTERVAL_S for k in range(workloads)]
    log(
        f"[streaming] fanout: {workloads} workloads x {n} outputs every "
        f"{FANOUT_INTERVAL_S * 1000:g} ms, {clients} readers each ({total:,} streams), "
        f"first output in {lead:.1f} s"
    )
    with http_client(gateway.base) as http:
        ids = [
            submit(http, API, {"n": n, "interval": FANOUT_INTERVAL_S, "start_at": at})
            for at in starts
        ]
    rss_submitted = gateway.rss()
    addresses = sources(total)
    streams = [
        {
            "path": f"/{API}/{workload_id}/events",
            "outputs": n,
            "start_at": at,
            "source": addresses[(k * clients + c) % len(addresses)],
        }
        for k, (workload_id, at) in enumerate(zip(ids, starts, strict=True))
        for c in range(clients)
    ]
    spec_path, result_path = workdir / f"clients-{round_}.json", workdir / f"result-{round_}.json"
    errors_path = workdir / f"clients-{round_}.log"
    timeout = lead + seconds + READ_TIMEOUT_MARGIN_S
    spec = {"host": HOST, "port": port, "streams": streams, "timeout": timeout}
    spec_path.write_text(json.dumps(spec))
    argv = [
        sys.executable, "-m", "bench.streaming",
        "--sse-clients", str(spec_path), "--sse-result", str(result_path),
    ]  # fmt: skip
    connected_at = rss_connected = workers_connected = None
    cpu_start = cpu_end = workers_cpu_start = workers_cpu_end = 0.0
    threads_start: dict[int, float] = {}
    threads_end: dict[int, float] = {}
    with errors_path.open("wb") as errors:
        clients_proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
    try:
        sampled = {"gateway": gateway.pid, **kids}
        with RssSampler(sampled, interval=0.05) as sampler:
            assert clients_proc.stdout is not None
            line = clients_proc.stdout.readline()
            if line:
                connected_at = float(json.loads(line)["at"])
                rss_connected = gateway.rss()
                workers_connected = rss_of(list(kids.values()))
                log(
                    f"[streaming] fanout: {json.loads(line)['connected']:,} streams connected "
                    f"{start_at - connected_at:.1f} s before the first output"
                )
                time.sleep(max(0.0, start_at - time.time()))  # CPU counts from the first output
            cpu_from = time.time()
            cpu_start = gateway.cpu_seconds()
            workers_cpu_start = cpu_of(list(kids.values()))
            threads_start = thread_cpu(gateway.pid)
            code = clients_proc.wait(timeout + 30)
            cpu_to = time.time()
            cpu_end = gateway.cpu_seconds()
            workers_cpu_end = cpu_of(list(kids.values()))
            threads_end = thread_cpu(gateway.pid)
    finally:
        if clients_proc.poll() is None:
            clients_proc.terminate()
            try:
                clients_proc.wait(10)
            except subprocess.TimeoutExpired:
                clients_proc.kill()
                clients_proc.wait(10)
        if clients_proc.stdout is not None:
            clients_proc.stdout.close()
    if code != 0 or not result_path.exists():
        tail = errors_path.read_text(errors="replace")[-2000:]
        raise BenchError(f"the SSE client process exited {code}:\n{tail}")
    found: dict[str, Any] = json.loads(result_path.read_text())
    time.sleep(SETTLE_AFTER_S)
    segments = event_segments(gateway.storage, API, ids)
    rss_after, workers_after = gateway.rss(), rss_of(list(kids.values()))
    workers_peak = sum(sampler.peak.get(name, 0) for name in kids)
    per_stream = (rss_connected - rss_submitted) / total if rss_connected is not None else math.nan
    streaming_s = max(1e-9, cpu_to - cpu_from)  # the first output due → the last reader done
    found |= {
        "workloads": workloads,
        "clients_per_workload": clients,
        "outputs_per_workload": n,
        "interval_ms": FANOUT_INTERVAL_S * 1000,
        "source_addresses": len(addresses),
        "connected_before_first_output": connected_at is not None and connected_at < start_at,
        "connect_lead_s": start_at - connected_at if connected_at is not None else None,
        "rss": {
            "before_bytes": rss_before,
            "submitted_bytes": rss_submitted,
            "connected_bytes": rss_connected,
            "peak_bytes": sampler.peak["gateway"],
            "after_bytes": rss_after,
        },
        "rss_per_stream_bytes": per_stream,
        "rss_peak_per_stream_bytes": (sampler.peak["gateway"] - rss_before) / total,
        "workers_rss": {
            "processes": len(kids),
            "before_bytes": workers_before,
            "connected_bytes": workers_connected,
            "peak_bytes": workers_peak,
            "after_bytes": workers_after,
        },
        "gateway_cpu_s": cpu_end - cpu_start,
        "gateway_cpu_share": (cpu_end - cpu_start) / streaming_s,
        # its busiest thread (the event loop, where the Dask scheduler runs too): near 100%,
        # the gateway cannot take more, whatever the other threads do
        "gateway_busiest_thread_share": max(
            (t - threads_start.get(i, 0.0) for i, t in threads_end.items()), default=0.0
        )
        / streaming_s,
        "workers_cpu_share": (workers_cpu_end - workers_cpu_start) / streaming_s,
        # what one output cost the gateway, its fan-out to every reader included
        "gateway_cpu_ms_per_output": (cpu_end - cpu_start) / (workloads * n) * 1000,
        "events_per_s": found["events_received"] / streaming_s,
        # how this round's events were cut into storage objects (one per flush)
        "event_segments": segments["segments"],
    }
    log_fanout(found)
    return found


def log_fanout(found: dict[str, Any]) -> None:
    out, rss = found["output_latency"], found["rss"]
    mib = 2**20
    log(
        f"[streaming] fanout: {found['complete']:,}/{found['streams']:,} streams complete, "
        f"{found['outputs_received']:,} of {found['outputs_expected']:,} outputs; latency p50 "
        f"{ms(out['p50_ms'])}, p95 {ms(out['p95_ms'])}, max {ms(out['max_ms'])}"
    )
    log(
        f"[streaming] fanout: gateway RSS {rss['before_bytes'] / mib:.1f} MiB before, "
        f"{rss['submitted_bytes'] / mib:.1f} submitted, "
        f"{(rss['connected_bytes'] or 0) / mib:.1f} connected, {rss['peak_bytes'] / mib:.1f} "
        f"peak, {rss['after_bytes'] / mib:.1f} after: "
        f"{found['rss_per_stream_bytes'] / 1024:.1f} KiB per stream; gateway CPU "
        f"{found['gateway_cpu_share']:.0%} of a core ({found['gateway_cpu_ms_per_output']:.2f} ms "
        f"per output; busiest thread {found['gateway_busiest_thread_share']:.0%}), workers "
        f"{found['workers_cpu_share']:.0%}, readers' process "
        f"{found['client_cpu_s']:.1f} s CPU over {found['client_wall_s']:.1f} s"
    )
    log(
        f"[streaming] fanout: {found['event_segments']:,} event segments in storage for "
        f"{found['workloads']} workloads of {found['outputs_per_workload']} outputs"
    )
    if found["problems"]:
        log(f"[streaming] fanout: problems: {found['first_problems']}")


def measure_streaming(opts: argparse.Namespace, results: dict[str, Any]) -> None:
    """The light and fan-out parts, on one gateway with a slot per fan-out workload."""
    threads = max(4, math.ceil(opts.workloads / WORKERS))
    with (
        tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        extra = ["--threads-per-worker", str(threads)]
        gateway = start_gateway(stack, Path(tmp), workers=WORKERS, extra=extra)
        deploy_api(gateway, TICKER, API, max_concurrency=threads)
        wait_api_state(gateway, API, workers=WORKERS)
        results["gateway"] = {"workers": WORKERS, "threads_per_worker": threads}
        if "light" in opts.parts:
            results["light"] = measure_light(gateway, opts.light_n)
        if "fanout" in opts.parts:
            sizes = (opts.workloads, opts.clients, opts.seconds)
            first = results["fanout"] = measure_fanout(gateway, Path(tmp), *sizes)
            # The same again on the same gateway: memory that a stream leaves behind grows
            # again, the allocator's high-water mark does not.
            log("[streaming] fanout: a second round on the same gateway")
            again = measure_fanout(gateway, Path(tmp), *sizes, round_=2)
            first["again"] = {
                k: again[k]
                for k in (
                    "streams", "complete", "outputs_received", "output_latency", "rss",
                    "rss_per_stream_bytes", "gateway_cpu_share", "connected_before_first_output",
                )
            }  # fmt: skip


# --------------------------------------------------------------------------- 3. throughput


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(path: Path, commit: str) -> Iterator[Path]:
    """`commit` checked out at `path` (detached), removed again whatever happens."""
    git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path
    finally:
        try:
            git("worktree", "remove", "--force", str(path))
        except BenchError as exc:
            log(f"[streaming] {exc}")
        with contextlib.suppress(BenchError):
            git("worktree", "prune")


def code_env(root: Path | None) -> dict[str, str]:
    """The environment of a gateway running the code at `root` (None: this repository)."""
    env = child_env()
    if root is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return env


def imported_from(proc: Proc) -> Path:
    found = IMPORTED.search(proc.log_path.read_text(errors="replace"))
    if found is None:
        raise BenchError(f"{proc.name} did not say which asyncnb it imported:\n{proc.log_tail()}")
    return Path(found.group(1)).resolve()


def throughput_run(label: str, root: Path, env: dict[str, str], n: int) -> dict[str, Any]:
    """One gateway on the code at `root`: warm-up, then `n` no-op workloads through loadgen."""
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-streaming-{label}-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        storage = Path(tmp) / "storage"
        storage.mkdir()
        port = free_port()
        base = f"http://{HOST}:{port}"
        argv = [
            sys.executable, "-P", "-c", LAUNCHER, "serve", "--host", HOST, "--port", str(port),
            "--storage", f"file://{storage}", "--workers", str(WORKERS),
        ]  # fmt: skip
        proc = start_process(stack, f"asyncnb-serve-{label}", argv, Path(tmp), env)
        wait_until(
            f"{base}/healthz",
            lambda: http_get(f"{base}/healthz")[0] == 200,
            [proc],
            STARTUP_TIMEOUT_S,
        )
        package = imported_from(proc)
        if not package.is_relative_to(root.resolve()):
            raise BenchError(f"the {label} gateway imported {package}, not the code in {root}")
        deploy = [sys.executable, "-P", "-c", LAUNCHER, "deploy", NOOP_PREDICTOR, "--name", NOOP,
                  "--gateway", base]  # fmt: skip
        done = subprocess.run(
            deploy, cwd=REPO_ROOT, env=env, capture_output=True, timeout=DEPLOY_TIMEOUT_S
        )
        if done.returncode != 0:
            raise BenchError(f"deploy ({label}) exited {done.returncode}: {done.stderr[-1500:]!r}")

        def ready() -> bool:
            code, raw = http_get(f"{base}/{NOOP}")
            status = json.loads(raw) if code == 200 else {}
            if status.get("state") == "error":
                raise BenchError(f"the {label} no-op API failed: {status.get('error')}")
            return status.get("state") == "ready" and int(status.get("workers", 0)) >= WORKERS

        wait_until(f"{base}/{NOOP} ready", ready, [proc], DEPLOY_TIMEOUT_S)
        url = f"{base}/{NOOP}"
        warm = asyncio.run(run_load(url, THROUGHPUT_WARMUP, CONCURRENCY, POLL_INTERVAL_S, 120))
        if warm["failures"] or warm["timed_out"]:
            raise BenchError(f"warm-up ({label}) failed: {warm['errors'] or 'timed out'}")
        gateway = psutil.Process(proc.popen.pid)
        cpu = gateway.cpu_times()
        found = asyncio.run(run_load(url, n, CONCURRENCY, POLL_INTERVAL_S, 120 + n / 50))
        after = gateway.cpu_times()
        cpu_s = (after.user + after.system) - (cpu.user + cpu.system)
        with http_client(base) as http:
            probe = submit(http, NOOP, {"x": "probe"})
            events = http.get(f"/{NOOP}/{probe}/events", headers={"Accept": "application/json"})
        rss = int(gateway.memory_info().rss)
        segments = event_segments(storage, NOOP)
    keys = ("n", "completed", "failures", "timed_out", "wall_s", "e2e_per_s", "submit_per_s",
            "e2e_p50_ms", "e2e_p99_ms", "get_p50_ms", "errors")  # fmt: skip
    return {
        "code": label,
        "asyncnb_file": str(package),
        "events_route_status": events.status_code,
        **{k: found[k] for k in keys},
        "gateway_cpu_us_per_workload": cpu_s / n * 1e6,
        "gateway_rss_bytes": rss,
        "event_segments": segments["segments"],
    }


def measure_throughput(opts: argparse.Namespace) -> dict[str, Any]:
    commit = git("rev-parse", "--verify", f"{opts.before}^{{commit}}")
    head = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--", "asyncnb"))  # the package, new files too
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-streaming-git-") as tmp,
        worktree(Path(tmp) / "before", commit) as old_root,
    ):
        codes = {"before": (old_root, code_env(old_root)), "after": (REPO_ROOT, code_env(None))}
        for round_ in range(opts.rounds):
            for label in ("before", "after"):
                root, env = codes[label]
                log(f"[streaming] throughput {round_ + 1}/{opts.rounds}, {label}: {root}")
                run = throughput_run(label, root, env, opts.throughput_n)
                run["round"] = round_ + 1
                runs.append(run)
                log(
                    f"[streaming] throughput {label}: {run['e2e_per_s']:.0f} workloads/s, "
                    f"gateway CPU {run['gateway_cpu_us_per_workload']:.0f} µs/workload, "
                    f"failures {run['failures']}, imported {run['asyncnb_file']}, "
                    f"/events answered {run['events_route_status']}, "
                    f"{run['event_segments']:,} event segments in storage"
                )
    failed = [r for r in runs if r["failures"] or r["timed_out"]]
    if failed:
        raise BenchError(f"{failed[0]['code']} lost workloads: {failed[0]['errors']}")

    def median(label: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs if r["code"] == label)

    before, after = median("before", "e2e_per_s"), median("after", "e2e_per_s")
    cpu_before = median("before", "gateway_cpu_us_per_workload")
    cpu_after = median("after", "gateway_cpu_us_per_workload")
    found = {
        "n": opts.throughput_n,
        "rounds": opts.rounds,
        "concurrency": CONCURRENCY,
        "poll_interval_ms": POLL_INTERVAL_S * 1000,
        "before_commit": commit,
        "after_commit": head + (" with uncommitted changes" if dirty else ""),
        "runs": runs,
        "before_per_s": before,
        "after_per_s": after,
        "ratio": after / before,
        "cpu_before_us": cpu_before,
        "cpu_after_us": cpu_after,
        "cpu_ratio": cpu_after / cpu_before,
    }
    log(
        f"[streaming] throughput: after / before {found['ratio']:.2f}x ({after:.0f} vs "
        f"{before:.0f}/s); gateway CPU per workload {found['cpu_ratio']:.2f}x"
    )
    return found


# --------------------------------------------------------------------------- the run


def run(opts: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"parts": list(opts.parts)}
    if {"light", "fanout"} & set(opts.parts):
        measure_streaming(opts, results)
    if "throughput" in opts.parts:
        results["throughput"] = measure_throughput(opts)
    return results


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    fan = results.get("fanout")
    if fan:
        lat = fan["output_latency"]
        checks.append(
            target(
                f"{fan['streams']:,} SSE streams on one gateway: every output delivered, in order",
                f"all {fan['outputs_per_workload']} outputs of each of {fan['workloads']} "
                f"workloads to each of its {fan['clients_per_workload']} readers",
                f"{fan['complete']:,}/{fan['streams']:,} streams complete, "
                f"{fan['outputs_received']:,} of {fan['outputs_expected']:,} outputs "
                f"(latency p50 {lat['p50_ms']:.0f} ms, p95 {lat['p95_ms']:.0f} ms)",
                fan["complete"] == fan["streams"],
            )
        )
    thr = results.get("throughput")
    if thr:
        checks.append(
            target(
                "non-streaming throughput, after / before streaming (medians)",
                f">= {THROUGHPUT_GOAL:g}x",
                f"{thr['ratio']:.2f}x ({thr['after_per_s']:.0f} vs {thr['before_per_s']:.0f} "
                f"workloads/s, {thr['rounds']} run{'s' if thr['rounds'] != 1 else ''} each; "
                "gateway CPU "
                f"{thr['cpu_after_us']:.0f} vs {thr['cpu_before_us']:.0f} µs/workload)",
                thr["ratio"] >= THROUGHPUT_GOAL,
            )
        )
    return checks


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.streaming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS)
    )
    parser.add_argument("--light-n", type=int, default=None, help=f"outputs ({LIGHT_N})")
    parser.add_argument("--workloads", type=int, default=None, help=f"({FANOUT_WORKLOADS})")
    parser.add_argument("--clients", type=int, default=FANOUT_CLIENTS, help="per workload")
    parser.add_argument("--seconds", type=float, default=None, help=f"({FANOUT_SECONDS:g})")
    parser.add_argument("--throughput-n", type=int, default=None, help=f"({THROUGHPUT_N})")
    parser.add_argument("--rounds", type=int, default=None, help=f"before/after pairs ({ROUNDS})")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="commit before streaming")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds for it all")
    parser.add_argument("--quick", action="store_true", help="small sizes, ~2 minutes")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    # the readers' process of the fan-out (internal)
    parser.add_argument("--sse-clients", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sse-result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "light_n": QUICK_LIGHT_N if quick else LIGHT_N,
        "workloads": QUICK_FANOUT_WORKLOADS if quick else FANOUT_WORKLOADS,
        "seconds": QUICK_FANOUT_SECONDS if quick else FANOUT_SECONDS,
        "throughput_n": QUICK_THROUGHPUT_N if quick else THROUGHPUT_N,
        "rounds": QUICK_ROUNDS if quick else ROUNDS,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    sizes = (args.light_n, args.workloads, args.clients, args.throughput_n, args.rounds)
    if min(sizes) < 1 or not args.seconds > 0:
        parser.error("sizes, --rounds and --seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    raise_fd_limit()
    if args.sse_clients is not None:
        return clients_main(args.sse_clients, args.sse_result)
    meta = machine_meta(["python -m bench.streaming", *raw])
    try:
        with deadline(args.timeout, "bench.streaming"):
            results = run(args)
    except BenchError as exc:
        log(f"[streaming] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    checks = evaluate(results)
    log_targets("streaming", checks)
    write_json(args.json, {"meta": meta, "results": results, "targets": checks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
