"""Apply the same HTTP load to noop, FastAPI+Celery+Redis and asyncnb, then compare them.

    python -m bench.run -n 3000 -c 64 --systems noop,celery,asyncnb --markdown bench.md

Every system runs as real subprocesses on free loopback ports and is stopped before the next
one starts, so they never compete for the two cores with each other (only with the loadgen).

Each system is measured twice after its warm-up, by the same C lanes and pollers:

- saturated (closed loop): every lane submits its next workload as soon as the previous one is
  accepted, which gives the throughput ceiling; latency there is C / rate (Little's law), so
  its p50s measure the queueing in front of the server, not the server's own cost;
- paced (open loop): `--paced-n` workloads offered at `--paced-rate` per second in total, a
  rate every system sustains, so submit and GET latency show what one request costs under a
  steady load of C clients. The result sits under the system's result as `"paced"`, with how
  late the submissions went out (late means the system could not keep up);
- a load curve: the same open loop at each of `--curve-rates` (workloads/s), `--curve-seconds`
  long each, up to `CURVE_MAX_FRACTION` of the system's saturated submit rate (beyond that the
  saturated run already says what happens). It shows how latency grows with the offered load,
  under `"curve"`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import json_safe, run_load
from bench.processes import (
    BIN_DIR,
    DEPLOY_TIMEOUT_S,
    HOST,
    BenchError,
    child_env,
    cpu_model,
    free_port,
    http_get,
    run_deploy,
    start_process,
    wait_http_ok,
    wait_redis,
    wait_until,
)

API = "noop"
ALL_SYSTEMS = ("noop", "celery", "asyncnb")
DEFAULT_CURVE_RATES = (250.0, 500.0, 1000.0, 2000.0, 3000.0)
CURVE_MAX_FRACTION = 0.8  # of the saturated submit rate: a higher offer only queues
CURVE_MIN_N = 500


@dataclass
class Options:
    n: int
    concurrency: int
    warmup: int
    poll_interval: float
    timeout: float
    asyncnb_bin: Path = BIN_DIR / "asyncnb"
    paced_n: int = 2500
    paced_rate: float = 250.0
    curve_rates: tuple[float, ...] = DEFAULT_CURVE_RATES
    curve_seconds: float = 4.0


# --------------------------------------------------------------------------- systems


def uvicorn_argv(app: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app,
        "--host", HOST, "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def start_noop(stack: contextlib.ExitStack, workdir: Path, opts: Options) -> str:
    port = free_port()
    web = start_process(
        stack, "noop-web", uvicorn_argv("bench.peers.noop_app:app", port), workdir, child_env()
    )
    base = f"http://{HOST}:{port}"
    wait_http_ok(f"{base}/healthz", [web])
    return f"{base}/{API}"


def start_redis(stack: contextlib.ExitStack, workdir: Path) -> int:
    exe = shutil.which("redis-server")
    if exe is None:
        raise BenchError(
            "redis-server not found on PATH; install it (Debian: apt-get install redis-server)"
        )
    port = free_port()
    argv = [
        exe, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    redis = start_process(stack, "redis", argv, workdir, child_env())
    wait_redis(port, [redis])
    return port


def start_celery(stack: contextlib.ExitStack, workdir: Path, opts: Options) -> str:
    redis_port = start_redis(stack, workdir)
    env = child_env({"BENCH_REDIS_URL": f"redis://{HOST}:{redis_port}/0"})
    worker_argv = [
        sys.executable, "-m", "celery", "-A", "bench.peers.celery_app:celery_app", "worker",
        "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING",
        # Only trims startup; these cluster features do nothing for a single worker.
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    worker = start_process(stack, "celery-worker", worker_argv, workdir, env)
    port = free_port()
    web = start_process(
        stack, "celery-web", uvicorn_argv("bench.peers.celery_app:app", port), workdir, env
    )
    base = f"http://{HOST}:{port}"
    wait_http_ok(f"{base}/healthz", [web, worker])
    # The worker's readiness is proven by the warm-up workloads completing.
    return f"{base}/{API}"


def start_asyncnb(stack: contextlib.ExitStack, workdir: Path, opts: Options) -> str:
    exe = opts.asyncnb_bin
    if not exe.exists():
        raise BenchError(f"asyncnb CLI not found at {exe}; install the package into the venv")
    port = free_port()
    storage = workdir / "storage"
    storage.mkdir()
    argv = [
        str(exe), "serve", "--port", str(port), "--storage", f"file://{storage}",
        "--workers", "2",
    ]  # fmt: skip
    server = start_process(stack, "asyncnb-serve", argv, workdir, child_env())
    base = f"http://{HOST}:{port}"
    wait_http_ok(f"{base}/healthz", [server])
    deploy_noop(exe, base)
    wait_until(
        f"{base}/{API} to be ready", lambda: api_ready(f"{base}/{API}"), [server], DEPLOY_TIMEOUT_S
    )
    return f"{base}/{API}"


def deploy_noop(exe: Path, base: str) -> None:
    run_deploy([str(exe), "deploy", "bench/noop_predictor.py:NoOp", "--name", API,
                "--gateway", base], API)  # fmt: skip


def api_ready(url: str) -> bool:
    code, raw = http_get(url)
    if code != 200:
        return False
    state = json.loads(raw).get("state")
    if state == "failed":
        raise BenchError(f"deployment failed: {raw.decode(errors='replace')[:500]}")
    return bool(state == "ready")


STARTERS: dict[str, Callable[[contextlib.ExitStack, Path, Options], str]] = {
    "noop": start_noop,
    "celery": start_celery,
    "asyncnb": start_asyncnb,
}


# --------------------------------------------------------------------------- driving


def bench_system(name: str, opts: Options) -> dict[str, Any]:
    """Start one system, warm it up, measure it and always tear it down."""
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        log(f"[{name}] starting")
        url = STARTERS[name](stack, Path(tmp), opts)
        log(f"[{name}] ready at {url}; warming up with {opts.warmup} workloads")
        warm = load(url, opts.warmup, opts)
        if warm["failures"] or warm["timed_out"]:
            raise BenchError(f"warm-up failed: {warm['errors'] or 'timed out'}")
        log(f"[{name}] measuring n={opts.n} c={opts.concurrency}")
        result = load(url, opts.n, opts)
        log(f"[{name}] {result['e2e_per_s']:.0f} workloads/s, failures={result['failures']}")
        if opts.paced_n > 0:
            log(
                f"[{name}] paced: n={opts.paced_n} offered at {opts.paced_rate:g}/s, "
                f"c={opts.concurrency}"
            )
            paced = load(url, opts.paced_n, opts, rate=opts.paced_rate)
            log(
                f"[{name}] paced: {paced['submit_per_s']:.0f}/s achieved, submit p50 "
                f"{paced['submit_p50_ms']:.2f} ms, GET p50 {paced['get_p50_ms']:.2f} ms, "
                f"late p99 {paced['late_p99_ms']:.1f} ms, failures={paced['failures']}"
            )
            result["paced"] = paced
        result["curve"] = load_curve(name, url, opts, result)
        return result


def curve_rates(opts: Options, saturated: dict[str, Any]) -> list[float]:
    """The offered rates worth measuring for one system: those it can sustain."""
    ceiling = float(saturated.get("submit_per_s") or 0.0)
    return [r for r in opts.curve_rates if r <= CURVE_MAX_FRACTION * ceiling]


def load_curve(
    name: str, url: str, opts: Options, saturated: dict[str, Any]
) -> list[dict[str, Any]]:
    points = []
    for rate in curve_rates(opts, saturated):
        n = max(CURVE_MIN_N, round(rate * opts.curve_seconds))
        point = load(url, n, opts, rate=rate)
        log(
            f"[{name}] curve: {rate:g}/s offered, {point['submit_per_s']:.0f}/s achieved, "
            f"submit p50 {point['submit_p50_ms']:.2f} ms, GET p50 {point['get_p50_ms']:.2f} ms, "
            f"e2e p50 {point['e2e_p50_ms']:.1f} ms, failures={point['failures']}"
        )
        points.append(point)
    return points


def load(url: str, n: int, opts: Options, rate: float | None = None) -> dict[str, Any]:
    # A paced run cannot finish before its last workload is due, whatever --timeout says.
    timeout = opts.timeout + (n / rate if rate else 0.0)
    return asyncio.run(run_load(url, n, opts.concurrency, opts.poll_interval, timeout, rate=rate))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- reporting

# (header, result key, higher is better) — the last flag only documents how to read ratios.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("e2e workloads/s", "e2e_per_s", True),
    ("submit/s", "submit_per_s", True),
    ("submit p50 ms", "submit_p50_ms", False),
    ("submit p99 ms", "submit_p99_ms", False),
    ("e2e p50 ms", "e2e_p50_ms", False),
    ("e2e p99 ms", "e2e_p99_ms", False),
    ("GET p50 ms", "get_p50_ms", False),
)
RATIOS = (("asyncnb", "celery"), ("asyncnb", "noop"))

# An open-loop run: offered vs achieved rate and the latency at that rate.
OPEN_LOOP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("offered/s", "offered_per_s"),
    ("achieved submit/s", "submit_per_s"),
    ("submit p50 ms", "submit_p50_ms"),
    ("submit p99 ms", "submit_p99_ms"),
    ("GET p50 ms", "get_p50_ms"),
    ("GET p99 ms", "get_p99_ms"),
    ("e2e p50 ms", "e2e_p50_ms"),
)
# The paced phase adds how late the submits went out; the curve, one row per offered rate,
# the tail of end-to-end latency.
PACED_COLUMNS = (*OPEN_LOOP_COLUMNS, ("late p99 ms", "late_p99_ms"), ("late max ms", "late_max_ms"))
CURVE_COLUMNS = (*OPEN_LOOP_COLUMNS, ("e2e p99 ms", "e2e_p99_ms"))
OPEN_LOOP_TAIL = ("late > 10 ms", "failures")


def open_loop_cells(run: dict[str, Any], columns: Sequence[tuple[str, str]]) -> list[str]:
    # Two decimals: at a sustainable load these are a few milliseconds.
    return [
        *(fmt(run.get(key), digits=2) for _, key in columns),
        f"{run.get('late_over_10ms', 0)} / {run.get('n', '?')}",
        _failures(run),
    ]


def fmt(value: Any, ratio: bool = False, digits: int = 1) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    if ratio:
        return f"{value:.2f}x"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def format_table(results: dict[str, dict[str, Any]]) -> str:
    headers = ["system", *(c[0] for c in COLUMNS), "failures"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, res in results.items():
        if "error" in res:
            cells = [f"error: {error_summary(str(res['error']))}", *[""] * len(COLUMNS)]
        else:
            cells = [*(fmt(res.get(key)) for _, key, _ in COLUMNS), str(res["failures"])]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    for num, den in RATIOS:
        a, b = results.get(num, {}), results.get(den, {})
        if "e2e_per_s" not in a or "e2e_per_s" not in b:
            continue
        cells = [fmt(_ratio(a.get(key), b.get(key)), ratio=True) for _, key, _ in COLUMNS]
        lines.append("| " + " | ".join([f"{num} / {den}", *cells, ""]) + " |")
    return "\n".join(lines)


def format_paced_table(results: dict[str, dict[str, Any]]) -> str:
    """The paced phase per system; empty when no system has one (older JSON, --paced-n 0)."""
    if not any("paced" in res for res in results.values()):
        return ""
    headers = ["system", *(c[0] for c in PACED_COLUMNS), *OPEN_LOOP_TAIL]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, res in results.items():
        paced = res.get("paced")
        if "error" in res:
            cells = [f"error: {error_summary(str(res['error']))}", *[""] * (len(headers) - 2)]
        elif paced is None:
            cells = ["not measured", *[""] * (len(headers) - 2)]
        else:
            cells = open_loop_cells(paced, PACED_COLUMNS)
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def format_curve_table(results: dict[str, dict[str, Any]]) -> str:
    """Latency per offered rate and system; empty when no system has a curve."""
    if not any(res.get("curve") for res in results.values()):
        return ""
    headers = ["system", *(c[0] for c in CURVE_COLUMNS), *OPEN_LOOP_TAIL]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for name, res in results.items():
        for point in res.get("curve", ()):
            cells = open_loop_cells(point, CURVE_COLUMNS)
            lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def _failures(res: dict[str, Any]) -> str:
    return f"{res['failures']}" + (" (timed out)" if res.get("timed_out") else "")


def error_summary(error: str) -> str:
    # The first line says what failed and the last one (e.g. a traceback's exception) why.
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    summary = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
    return summary.replace("|", "\\|")[:160]


def _ratio(a: Any, b: Any) -> float:
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


def machine_meta(opts: Options, argv: Sequence[str]) -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "n": opts.n,
        "concurrency": opts.concurrency,
        "poll_interval_s": opts.poll_interval,
        "paced_n": opts.paced_n,
        "paced_rate": opts.paced_rate,
        "curve_rates": list(opts.curve_rates),
        "curve_seconds": opts.curve_seconds,
        "command": " ".join(["python -m bench.run", *argv]),
    }


def markdown_report(
    meta: dict[str, Any], table: str, paced_table: str = "", curve_table: str = ""
) -> str:
    paced = [
        f"## Paced: {meta['paced_n']} workloads offered at {meta['paced_rate']:g}/s by "
        f"the same {meta['concurrency']} clients",
        "",
        "Open loop at a rate every system sustains: submit and GET latency without the "
        "queueing of saturation. Late = sent after its due time (the system fell behind).",
        "",
        paced_table,
        "",
    ] if paced_table else []  # fmt: skip
    curve = [
        f"## Load curve: latency vs offered rate, {meta['concurrency']} clients, open loop",
        "",
        curve_table,
        "",
    ] if curve_table else []  # fmt: skip
    return "\n".join([
        "# asyncnb end-to-end benchmark",
        "",
        f"- machine: {meta['cpu']} x {meta['cpus']} cores, {meta['platform']}, "
        f"Python {meta['python']}",
        f"- date: {meta['date_utc']}",
        f"- N = {meta['n']} workloads, C = {meta['concurrency']} requests in flight, "
        f"poll every {meta['poll_interval_s'] * 1000:.0f} ms",
        f"- command: `{meta['command']}`",
        "- ratios > 1 mean asyncnb is higher: better for throughput, worse for latency",
        "",
        table,
        "",
        *paced,
        *curve,
    ])  # fmt: skip


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("-n", type=int, default=3000, help="workloads per system")
    parser.add_argument("-c", type=int, default=64, help="max HTTP requests in flight")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma separated")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured workloads first")
    parser.add_argument("--poll-interval", type=float, default=0.01, help="seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measured run")
    parser.add_argument(
        "--paced-n",
        type=int,
        default=2500,
        help="workloads in the paced (open-loop) phase after the saturated one; 0 skips it",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=250.0,
        help="total workloads/s offered in the paced phase (below every system's ceiling)",
    )
    parser.add_argument(
        "--curve-rates",
        type=_rates,
        default=DEFAULT_CURVE_RATES,
        help="offered workloads/s of the load curve, comma separated; '' skips it",
    )
    parser.add_argument(
        "--curve-seconds", type=float, default=4.0, help="how long each curve point lasts"
    )
    parser.add_argument(
        "--asyncnb-bin", type=Path, default=BIN_DIR / "asyncnb", help="asyncnb executable"
    )
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--json", type=Path, help="write raw figures here")
    args = parser.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(ALL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {ALL_SYSTEMS}")
    if args.paced_n < 0 or not args.paced_rate > 0:
        parser.error("--paced-n must be >= 0 and --paced-rate > 0")
    if any(r <= 0 for r in args.curve_rates) or not args.curve_seconds > 0:
        parser.error("--curve-rates must be positive and --curve-seconds > 0")
    return args


def _rates(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    opts = Options(
        args.n,
        args.c,
        args.warmup,
        args.poll_interval,
        args.timeout,
        args.asyncnb_bin,
        args.paced_n,
        args.paced_rate,
        args.curve_rates,
        args.curve_seconds,
    )
    results: dict[str, dict[str, Any]] = {}
    for name in args.systems.split(","):
        try:
            results[name] = bench_system(name, opts)
        except BenchError as exc:
            log(f"[{name}] FAILED: {exc}")
            results[name] = {"error": str(exc)}
    meta = machine_meta(opts, raw_argv)
    table = format_table(results)
    print(table)
    paced_table = format_paced_table(results)
    if paced_table:
        print(f"\npaced: {opts.paced_n} workloads offered at {opts.paced_rate:g}/s")
        print(paced_table)
    curve_table = format_curve_table(results)
    if curve_table:
        print(f"\nload curve: offered rates {', '.join(f'{r:g}' for r in opts.curve_rates)}/s")
        print(curve_table)
    if args.markdown:
        args.markdown.write_text(markdown_report(meta, table, paced_table, curve_table))
    if args.json:
        raw = {"meta": meta, "results": json_safe(results)}
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    runs = [
        r
        for res in results.values()
        for r in (res, res.get("paced"), *res.get("curve", ()))
        if r is not None
    ]
    ok = all("error" not in r and r["failures"] == 0 and not r["timed_out"] for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
