"""The results page as markdown: tables, plot links and target verdicts, from each part's JSON."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.harness import MB, REPO_ROOT
from bench.run import format_paced_table, format_table
from bench.targets import VERDICT, all_targets, num_or_nan


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
    value = num_or_nan(value)
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def image(name: str, drawn: dict[str, Path], page: Path, alt: str) -> list[str]:
    if name not in drawn:
        return []
    return ["", f"![{alt}]({os.path.relpath(drawn[name], page.parent)})"]


def section_meta(data: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for part in SECTIONS:
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
    poll_ms = num_or_nan(meta.get("poll_interval_s")) * 1000
    return [
        "## End to end: noop ceiling vs FastAPI+Celery+Redis vs asyncnb",
        "",
        f"`bench.run`: {meta.get('n', '?')} JSON workloads, {meta.get('concurrency', '?')} "
        f"HTTP requests in flight, each workload polled every "
        f"{poll_ms:g} ms until completed; the systems run one "
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
    rate = num_or_nan(meta.get("paced_rate", offered[0] if offered else None))
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
            f"{num_or_nan(result['first_byte_s']) * 1000:.1f} ms); gateway RSS grew "
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


Section = Callable[[dict[str, Any], dict[str, Path], Path], list[str]]
# One section per part, in the page's order (that of bench.report's parts).
SECTIONS: dict[str, Section] = {
    "run": section_run,
    "queue": section_queue,
    "payloads": section_payloads,
    "latency": section_latency,
}


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
    for part, section in SECTIONS.items():
        if part in data:
            lines += ["", *section(data[part], drawn, page)]
    return "\n".join(lines) + "\n"
