"""What a peer's contract costs a submit, against asyncnb's own `POST /{api}`.

    python -m bench.compat                 # 5 alternating rounds of 2,000 submits per route
    python -m bench.compat --quick         # 2 rounds of 500
    python -m bench.compat --json bench/results/compat.json

One `asyncnb serve --workers 1` on local disk with a no-op API. Each round sends N submits
from 32 concurrent clients (closed loop) to one route, the routes taking turns round after
round so a shared machine's drift hits them alike: asyncnb's own `POST /noop` (its
framework-free fast path), Cortex's `POST /compat/cortex/noop`, RunPod's
`POST /compat/runpod/v2/noop/run` and Replicate's `POST /compat/replicate/v1/predictions`.
Only the submit is timed; the queue drains between rounds. The figures are the median rate and
p50 per route, and each route's rate as a share of the native one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import (
    deadline,
    deploy_api,
    log,
    machine_meta,
    start_gateway,
    wait_api_state,
    write_json,
)
from bench.submits import drain, submit_round

PREDICTOR = "bench/noop_predictor.py:NoOp"
API = "noop"
CLIENTS = 32
DEFAULT_N, DEFAULT_ROUNDS = 2000, 5
QUICK_N, QUICK_ROUNDS = 500, 2


def routes(base: str) -> dict[str, tuple[str, Any, tuple[int, ...]]]:
    """route name → (URL, the JSON body of submit `i`, the status codes of an accepted one)"""
    return {
        "native": (f"{base}/{API}", lambda i: {"x": i}, (202,)),
        "cortex": (f"{base}/compat/cortex/{API}", lambda i: {"x": i}, (200,)),
        "runpod": (f"{base}/compat/runpod/v2/{API}/run", lambda i: {"input": {"x": i}}, (200,)),
        "replicate": (
            f"{base}/compat/replicate/v1/predictions",
            lambda i: {"version": API, "input": {"x": i}},
            (201,),
        ),
    }


def measure(n: int, rounds: int, workdir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        gateway = start_gateway(stack, workdir, workers=1)
        deploy_api(gateway, PREDICTOR, API)
        wait_api_state(gateway, API, workers=1)
        chosen = routes(gateway.base)
        for url, body, accepted in chosen.values():  # warm every route's code path
            asyncio.run(submit_round(url, 200, CLIENTS, body, accepted))
        drain(gateway, API)
        runs: list[dict[str, Any]] = []
        for number in range(rounds):
            order = list(chosen) if number % 2 == 0 else list(reversed(chosen))
            for name in order:
                url, body, accepted = chosen[name]
                run = asyncio.run(submit_round(url, n, CLIENTS, body, accepted))
                drain(gateway, API)
                run.update(round=number + 1, route=name)
                log(
                    f"[compat] round {number + 1} {name}: {run['submit_per_s']:.0f}/s, "
                    f"p50 {run['submit_p50_ms']:.2f} ms, {run['failures']} failures"
                )
                runs.append(run)
    summary: dict[str, Any] = {}
    for name in chosen:
        mine = [r for r in runs if r["route"] == name]
        summary[name] = {
            "submit_per_s": statistics.median(r["submit_per_s"] for r in mine),
            "submit_p50_ms": statistics.median(r["submit_p50_ms"] for r in mine),
            "submit_p99_ms": statistics.median(r["submit_p99_ms"] for r in mine),
            "failures": sum(r["failures"] for r in mine),
        }
    native = summary["native"]["submit_per_s"]
    for values in summary.values():
        values["rate_vs_native"] = values["submit_per_s"] / native
    return {"n": n, "rounds": rounds, "clients": CLIENTS, "routes": summary, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compat", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    n, rounds = (QUICK_N, QUICK_ROUNDS) if args.quick else (DEFAULT_N, DEFAULT_ROUNDS)
    with deadline(900, "bench.compat"), tempfile.TemporaryDirectory() as tmp:
        results = measure(n, rounds, Path(tmp))
    for name, values in results["routes"].items():
        log(
            f"[compat] {name}: {values['submit_per_s']:.0f}/s "
            f"({values['rate_vs_native']:.0%} of native), p50 {values['submit_p50_ms']:.2f} ms, "
            f"p99 {values['submit_p99_ms']:.2f} ms"
        )
    write_json(args.json, {"meta": machine_meta(sys.argv), "results": results})
    failed = sum(v["failures"] for v in results["routes"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
