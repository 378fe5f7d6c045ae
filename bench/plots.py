"""The report's plots: one PNG per figure, drawn with matplotlib from each part's JSON.

`draw` writes `bench-<name>.png` for every plot in `PLOTS` whose part has results, and returns
the paths it drew, by name, for the page to embed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from bench.harness import log
from bench.targets import GET_P50_TARGET_MS, SUBMIT_P50_TARGET_MS, num_or_nan

SYSTEM_COLORS = {"noop": "#9e9e9e", "celery": "#d95f02", "asyncnb": "#1b9e77"}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a benchmark box
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.grid": True})
    plt.rcParams.update({"grid.alpha": 0.3, "axes.axisbelow": True})
    return plt


def figure(panels: int = 1) -> tuple[Any, Any]:
    """A figure of one panel, 6.4 x 3.6 in, or of two side by side, 9.6 x 3.6 in."""
    width = 6.4 if panels == 1 else 9.6
    return pyplot().subplots(1, panels, figsize=(width, 3.6))


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


class Series(NamedTuple):
    """One bar per system for one figure of `bench.run`'s results."""

    key: str
    label: str
    color: str | None = None  # None: each system in its own colour
    alpha: float | None = None


def system_bars(
    data: dict[str, Any],
    path: Path,
    series: Sequence[Series],
    width: float,
    ylabel: str,
    title: str,
    legend: dict[str, Any],
) -> Path | None:
    """Grouped bars: a group per measured system, a bar per series, each labelled."""
    systems = measured_systems(data)
    if not systems:
        return None
    fig, ax = figure()
    names = list(systems)
    xs = range(len(names))
    for i, one in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        values = [num_or_nan(systems[n].get(one.key)) for n in names]
        colors = one.color or [SYSTEM_COLORS.get(n, "#7570b3") for n in names]
        bars = ax.bar(
            [x + offset for x in xs],
            values,
            width,
            label=one.label,
            color=colors,
            alpha=one.alpha,
        )
        bar_labels(ax, bars)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(**legend)
    ax.margins(y=0.15)
    return save(fig, path)


def plot_throughput(data: dict[str, Any], path: Path) -> Path | None:
    series = (
        Series("e2e_per_s", "end to end (submit + poll to completed)", alpha=1.0),
        Series("submit_per_s", "submits accepted", alpha=0.55),
    )
    title = f"Throughput, {_n_and_c(data)} (higher is better)"
    legend = {"loc": "upper right", "fontsize": 8}
    return system_bars(data, path, series, 0.38, "workloads / s", title, legend)


def _n_and_c(data: dict[str, Any]) -> str:
    meta = data.get("meta", {})
    return f"n={meta.get('n', '?')}, {meta.get('concurrency', '?')} requests in flight"


def plot_latency(data: dict[str, Any], path: Path) -> Path | None:
    # Paired colours: light/dark of one hue for p50/p99 of the same measurement.
    series = (
        Series("submit_p50_ms", "submit p50", "#a6cee3"),
        Series("submit_p99_ms", "submit p99", "#1f78b4"),
        Series("e2e_p50_ms", "end to end p50", "#b2df8a"),
        Series("e2e_p99_ms", "end to end p99", "#33a02c"),
    )
    title = f"Latency under load, {_n_and_c(data)} (lower is better)"
    legend = {"fontsize": 8, "ncol": 2}
    return system_bars(data, path, series, 0.2, "milliseconds", title, legend)


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
    fig, (left, right) = figure(2)
    queue_rate_panel(left, levels)
    queue_memory_panel(right, levels)
    return save(fig, path)


def queue_rate_panel(ax: Any, levels: Sequence[dict[str, Any]]) -> None:
    depth = [lvl["depth"] for lvl in levels]
    window = [lvl["submit_per_s"] for lvl in levels]
    ax.plot(
        depth, window, "o-", color="#1b9e77", label="last tenth of the submits before the level"
    )
    batch = [lvl["batch_per_s"] for lvl in levels]
    ax.plot(depth, batch, "s--", color="#7570b3", label="whole batch since the previous level")
    cpu_us = [num_or_nan(lvl.get("cpu_us_per_submit")) for lvl in levels]
    cpu = [1e6 / us if us > 0 else math.nan for us in cpu_us]  # NaN stays NaN
    if not all(math.isnan(c) for c in cpu):
        label = "what the gateway's CPU time per submit allows"
        ax.plot(depth, cpu, "^:", color="#666666", label=label)
    ax.axhline(0.8 * window[0], color="#d95f02", ls=":", label="target: 80% of the first level")
    depth_axis(ax, depth)
    highest = max(v for v in (*window, *batch, *cpu) if not math.isnan(v))
    ax.set_ylim(bottom=0, top=highest * 1.25)
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
    fig, (left, right) = figure(2)
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
    fig, ax = figure()
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


def plot_curve(data: dict[str, Any], path: Path) -> Path | None:
    """Submit and GET p50 against the offered rate, a line per system, with the targets."""
    curves = {n: r["curve"] for n, r in data.get("results", {}).items() if r.get("curve")}
    if not curves:
        return None
    fig, (left, right) = figure(panels=2)
    for ax, key, goal, what in (
        (left, "submit_p50_ms", SUBMIT_P50_TARGET_MS, "submit (POST) p50"),
        (right, "get_p50_ms", GET_P50_TARGET_MS, "poll (GET) p50"),
    ):
        for name, points in curves.items():
            rates = [num_or_nan(p.get("offered_per_s")) for p in points]
            values = [num_or_nan(p.get(key)) for p in points]
            color = SYSTEM_COLORS.get(name, "#7570b3")
            ax.plot(rates, values, "o-", color=color, label=name)
        # Not in the Celery stack's orange: the line is a goal, not a system.
        ax.axhline(goal, color="black", ls=":", label=f"target: {goal:g} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({num_or_nan(p.get("offered_per_s")) for c in curves.values() for p in c})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("workloads / s offered (open loop)")
        ax.set_ylabel("milliseconds")
        clients = data.get("meta", {}).get("concurrency", "?")
        ax.set_title(f"{what} vs offered load, {clients} clients")
        ax.legend(fontsize=8)
    return save(fig, path)


PLOTS = {
    "run": (
        ("throughput", plot_throughput),
        ("latency", plot_latency),
        ("curve", plot_curve),
    ),
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
