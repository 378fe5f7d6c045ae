"""Run the benchmark suite, keep its JSON, draw the plots and write the results page.

    python -m bench.report                      # everything: about 5-10 minutes on 2 cores
    python -m bench.report --quick              # small sizes, ~1 min, into bench/results/quick
    python -m bench.report --parts queue,latency
    python -m bench.report --report-only        # redraw from the JSON already in bench/results

Parts, each a subprocess writing `<results-dir>/<part>.json`:

- `run`: `python -m bench.run -n 5000` (noop ceiling vs FastAPI+Celery+Redis vs asyncnb,
  saturated, then paced at a sustainable rate);
- `queue`: `python -m bench.queue_cost` (1k/10k/100k queued, restart recovery);
- `payloads`: `python -m bench.payloads` (1 KB/1 MB/100 MB, 1 GB upload, 100 MB result);
- `latency`: `python -m bench.latency` (one at a time, against raw Dask).

The page (`docs/benchmarks-results.md`) embeds PNG plots from `docs/img/`, lists the machine,
date and command of each part, and marks each issue-6 target met or not met. A part that is
not run this time keeps its previous JSON, if any, and the page shows that part's own date.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import MB, REPO_ROOT, log, log_targets, target
from bench.run import format_paced_table, format_table

PARTS = ("run", "queue", "payloads", "latency")
MODULES = {
    "run": "bench.run",
    "queue": "bench.queue_cost",
    "payloads": "bench.payloads",
    "latency": "bench.latency",
}
TIMEOUTS_S = {"run": 1500, "queue": 1800, "payloads": 1800, "latency": 900}
RUN_N, RUN_N_QUICK = 5000, 500
RUN_PACED_N_QUICK = 500  # 2 s per system at bench.run's default 250/s; the full run keeps 2500
QUICK_DIR = REPO_ROOT / "bench" / "results" / "quick"  # git-ignored, like all of bench/results
CELERY_TARGET, CEILING_TARGET, ISSUE2_TARGET = 3.5, 0.5, 2.0
SUBMIT_P50_TARGET_MS, GET_P50_TARGET_MS = 5.0, 2.0
SYSTEM_COLORS = {"noop": "#9e9e9e", "celery": "#d95f02", "asyncnb": "#1b9e77"}
VERDICT = {True: "met", False: "**not met**", None: "not measured"}


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


# --------------------------------------------------------------------------- targets


def run_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    res = data.get("results", {})
    ours = _num(res.get("asyncnb", {}).get("e2e_per_s"))
    celery = _num(res.get("celery", {}).get("e2e_per_s"))
    ceiling = _num(res.get("noop", {}).get("e2e_per_s"))
    vs_celery, vs_ceiling = ours / celery, ours / ceiling
    known = not math.isnan(vs_celery)
    return [
        target(
            "end-to-end throughput, asyncnb / FastAPI+Celery+Redis",
            f">= {CELERY_TARGET:g}x (issue 2: >= {ISSUE2_TARGET:g}x)",
            f"{vs_celery:.3g}x ({ours:.0f} vs {celery:.0f} workloads/s)",
            vs_celery >= CELERY_TARGET if known else None,
        ),
        target(
            "end-to-end throughput, asyncnb / noop ceiling",
            f">= {CEILING_TARGET:g}x",
            f"{vs_ceiling:.3g}x ({ours:.0f} vs {ceiling:.0f} workloads/s)",
            vs_ceiling >= CEILING_TARGET if not math.isnan(vs_ceiling) else None,
        ),
        *paced_targets(data),
    ]


def paced_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Submit and GET p50 of asyncnb from the paced phase, next to the noop ceiling's.

    Saturated p50s are C / rate by Little's law (the noop ceiling's own exceed 5 ms), so these
    targets are judged at a rate every system sustains; the saturated figures stay in the
    end-to-end table.
    """
    res = data.get("results", {})
    ours, ceiling = res.get("asyncnb", {}).get("paced"), res.get("noop", {}).get("paced")
    clients = data.get("meta", {}).get("concurrency", "?")
    rows = []
    for what, key, goal in (
        ("submit (POST /{api})", "submit_p50_ms", SUBMIT_P50_TARGET_MS),
        ("GET /{api}/{id}", "get_p50_ms", GET_P50_TARGET_MS),
    ):
        name = f"{what} p50, no-op JSON, {clients} clients paced"
        if not ours:
            rows.append(
                target(name, f"<= {goal:g} ms", "no paced asyncnb result in run.json", None)
            )
            continue
        p50 = _num(ours.get(key))
        measured = (
            f"{p50:.2f} ms at {_num(ours.get('offered_per_s')):.0f}/s offered "
            f"({_num(ours.get('submit_per_s')):.0f}/s achieved"
        )
        if ceiling:
            measured += f"; noop ceiling {_num(ceiling.get(key)):.2f} ms"
        late, n = ours.get("late_over_10ms", 0), ours.get("n", 0)
        if late:
            measured += f"; {late} of {n} submits > 10 ms behind schedule"
        measured += ")"
        met: bool | None = None if math.isnan(p50) else p50 <= goal
        if ours.get("failures") or ours.get("timed_out"):
            # A run that lost workloads does not meet a latency target, however fast.
            measured += f", {ours.get('failures')} failures"
            met = False
        rows.append(target(name, f"<= {goal:g} ms", measured, met))
    return rows


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def all_targets(data: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if "run" in data:
        found += [("run", t) for t in run_targets(data["run"])]
    for part in ("queue", "payloads", "latency"):
        if part in data:
            found += [(part, t) for t in data[part].get("targets", [])]
    return found


# --------------------------------------------------------------------------- plots


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a benchmark box
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True})
    plt.rcParams.update({"grid.alpha": 0.3, "axes.axisbelow": True})
    return plt


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
    log(f"[report] drew {path}")
    return path


def bar_labels(ax: Any, bars: Any, fmt: str = "{:.0f}") -> None:
    for bar in bars:
        height = bar.get_height()
        if not math.isnan(height):
            ax.annotate(
                fmt.format(height),
                (bar.get_x() + bar.get_width() / 2, height),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )


def measured_systems(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in data.get("results", {}).items() if "e2e_per_s" in v}


def plot_throughput(data: dict[str, Any], path: Path) -> Path | None:
    systems = measured_systems(data)
    if not systems:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = list(systems)
    width = 0.38
    xs = range(len(names))
    for offset, key, title, alpha in (
        (-width / 2, "e2e_per_s", "end to end (submit + poll to completed)", 1.0),
        (width / 2, "submit_per_s", "submits accepted", 0.55),
    ):
        values = [_num(systems[n].get(key)) for n in names]
        bars = ax.bar(
            [x + offset for x in xs],
            values,
            width,
            label=title,
            color=[SYSTEM_COLORS.get(n, "#7570b3") for n in names],
            alpha=alpha,
        )
        bar_labels(ax, bars)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("workloads / s")
    ax.set_title(f"Throughput, {_n_and_c(data)} (higher is better)")
    ax.legend(loc="upper right", fontsize=8)
    ax.margins(y=0.15)
    return save(fig, path)


def _n_and_c(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    return f"n={meta.get('n', '?')}, {meta.get('concurrency', '?')} requests in flight"


def plot_latency(data: dict[str, Any], path: Path) -> Path | None:
    systems = measured_systems(data)
    if not systems:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    names = list(systems)
    width = 0.2
    # Paired colours: light/dark of one hue for p50/p99 of the same measurement.
    series = (
        ("submit_p50_ms", "submit p50", "#a6cee3"),
        ("submit_p99_ms", "submit p99", "#1f78b4"),
        ("e2e_p50_ms", "end to end p50", "#b2df8a"),
        ("e2e_p99_ms", "end to end p99", "#33a02c"),
    )
    for i, (key, title, color) in enumerate(series):
        offset = (i - 1.5) * width
        values = [_num(systems[n].get(key)) for n in names]
        bars = ax.bar(
            [x + offset for x in range(len(names))], values, width, label=title, color=color
        )
        bar_labels(ax, bars)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("milliseconds")
    ax.set_title(f"Latency under load, {_n_and_c(data)} (lower is better)")
    ax.legend(fontsize=8, ncol=2)
    ax.margins(y=0.15)
    return save(fig, path)


def depth_axis(ax: Any, depths: Sequence[int]) -> None:
    """Log x axis ticked at the measured depths only, written 1k / 10k / 100k."""
    ax.set_xscale("log")
    ax.set_xticks(list(depths), [_short(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlim(min(depths) / 1.4, max(depths) * 1.4)  # room for the point labels
    ax.set_xlabel("workloads queued")


def _short(count: int) -> str:
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000:,}k"
    return f"{count:,}"


def plot_queue(data: dict[str, Any], path: Path) -> Path | None:
    levels = data.get("results", {}).get("levels")
    if not levels:
        return None
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    queue_rate_panel(left, levels)
    queue_memory_panel(right, levels)
    return save(fig, path)


def queue_rate_panel(ax: Any, levels: Sequence[dict[str, Any]]) -> None:
    depth = [lvl["depth"] for lvl in levels]
    window = [lvl["submit_per_s"] for lvl in levels]
    ax.plot(depth, window, "o-", color="#1b9e77", label="last window before the level")
    batch = [lvl["batch_per_s"] for lvl in levels]
    ax.plot(depth, batch, "s--", color="#7570b3", label="whole batch since the previous level")
    ax.axhline(0.8 * window[0], color="#d95f02", ls=":", label="target: 80% of the first level")
    depth_axis(ax, depth)
    ax.set_ylim(bottom=0, top=max(max(window), max(batch)) * 1.25)
    ax.set_ylabel("submits / s")
    ax.set_title("Submit rate vs queue depth")
    ax.legend(fontsize=8, loc="lower left")


def queue_memory_panel(ax: Any, levels: Sequence[dict[str, Any]]) -> None:
    """Bytes per queued workload (flat when the cost is linear), each point labelled in MiB."""
    depth = [lvl["depth"] for lvl in levels]
    per = [lvl["bytes_per_workload"] for lvl in levels]
    ax.plot(depth, per, "o-", color="#1b9e77", label="gateway RSS growth per queued workload")
    ax.axhline(2048, color="#d95f02", ls=":", label="target: 2 KiB per workload")
    for d, p, lvl in zip(depth, per, levels, strict=True):
        ax.annotate(
            f"+{lvl['rss_growth_bytes'] / 2**20:.1f} MiB",
            (d, p),
            fontsize=8,
            ha="center",
            xytext=(0, -14),
            textcoords="offset points",
        )
    depth_axis(ax, depth)
    ax.set_ylim(0, max(2048, *per) * 1.3)
    ax.set_ylabel("bytes of RSS per queued workload")
    ax.set_title("Gateway memory vs queue depth")
    ax.legend(fontsize=8, loc="upper right")


def plot_payloads(data: dict[str, Any], path: Path) -> Path | None:
    rows = data.get("results", {}).get("throughput")
    if not rows:
        return None
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    for workers in sorted({r["workers"] for r in rows}):
        mine = sorted((r for r in rows if r["workers"] == workers), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        style = "o-" if workers == 1 else "s--"
        name = f"{workers} worker" + ("s" if workers > 1 else "")
        left.plot(sizes, [r["e2e_per_s"] for r in mine], style, label=name)
        right.plot(sizes, [r["mb_per_s"] for r in mine], style, label=name)
    labels = {r["size"]: r["label"] for r in rows}
    for ax, ylabel, title in (
        (left, "workloads / s", "Throughput vs payload size"),
        (right, "MB / s of payload", "Payload bandwidth vs payload size"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted(labels), [labels[size] for size in sorted(labels)])
        ax.minorticks_off()
        ax.set_xlabel("payload size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_light_latency(data: dict[str, Any], path: Path) -> Path | None:
    runs = data.get("results", {}).get("runs")
    if not runs:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.35
    for i, row in enumerate(runs):
        for j, (name, color) in enumerate((("asyncnb", "#1b9e77"), ("dask", "#7570b3"))):
            x = i + (j - 0.5) * width
            first = i == 0
            bars = ax.bar(
                x, row[name]["p50_ms"], width, color=color, label=f"{name} p50" if first else None
            )
            bar_labels(ax, bars, "{:.1f}")
            p99 = row[name]["p99_ms"]
            ax.plot([x], [p99], "v", color="black", label="p99" if first and j == 0 else None)
        # The target sits over the asyncnb bar: at most 5 ms above Dask's median.
        goal = row["dask"]["p50_ms"] + 5
        left_edge = i - width
        label = "target: Dask p50 + 5 ms" if i == 0 else None
        ax.hlines(goal, left_edge, i, colors="#d95f02", linestyles="dashed", label=label)
    names = [
        "back to back" if not r["pause_ms"] else f"{r['pause_ms']:g} ms idle before each"
        for r in runs
    ]
    ax.set_xticks(range(len(runs)), names)
    ax.set_ylabel("ms, submit to completed")
    ax.set_title("Light load, one workload at a time: asyncnb vs raw Dask")
    ax.legend(fontsize=8)
    ax.margins(y=0.2)
    return save(fig, path)


PLOTS = {
    "run": (("throughput", plot_throughput), ("latency", plot_latency)),
    "queue": (("queue", plot_queue),),
    "payloads": (("payloads", plot_payloads),),
    "latency": (("light-latency", plot_light_latency),),
}


def draw(data: dict[str, dict[str, Any]], img_dir: Path) -> dict[str, Path]:
    drawn: dict[str, Path] = {}
    for part, plots in PLOTS.items():
        if part not in data or "error" in data[part]:
            continue
        for name, plot in plots:
            path = plot(data[part], img_dir / f"bench-{name}.png")
            if path is not None:
                drawn[name] = path
    return drawn


# --------------------------------------------------------------------------- markdown


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def guide_link(page: Path) -> str:
    """docs/benchmarks.md as seen from the page, wherever the page is written."""
    return os.path.relpath(REPO_ROOT / "docs" / "benchmarks.md", page.parent)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: Any, digits: int = 0) -> str:
    value = _num(value)
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def image(name: str, drawn: dict[str, Path], page: Path, alt: str) -> list[str]:
    if name not in drawn:
        return []
    return ["", f"![{alt}]({os.path.relpath(drawn[name], page.parent)})"]


def is_quick(part: str, data: dict[str, Any]) -> bool:
    meta = data.get("meta", {})
    if part == "run":
        return int(meta.get("n") or RUN_N) < RUN_N
    return "--quick" in str(meta.get("command", ""))


def section_meta(data: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for part in PARTS:
        if part in data:
            meta = data[part].get("meta", {})
            rows.append([part, meta.get("date_utc", "?"), f"`{meta.get('command', '?')}`"])
    # bench.run's meta has no memory figure; the other parts' do.
    metas: list[dict[str, Any]] = [d.get("meta", {}) for d in data.values()]
    any_meta = next((m for m in metas if "memory_gib" in m), metas[0] if metas else {})
    cpu = f"{any_meta.get('cpus', '?')} cores, {any_meta.get('cpu', '?')}"
    memory = f"{any_meta['memory_gib']} GiB RAM, " if "memory_gib" in any_meta else ""
    return [
        "## Machine and commands",
        "",
        f"{cpu}, {memory}Python {any_meta.get('python', '?')}, {any_meta.get('platform', '?')}.",
        "",
        table(["part", "date", "command"], rows),
    ]


def section_targets(data: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        [t["name"], t["goal"], t["measured"], VERDICT[t["met"]], part]
        for part, t in all_targets(data)
    ]
    errors = [f"- `{p}` failed: {_one_line(d['error'])}" for p, d in data.items() if "error" in d]
    return [
        "## Targets (issue 6)",
        "",
        table(["target", "goal", "measured", "verdict", "part"], rows),
        *(["", *errors] if errors else []),
    ]


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "?")[:300]


def section_run(data: dict[str, Any], drawn: dict[str, Path], page: Path) -> list[str]:
    meta = data.get("meta", {})
    return [
        "## End to end: noop ceiling vs FastAPI+Celery+Redis vs asyncnb",
        "",
        f"`bench.run`: {meta.get('n', '?')} JSON workloads, {meta.get('concurrency', '?')} "
        f"HTTP requests in flight, each workload polled every "
        f"{_num(meta.get('poll_interval_s')) * 1000:g} ms until completed; the systems run one "
        f"after the other (see [benchmarks.md]({guide_link(page)}) for what each one is).",
        "",
        format_table(data.get("results", {})),
        *image("throughput", drawn, page, "throughput per system"),
        *image("latency", drawn, page, "latency per system"),
        "",
        *section_paced(data, page),
    ]


def section_paced(data: dict[str, Any], page: Path) -> list[str]:
    meta, results = data.get("meta", {}), data.get("results", {})
    clients = meta.get("concurrency", "?")
    heading = f"## Latency at a sustainable load ({clients} clients, paced)"
    paced_table = format_paced_table(results)
    if not paced_table:
        return [
            heading,
            "",
            "Not measured: this `run.json` predates the paced phase (or was run with "
            "`--paced-n 0`); rerun `python -m bench.run`.",
        ]
    offered = [p.get("offered_per_s") for r in results.values() if (p := r.get("paced"))]
    rate = _num(meta.get("paced_rate", offered[0] if offered else None))
    n = meta.get("paced_n", "?")
    return [
        heading,
        "",
        f"The saturated table above keeps {clients} requests in flight, so by Little's law "
        f"every latency there is {clients} / rate: queueing in front of the server, not its "
        f"cost. After it, the same {clients} submit lanes and pollers offer {n} more workloads "
        f"open loop at {rate:g} workloads/s in total, below every system's ceiling (workload "
        f"i is due at start + i/{rate:g}; a lane that is late sends at once). *Late* is how "
        "long after its due time a POST went out: near 0 while the system keeps up, growing "
        f"when it does not. See [benchmarks.md]({guide_link(page)}).",
        "",
        paced_table,
    ]


def section_queue(data: dict[str, Any], drawn: dict[str, Path], page: Path) -> list[str]:
    if "error" in data:
        return ["## Queue cost", "", f"Failed: {_one_line(data['error'])}"]
    res = data["results"]
    rows = [
        [
            f"{lvl['depth']:,}",
            f"{num(lvl['submit_per_s'])} (last {lvl['window']:,})",
            num(lvl["batch_per_s"]),
            num(lvl["submit_p50_ms"], 1),
            num(lvl["submit_p99_ms"], 1),
            num(lvl["submit_max_ms"], 0),
            num(lvl["rss_growth_bytes"] / 2**20, 1),
            num(lvl["bytes_per_workload"]),
        ]
        for lvl in res["levels"]
    ]
    lines = [
        "## Queue cost: 1k / 10k / 100k queued workloads",
        "",
        "`bench.queue_cost`: `asyncnb serve --workers 0 --min-workers 0 --max-workers 0`, so no "
        f'worker drains the queue; {res["concurrency"]} aiohttp submitters POST `{{"x": i}}` '
        f"to the no-op API after {res.get('warmup', 0):,} warm-up submits to another API. "
        "Memory is the RSS of the `asyncnb serve` process alone, over the empty queue "
        f"({num(res['empty_rss_bytes'] / 2**20, 1)} MiB).",
        "",
        table(
            [
                "queued",
                "submits/s",
                "whole batch /s",
                "submit p50 ms",
                "submit p99 ms",
                "slowest submit ms",
                "RSS growth MiB",
                "bytes / workload",
            ],
            rows,
        ),
        "",
        f"Journal on disk: {num(res['journal_bytes'] / MB, 1)} MB for "
        f"{res['levels'][-1]['depth']:,} queued workloads.",
    ]
    restart = res.get("restart")
    if restart:
        lines += [
            "",
            f"**Restart:** after `kill -9` of the gateway with {restart['queued']:,} queued, "
            f"a new `asyncnb serve` on the same storage answered `/healthz` after "
            f"{restart['healthz_s']:.2f} s and reported all {restart['queued']:,} queued after "
            f"{restart['recovered_s']:.2f} s (an empty gateway starts in "
            f"{res['cold_start_s']:.2f} s), with {num(restart['rss_after_bytes'] / 2**20, 1)} "
            "MiB RSS.",
        ]
    return lines + image("queue", drawn, page, "submit rate and memory vs queue depth")


def section_payloads(data: dict[str, Any], drawn: dict[str, Path], page: Path) -> list[str]:
    if "error" in data:
        return ["## Payload sizes", "", f"Failed: {_one_line(data['error'])}"]
    res = data["results"]
    rows = [
        [
            r["label"],
            r["workers"],
            f"{r['n']:,}",
            r["concurrency"],
            num(r["e2e_per_s"], 1),
            num(r["mb_per_s"], 1),
            num(r["e2e_p50_ms"]),
            num(r["e2e_p99_ms"]),
        ]
        for r in sorted(res["throughput"], key=lambda r: (r["size"], r["workers"]))
    ]
    lines = [
        "## Payload sizes",
        "",
        "`bench.payloads`: raw bytes (`application/octet-stream`) to a predictor that returns "
        "their length, polled to completion. Bodies up to 1 MiB stay in the gateway's memory "
        "and travel inside the Dask task; larger ones are streamed to storage (local disk) at "
        "submit and read from there by the worker.",
        "",
        table(
            [
                "payload",
                "workers",
                "workloads",
                "in flight",
                "workloads/s",
                "MB/s",
                "e2e p50 ms",
                "e2e p99 ms",
            ],
            rows,
        ),
    ]
    up, result = res.get("upload"), res.get("result")
    if up:
        lines += [
            "",
            f"**{up['label']} upload** (streamed from an async generator, to a gateway with no "
            f"workers): {up['seconds']:.2f} s ({num(up['mb_per_s'])} MB/s); gateway RSS grew "
            f"{num(up['gateway_rss_growth_bytes'] / MB, 1)} MB, the client's "
            f"{num(up['client_rss_growth_bytes'] / MB, 1)} MB.",
        ]
    if result:
        lines += [
            "",
            f"**{result['label']} bytes result** streamed from `GET /{{api}}/{{id}}/result`: "
            f"{result['seconds']:.2f} s ({num(result['mb_per_s'])} MB/s, first byte after "
            f"{_num(result['first_byte_s']) * 1000:.1f} ms); gateway RSS grew "
            f"{num(result['gateway_rss_growth_bytes'] / MB, 1)} MB.",
        ]
    return lines + image("payloads", drawn, page, "throughput vs payload size")


def section_latency(data: dict[str, Any], drawn: dict[str, Path], page: Path) -> list[str]:
    if "error" in data:
        return ["## Light-load latency", "", f"Failed: {_one_line(data['error'])}"]
    res = data["results"]
    rows = []
    for run in res["runs"]:
        phases = run["asyncnb"]["phases"]
        rows.append(
            [
                "back to back" if not run["pause_ms"] else f"{run['pause_ms']:g} ms",
                num(run["asyncnb"]["p50_ms"], 2),
                num(run["asyncnb"]["p99_ms"], 2),
                num(run["dask"]["p50_ms"], 2),
                num(run["dask"]["p99_ms"], 2),
                f"{run['overhead_p50_ms']:+.2f}",
                num(phases["accepted_to_started"]["p50_ms"], 2),
                num(phases["started_to_finished"]["p50_ms"], 2),
                num(phases["finished_to_answer"]["p50_ms"], 2),
            ]
        )
    floor = res["http_floor"]
    return [
        "## Light-load latency against raw Dask",
        "",
        f"`bench.latency`: {res['n']} no-op workloads one at a time, each a `POST` with "
        "`Prefer: wait=30` answered when completed, against `client.submit(noop, x).result()` "
        f"on a `LocalCluster` of {res['workers']} worker processes. The three last columns "
        "split asyncnb's p50 by the timestamps of the status record. `GET /healthz` on the same "
        f"gateway takes {num(floor['p50_ms'], 2)} ms (p50): the HTTP floor.",
        "",
        table(
            [
                "idle between",
                "asyncnb p50 ms",
                "asyncnb p99 ms",
                "Dask p50 ms",
                "Dask p99 ms",
                "p50 difference ms",
                "accepted → started",
                "started → finished",
                "finished → answer",
            ],
            rows,
        ),
        *image("light-latency", drawn, page, "light-load latency, asyncnb vs Dask"),
    ]


def markdown(
    data: dict[str, dict[str, Any]],
    drawn: dict[str, Path],
    page: Path,
    quick: bool,
    command: Sequence[str],
    results_dir: Path,
) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{' '.join(command)}` from the JSON in `{shown(results_dir)}/`; do not "
        "edit by hand, rerun it. How the benchmarks work and what the figures mean: "
        f"[benchmarks.md]({guide_link(page)}). Every server ran as a subprocess on loopback, "
        "on the same machine as its load generator.",
    ]
    if quick:
        lines += [
            "",
            "> **Quick mode**: small sizes, to check the harness. These figures are "
            "not comparable with a full run.",
        ]
    lines += ["", *section_meta(data), "", *section_targets(data)]
    builders = {
        "run": section_run,
        "queue": section_queue,
        "payloads": section_payloads,
        "latency": section_latency,
    }
    for part in PARTS:
        if part in data:
            lines += ["", *builders[part](data[part], drawn, page)]
    return "\n".join(lines) + "\n"


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
        "--markdown", type=Path, default=None, help="default docs/benchmarks-results.md"
    )
    args = parser.parse_args(argv)
    # Quick figures must not overwrite the published ones by accident.
    base = QUICK_DIR if args.quick else None
    args.results_dir = args.results_dir or (base or REPO_ROOT / "bench" / "results")
    args.img_dir = args.img_dir or (base / "img" if base else REPO_ROOT / "docs" / "img")
    default_page = REPO_ROOT / "docs" / "benchmarks-results.md"
    args.markdown = args.markdown or (base / "benchmarks-results.md" if base else default_page)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw)
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
    page = markdown(data, drawn, args.markdown, quick, command, args.results_dir)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(page)
    log(f"[report] wrote {args.markdown}")
    log_targets("report", [check for _, check in all_targets(data)])
    if failed:
        log(f"[report] failed parts: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
