"""Run the benchmark suite, keep its JSON, draw the plots and write the results into the docs.

    python -m bench.report                      # everything: about 12 minutes on 2 cores
    python -m bench.report --quick              # small sizes, ~2 min, into bench/results/quick
    python -m bench.report --parts queue,latency
    python -m bench.report --report-only        # redraw from the JSON already in bench/results

Parts, each a subprocess writing `<results-dir>/<part>.json`:

- `run`: `python -m bench.run -n 5000` (noop ceiling vs FastAPI+Celery+Redis vs asyncnb,
  saturated, then paced at a sustainable rate, then a load curve of offered rates);
- `queue`: `python -m bench.queue_cost` (1k/10k/100k queued, five fills, restart recovery);
- `payloads`: `python -m bench.payloads` (1 KB/1 MB/100 MB, 1 GB upload, 100 MB result);
- `latency`: `python -m bench.latency` (one at a time, against raw Dask);
- `fairness`: `python -m bench.fairness` (key A floods 5,000 workloads of 10 ms on one worker
  while key B submits one every 100 ms: fair vs fifo queuing, and B alone);
- `streaming`: `python -m bench.streaming` (event latency of one SSE stream at light load;
  1,000 SSE streams on one gateway: latency, the gateway's memory per stream, every output
  delivered in order; no-op throughput on the current code against the commit before
  streaming, in a git worktree, alternating);
- `durability`: `python -m bench.durability` (submit rate and latency, 64 clients, of
  `--durability buffered` against `fsync` on local disk, alternating rounds).

The results go into `docs/benchmarks.md`, between its two marker lines
`<!-- bench.report: results start ... -->` and `<!-- bench.report: results end -->`: only what
lies between them is replaced, the hand-written prose around them is kept, and a page without
them is left alone (the report fails, saying so). `--quick`, or `--markdown` naming a file that
does not exist yet, writes a page of its own instead (with the markers, so that it can be
updated the same way). The results embed PNG plots from `docs/img/`, list the machine, date and
command of each part, and mark each issue-6 target met or not met. A part that is not run this
time keeps its previous JSON, if any, and the results show that part's own date.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, log, log_targets
from bench.page import MarkerError, results_block, shown, splice, standalone
from bench.plots import draw
from bench.targets import all_targets

PARTS = ("run", "queue", "payloads", "latency", "fairness", "streaming", "durability")
MODULES = {
    "run": "bench.run",
    "queue": "bench.queue_cost",
    "payloads": "bench.payloads",
    "latency": "bench.latency",
    "fairness": "bench.fairness",
    "streaming": "bench.streaming",
    "durability": "bench.durability",
}
TIMEOUTS_S = {
    "run": 1500,
    "queue": 1800,
    "payloads": 1800,
    "latency": 900,
    "fairness": 900,
    "streaming": 1500,  # about 5 minutes; bench.streaming stops itself after 1,200 s
    "durability": 1000,  # about 2 minutes; bench.durability stops itself after 900 s
}
RUN_N, RUN_N_QUICK = 5000, 500
RUN_PACED_N_QUICK = 500  # 2 s per system at bench.run's default 250/s; the full run keeps 2500
QUICK_DIR = REPO_ROOT / "bench" / "results" / "quick"  # git-ignored, like all of bench/results


# --------------------------------------------------------------------------- running


def part_argv(part: str, quick: bool, json_path: Path) -> list[str]:
    # Relative to the repository (the subprocess's working directory) when inside it, so the
    # command the page shows is one a reader can paste.
    argv = [sys.executable, "-m", MODULES[part], "--json", shown(json_path)]
    if part == "run":
        if quick:
            return [*argv, "-n", str(RUN_N_QUICK), "--paced-n", str(RUN_PACED_N_QUICK)]
        return [*argv, "-n", str(RUN_N)]
    return [*argv, "--quick"] if quick else argv


def run_part(part: str, quick: bool, results_dir: Path) -> int:
    """One part as a subprocess; on overrun it gets SIGINT so it can stop its servers."""
    json_path = results_dir / f"{part}.json"
    argv = part_argv(part, quick, json_path)
    log(f"[report] {part}: {' '.join(argv[1:])}")
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO_ROOT)
    try:
        code = proc.wait(TIMEOUTS_S[part])
    except subprocess.TimeoutExpired:
        log(f"[report] {part} ran past {TIMEOUTS_S[part]} s: interrupting it")
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    log(f"[report] {part} exited {code} after {time.monotonic() - started:.0f} s")
    return code


def load(results_dir: Path, part: str) -> dict[str, Any] | None:
    path = results_dir / f"{part}.json"
    try:
        found: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found


def is_quick(part: str, data: dict[str, Any]) -> bool:
    meta = data.get("meta", {})
    if part == "run":
        return int(meta.get("n") or RUN_N) < RUN_N
    return "--quick" in str(meta.get("command", ""))


def page_text(path: Path, block: str, alone: bool) -> str | None:
    """What `path` is to hold: `block` in a page of its own, or between the markers of `path`.

    None, said in the log, when `path` lacks the markers: it is not overwritten.
    """
    if alone:
        return standalone(block)
    try:
        return splice(path.read_text(), block, path)
    except MarkerError as exc:
        log(f"[report] {exc}")
        return None


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS)
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"small sizes, to check the harness; writes under {QUICK_DIR.relative_to(REPO_ROOT)}/"
        " unless told where",
    )
    parser.add_argument("--report-only", action="store_true", help="run nothing; redraw only")
    parser.add_argument("--results-dir", type=Path, default=None, help="default bench/results")
    parser.add_argument("--img-dir", type=Path, default=None, help="default docs/img")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="page whose marked block gets the results (default docs/benchmarks.md); "
        "one that does not exist yet is written as a page of its own",
    )
    args = parser.parse_args(argv)
    # Quick figures must not overwrite the published ones by accident.
    base = QUICK_DIR if args.quick else None
    args.standalone = base is not None and args.markdown is None
    args.results_dir = args.results_dir or (base or REPO_ROOT / "bench" / "results")
    args.img_dir = args.img_dir or (base / "img" if base else REPO_ROOT / "docs" / "img")
    default_page = REPO_ROOT / "docs" / "benchmarks.md"
    args.markdown = args.markdown or (base / "benchmarks.md" if base else default_page)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
    alone = args.standalone or not args.markdown.exists()
    if page_text(args.markdown, "", alone) is None:  # before the runs, not after them
        return 1
    args.results_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    if not args.report_only:
        for part in args.parts:
            if run_part(part, args.quick, args.results_dir) != 0:
                failed.append(part)
    data = {p: d for p in PARTS if (d := load(args.results_dir, p)) is not None}
    if not data:
        log(f"[report] no results in {args.results_dir}")
        return 1
    drawn = draw(data, args.img_dir)
    quick = args.quick or any(is_quick(part, d) for part, d in data.items())
    command = ["python -m bench.report", *raw]
    block = results_block(data, drawn, args.markdown, quick, command, args.results_dir)
    text = page_text(args.markdown, block, alone)
    if text is None:
        return 1
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    log(f"[report] wrote {args.markdown}")
    log_targets("report", [check for _, check in all_targets(data)])
    if failed:
        log(f"[report] failed parts: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
