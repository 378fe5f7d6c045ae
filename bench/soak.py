"""Chaos soak: continuous load while workers, gateways, the scheduler and S3 fail at random.

    python -m bench.soak                               # 10 minutes, a fault every 20-60 s
    python -m bench.soak --duration 60 --every 4:8     # the short version `make test` runs
    python -m bench.soak --json bench/results/soak.json --markdown

The system (bench/chaos.py) is two `asyncnb serve --standby` gateways on one `moto_server`
S3 prefix, an external `dask scheduler` and `dask worker` processes. Clients submit at a fixed
rate (open loop) with an `Idempotency-Key` per workload; on a connection error or a 503 they
try the other gateway, and retry with the same key until the workload is accepted. After each
fault the soak submits a probe workload and records when it completed: the fault's window
runs from the fault to then. At the end every accepted workload is checked:

- its final record says `completed`, with the result its payload calls for;
- the same key always got the same id, and storage holds one record per workload and no
  queue entry;
- each execution is a `start` line in the predictor's log: a workload executed twice is a
  duplicate, "at a kill" when one of its executions was running (or had just ended, its
  outcome not yet recorded) when a fault struck, else unexplained.

The exit status is 1 when a workload was lost or failed, a record is missing or doubled, or a
duplicate is unexplained.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.chaos import FAULT_KINDS, Fault, Faults, System
from bench.harness import log, machine_meta, write_json
from bench.loadgen import percentile
from bench.soak_predictor import expected_value

API = "soak"
SUBMIT_GIVE_UP_S = 180.0
PROBE_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 300.0
# An execution that ended this long before a fault may still have had no final record then.
OUTCOME_LAG_S = 3.0


@dataclass
class Submitted:
    n: int
    first_attempt: float
    accepted: float | None = None
    workload_id: str | None = None
    attempts: int = 0
    ids_seen: set[str] = field(default_factory=set)
    record: dict[str, Any] | None = None


class Clients:
    """Submit and read through whichever gateway answers, as a client behind two URLs would."""

    def __init__(self, urls: list[str], run: str) -> None:
        self.urls = urls
        self.run = run
        self.current = 0
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), limits=limits, trust_env=False)
        self.errors: dict[str, int] = defaultdict(int)

    async def close(self) -> None:
        await self.http.aclose()

    def _fail_over(self, url: str) -> None:
        if self.urls[self.current] == url:
            self.current = (self.current + 1) % len(self.urls)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        url = self.urls[self.current]
        try:
            answer = await self.http.request(method, f"{url}{path}", **kwargs)
        except httpx.TransportError as exc:
            self.errors[type(exc).__name__] += 1
            self._fail_over(url)
            return None
        if answer.status_code in (502, 503, 504):
            self.errors[str(answer.status_code)] += 1
            self._fail_over(url)
            return None
        return answer

    async def submit(self, item: Submitted, payload: dict[str, Any]) -> None:
        key = f"{self.run}-{item.n}"
        delay = 0.1
        while time.time() - item.first_attempt < SUBMIT_GIVE_UP_S:
            item.attempts += 1
            answer = await self.request(
                "POST", f"/{API}", json=payload, headers={"Idempotency-Key": key}
            )
            if answer is not None and answer.status_code in (200, 202):
                item.workload_id = answer.json()["id"]
                item.ids_seen.add(item.workload_id)
                item.accepted = item.accepted or time.time()
                return
            if answer is not None:
                self.errors[f"submit {answer.status_code}"] += 1
                if answer.status_code != 429:
                    raise RuntimeError(f"submit {item.n}: {answer.status_code} {answer.text}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def record(self, workload_id: str, deadline: float) -> dict[str, Any] | None:
        """The workload's record once it ended, or None at the deadline."""
        while time.time() < deadline:
            answer = await self.request("GET", f"/{API}/{workload_id}")
            if answer is not None and answer.status_code == 200:
                record: dict[str, Any] = answer.json()
                if record.get("status") in ("completed", "failed", "cancelled"):
                    return record
            await asyncio.sleep(0.25)
        return None


@dataclass
class Soak:
    duration: float
    every: tuple[float, float]
    rate: float
    seed: int
    workdir: Path
    faults: list[Fault] = field(default_factory=list)
    submitted: list[Submitted] = field(default_factory=list)

    async def run(self, system: System, clients: Clients) -> None:
        rng = random.Random(self.seed)
        injector = Faults(system, rng, self.running_pids)
        loop = asyncio.get_running_loop()
        started = time.time()
        load = asyncio.create_task(self._load(clients, rng, started))
        # every kind once, in a random order, then random kinds: a short run sees each
        kinds = rng.sample(FAULT_KINDS, len(FAULT_KINDS))
        while True:
            await asyncio.sleep(rng.uniform(*self.every))
            if time.time() - started >= self.duration and not kinds:
                break
            kind = kinds.pop(0) if kinds else rng.choice(FAULT_KINDS)
            fault = await loop.run_in_executor(None, injector.inject, kind)
            log(f"[{time.time() - started:6.1f} s] {fault.detail}")
            self.faults.append(fault)
            probe = self._new()
            await clients.submit(probe, {"n": probe.n, "sleep": 0.0})
            if probe.workload_id is not None:
                record = await clients.record(probe.workload_id, time.time() + PROBE_TIMEOUT_S)
                if record is not None:
                    fault.recovered = time.time()
                    log(f"  recovered in {fault.recovered - fault.started:.1f} s")
        load.cancel()
        await asyncio.gather(load, return_exceptions=True)

    def _new(self) -> Submitted:
        item = Submitted(len(self.submitted), time.time())
        self.submitted.append(item)
        return item

    async def _load(self, clients: Clients, rng: random.Random, started: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            for tick in range(10**9):
                due = started + tick / self.rate
                await asyncio.sleep(max(0.0, due - time.time()))
                sleep = round(rng.uniform(0.05, 0.35), 3)
                item = self._new()
                task = asyncio.create_task(clients.submit(item, {"n": item.n, "sleep": sleep}))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            # submits in flight finish (their clients keep retrying); new ones stop
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ the executions log
    @property
    def executions_log(self) -> Path:
        return self.workdir / "executions.log"

    def executions(self) -> dict[int, list[tuple[float, float | None]]]:
        """n → [(start, end or None)] per execution."""
        runs: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
        open_runs: dict[tuple[int, str], int] = {}
        if not self.executions_log.exists():
            return runs
        for line in self.executions_log.read_text().splitlines():
            parts = line.split()
            if len(parts) != 4:
                continue
            what, n, at, pid = parts[0], int(parts[1]), float(parts[2]), parts[3]
            if what == "start":
                open_runs[(n, pid)] = len(runs[n])
                runs[n].append((at, None))
            elif (n, pid) in open_runs:
                index = open_runs.pop((n, pid))
                runs[n][index] = (runs[n][index][0], at)
        return runs

    def running_pids(self) -> list[int]:
        if not self.executions_log.exists():
            return []
        open_runs: dict[tuple[str, str], int] = {}
        for line in self.executions_log.read_text().splitlines()[-400:]:
            parts = line.split()
            if len(parts) == 4 and parts[0] == "start":
                open_runs[(parts[1], parts[3])] = int(parts[3])
            elif len(parts) == 4:
                open_runs.pop((parts[1], parts[3]), None)
        return list(open_runs.values())

    # ------------------------------------------------------------------ the checks
    async def drain(self, clients: Clients) -> None:
        deadline = time.time() + DRAIN_TIMEOUT_S
        gate = asyncio.Semaphore(16)

        async def read(item: Submitted) -> None:
            async with gate:
                assert item.workload_id is not None
                item.record = await clients.record(item.workload_id, deadline)

        await asyncio.gather(*(read(i) for i in self.submitted if i.workload_id is not None))

    def report(self, system: System, client_errors: dict[str, int]) -> dict[str, Any]:
        accepted = [i for i in self.submitted if i.workload_id is not None]
        completed = [
            i
            for i in accepted
            if i.record is not None
            and i.record.get("status") == "completed"
            and i.record.get("result") == {"n": i.n, "value": expected_value(i.n)}
        ]
        failed = [
            i for i in accepted if i.record is not None and i.record.get("status") != "completed"
        ]
        wrong = [
            i
            for i in accepted
            if i.record is not None and i.record.get("status") == "completed" and i not in completed
        ]
        lost = [i for i in accepted if i.record is None]
        records = [k for k in system.stored_keys(f"workloads/{API}/") if k.endswith("/status.json")]
        stored_ids = [k.split("/")[-2] for k in records]
        queue_left = system.stored_keys(f"queue/{API}/")
        ids = {i.workload_id for i in accepted}
        runs = self.executions()
        duplicates = {n: r for n, r in runs.items() if len(r) > 1}
        at_kill = {n for n, r in duplicates.items() if self._at_a_fault(r)}
        latency_in, latency_out = self._latencies(completed)
        by_kind: dict[str, list[Fault]] = defaultdict(list)
        for fault in self.faults:
            by_kind[fault.kind].append(fault)
        return {
            "accepted": len(accepted),
            "never_accepted": len(self.submitted) - len(accepted),
            "completed": len(completed),
            "failed": len(failed),
            "wrong_results": len(wrong),
            "lost": len(lost),
            "lost_ids": [i.workload_id for i in lost][:20],
            "failed_records": [i.record for i in failed][:5],
            "ids_changed_on_retry": sum(1 for i in accepted if len(i.ids_seen) > 1),
            "records_in_storage": len(records),
            "records_doubled": len(stored_ids) - len(set(stored_ids)),
            "records_missing": len(ids - set(stored_ids)),
            "records_unknown": len(set(stored_ids) - ids),
            "queue_entries_left": len(queue_left),
            "executions": sum(len(r) for r in runs.values()),
            "never_executed": sum(1 for i in accepted if i.n not in runs),
            "duplicates": len(duplicates),
            "duplicates_at_a_fault": len(at_kill),
            "duplicates_unexplained": sorted(set(duplicates) - at_kill)[:20],
            "submit_attempts": sum(i.attempts for i in self.submitted),
            "client_errors": dict(client_errors),
            "faults": {
                kind: {
                    "count": len(faults),
                    "recovery_p50_s": _round(percentile(_recoveries(faults), 50)),
                    "recovery_max_s": _round(max(_recoveries(faults), default=float("nan"))),
                    "not_recovered": sum(1 for f in faults if f.recovered is None),
                }
                for kind, faults in sorted(by_kind.items())
            },
            "fault_log": [asdict(f) for f in self.faults],
            "e2e_outside_faults_ms": _percentiles(latency_out),
            "e2e_in_fault_windows_ms": _percentiles(latency_in),
            "worker_restarts": system.worker_restarts,
            "gateway_starts": sum(g.starts for g in system.gateways),
        }

    def _at_a_fault(self, runs: list[tuple[float, float | None]]) -> bool:
        """One of the executions overlapped a fault (until its outcome could be recorded)."""
        for start, end in runs[:-1]:
            for fault in self.faults:
                closes = (fault.recovered or fault.started + 60.0) + OUTCOME_LAG_S
                finished = end if end is not None else float("inf")
                if start <= closes and finished + OUTCOME_LAG_S >= fault.started:
                    return True
        return False

    def _latencies(self, completed: list[Submitted]) -> tuple[list[float], list[float]]:
        inside: list[float] = []
        outside: list[float] = []
        windows = [(f.started, f.recovered or f.started + 60.0) for f in self.faults]
        for item in completed:
            assert item.record is not None
            finished = dt.datetime.fromisoformat(item.record["finished_at"]).timestamp()
            e2e = finished - item.first_attempt
            hit = any(item.first_attempt <= end and finished >= start for start, end in windows)
            (inside if hit else outside).append(e2e)
        return inside, outside


def _recoveries(faults: list[Fault]) -> list[float]:
    return [f.recovered - f.started for f in faults if f.recovered is not None]


def _round(value: float) -> float | None:
    return None if value != value else round(value, 1)


def _percentiles(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50": _round(percentile(samples, 50) * 1000),
        "p99": _round(percentile(samples, 99) * 1000),
        "max": _round(max(samples, default=float("nan")) * 1000),
    }


def verdict(report: dict[str, Any]) -> list[str]:
    """What breaks the contract; empty when the soak passed."""
    problems = []
    for name in (
        "lost",
        "failed",
        "wrong_results",
        "ids_changed_on_retry",
        "records_doubled",
        "records_missing",
        "queue_entries_left",
        "never_executed",
        "never_accepted",
    ):
        if report[name]:
            problems.append(f"{name}: {report[name]}")
    if report["duplicates_unexplained"]:
        problems.append(f"duplicates not at a fault: {report['duplicates_unexplained']}")
    return problems


def markdown(report: dict[str, Any], meta: dict[str, Any]) -> str:
    faults = report["faults"]
    rows = [
        "| | |",
        "|---|---|",
        f"| duration, load | {meta['duration_s']:.0f} s, {meta['rate']:g} workloads/s "
        f"(+ a probe after each fault) |",
        f"| workloads accepted | {report['accepted']:,} |",
        f"| completed with the right result | {report['completed']:,} |",
        f"| lost / failed / never accepted | {report['lost']} / {report['failed']} / "
        f"{report['never_accepted']} |",
        f"| records in S3 (doubled, missing) | {report['records_in_storage']:,} "
        f"({report['records_doubled']}, {report['records_missing']}) |",
        f"| duplicate executions (all at a fault) | {report['duplicates']} "
        f"({report['duplicates_at_a_fault']}) |",
    ]
    for kind in FAULT_KINDS:
        if kind in faults:
            f = faults[kind]
            rows.append(
                f"| faults: {kind} | {f['count']}, recovered in p50 {f['recovery_p50_s']} s, "
                f"max {f['recovery_max_s']} s |"
            )
    for label, key in (
        ("e2e outside fault windows", "e2e_outside_faults_ms"),
        ("e2e in fault windows", "e2e_in_fault_windows_ms"),
    ):
        p = report[key]
        rows.append(f"| {label} (n={p['n']:,}) | p50 {p['p50']} ms, p99 {p['p99']} ms |")
    return "\n".join(rows)


async def soak_main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    system = System(workdir, workers=args.workers, lease_ttl=args.lease_ttl)
    soak = Soak(args.duration, args.every, args.rate, args.seed, workdir)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, system.start)
        clients = Clients(system.urls, f"soak{args.seed}")
        try:
            await loop.run_in_executor(None, _deploy, system.urls[0], soak.executions_log)
            await _wait_ready(clients)
            log(f"soak: {args.duration:.0f} s at {args.rate:g}/s, a fault every {args.every} s")
            await soak.run(system, clients)
            log("soak: load stopped; reading every accepted workload's record")
            await soak.drain(clients)
            client_errors = dict(clients.errors)
        finally:
            await clients.close()
        report = soak.report(system, client_errors)
    finally:
        await loop.run_in_executor(None, system.stop)
    return report


def _deploy(url: str, executions_log: Path) -> None:
    from asyncnb.client import Client
    from bench.soak_predictor import Soak as Predictor

    with Client(url) as client:
        client.deploy(Predictor, API, {"log": str(executions_log)})


async def _wait_ready(clients: Clients, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = await clients.request("GET", f"/{API}")
        if answer is not None and answer.status_code == 200 and _ready(answer):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"API {API} not ready after {timeout:.0f} s")


def _ready(answer: httpx.Response) -> bool:
    return bool(answer.json().get("state") == "ready")


def _interval(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def main(argv: list[str] | None = None) -> int:
    summary = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=summary)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--every", type=_interval, default=(20.0, 60.0), help="LOW:HIGH s")
    parser.add_argument("--rate", type=float, default=4.0, help="workloads per second")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lease-ttl", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    meta = {
        **machine_meta(sys.argv),
        "duration_s": args.duration,
        "rate": args.rate,
        "every_s": list(args.every),
        "seed": args.seed,
        "lease_ttl_s": args.lease_ttl,
        "workers": args.workers,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(soak_main(args, args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="asyncnb-soak-") as tmp:
            report = asyncio.run(soak_main(args, Path(tmp)))
    problems = verdict(report)
    write_json(args.json, {"meta": meta, "report": report, "problems": problems})
    table = markdown(report, meta)
    print(table if args.markdown else json.dumps(report, indent=2, default=str))
    if args.json is not None:
        print(table)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
