"""What `--durability fsync` costs a submit: 202s per second and submit latency, buffered vs fsync.

    python -m bench.durability                  # 5 rounds of 3,000 submits per mode
    python -m bench.durability --quick          # 2 rounds of 1,000
    python -m bench.durability --json bench/results/durability.json

Two `asyncnb serve --workers 1` gateways on local disk (the journal), one per mode, started
together and measured in alternating rounds (buffered, fsync, buffered, ...), so a shared
machine's drift hits both alike. A round is N no-op submits from 64 concurrent clients, back to
back (closed loop): nothing but `POST /{api}` is timed; the workloads run on the gateway's
worker as usual (their final records share the fsyncs too) and drain before the next round.
The fsync gateway's `/metrics` gives the fsyncs (group commits) each round cost. The raw cost of
one fsync on this disk (a 1 KiB append, then fsync) is measured alone for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import (
    BenchError,
    Gateway,
    deadline,
    deploy_api,
    log,
    machine_meta,
    start_gateway,
    wait_api_state,
    write_json,
)
from bench.loadgen import percentile
from bench.processes import http_get
from bench.submits import drain, submit_round

PREDICTOR = "bench/noop_predictor.py:NoOp"
API = "noop"
MODES = ("buffered", "fsync")
CLIENTS = 64
DEFAULT_N, DEFAULT_ROUNDS = 3000, 5
QUICK_N, QUICK_ROUNDS = 1000, 2
WARMUP_N = 200


def journal_fsyncs(gateway: Gateway) -> float:
    code, raw = http_get(f"{gateway.base}/metrics", timeout=5)
    if code != 200:
        raise BenchError(f"GET /metrics answered {code}")
    match = re.search(rb"^asyncnb_journal_fsyncs_total (\S+)$", raw, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def raw_fsync_ms(folder: Path, samples: int = 200) -> dict[str, float]:
    """One 1 KiB append then fsync, `samples` times: this disk's own cost of an fsync."""
    path = folder / "fsync-probe.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    took = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 1024)
            started = time.perf_counter()
            os.fsync(fd)
            took.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50_ms": percentile(took, 50) * 1000, "p99_ms": percentile(took, 99) * 1000}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, the medians over its rounds; fsync / buffered ratios."""
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in rounds if r["mode"] == mode]
        modes[mode] = {
            key: statistics.median(r[key] for r in mine)
            for key in ("submit_per_s", "submit_p50_ms", "submit_p99_ms")
        }
        modes[mode]["failures"] = sum(r["failures"] for r in mine)
        if mode == "fsync":
            fsyncs = sum(r.get("fsyncs", 0) for r in mine)
            accepted = sum(r["accepted"] for r in mine)
            modes[mode]["fsyncs_per_submit"] = fsyncs / accepted if accepted else None
    buffered, fsync = modes["buffered"], modes["fsync"]
    return {
        "modes": modes,
        "rate_ratio": fsync["submit_per_s"] / buffered["submit_per_s"],
        "p50_added_ms": fsync["submit_p50_ms"] - buffered["submit_p50_ms"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-durability-", dir=args.dir) as tmp,
        contextlib.ExitStack() as stack,
    ):
        gateways: dict[str, Gateway] = {}
        for mode in MODES:
            workdir = Path(tmp) / mode
            workdir.mkdir()
            gateways[mode] = start_gateway(
                stack, workdir, workers=1, extra=["--durability", mode], name=f"serve-{mode}"
            )
        for mode, gateway in gateways.items():
            deploy_api(gateway, PREDICTOR, API)
            wait_api_state(gateway, API, workers=1)
            asyncio.run(submit_round(gateway.url(API), WARMUP_N, CLIENTS))
            drain(gateway, API)
            log(f"[durability] {mode} gateway ready at {gateway.base}")
        for number in range(1, args.rounds + 1):
            for mode in MODES if number % 2 else reversed(MODES):
                gateway = gateways[mode]
                before = journal_fsyncs(gateway)
                found = asyncio.run(submit_round(gateway.url(API), args.n, CLIENTS))
                found.update(round=number, mode=mode, fsyncs=journal_fsyncs(gateway) - before)
                rounds.append(found)
                log(
                    f"[durability] round {number} {mode}: {found['submit_per_s']:.0f}/s, "
                    f"p50 {found['submit_p50_ms']:.2f} ms, p99 {found['submit_p99_ms']:.2f} ms, "
                    f"{found['fsyncs']:.0f} fsyncs, {found['failures']} failures"
                )
                drain(gateway, API)
        disk = raw_fsync_ms(Path(tmp))
    return {
        "n": args.n,
        "rounds": args.rounds,
        "clients": CLIENTS,
        "workers": 1,
        "raw_fsync": disk,
        "runs": rounds,
        **summarise(rounds),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__)
    parser.add_argument("-n", type=int, default=None, help=f"submits per round ({DEFAULT_N})")
    parser.add_argument("--rounds", type=int, default=None, help=f"per mode ({DEFAULT_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} x {QUICK_N}")
    parser.add_argument("--dir", default=None, help="where the storage goes (a local disk)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for it all")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    args.n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    args.rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    if args.n < CLIENTS or args.rounds < 1:
        parser.error(f"-n must be at least {CLIENTS} and --rounds at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    meta = machine_meta(["python -m bench.durability", *raw])
    try:
        with deadline(args.timeout, "bench.durability"):
            results = run(args)
    except BenchError as exc:
        log(f"[durability] FAILED: {exc}")
        write_json(args.json, {"meta": meta, "error": str(exc)})
        return 1
    modes = results["modes"]
    log(
        f"[durability] buffered {modes['buffered']['submit_per_s']:.0f}/s "
        f"p50 {modes['buffered']['submit_p50_ms']:.2f} ms; fsync "
        f"{modes['fsync']['submit_per_s']:.0f}/s p50 {modes['fsync']['submit_p50_ms']:.2f} ms "
        f"({results['rate_ratio']:.0%} of the rate; "
        f"{modes['fsync']['fsyncs_per_submit']:.3f} fsyncs per submit)"
    )
    write_json(args.json, {"meta": meta, "results": results, "targets": []})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
