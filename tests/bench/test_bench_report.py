"""The benchmark report, drawn from the JSON of a real `make bench` run (no benchmark runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from asyncnb.contract.names import new_workload_id
from asyncnb.contract.status import Status
from asyncnb.engine.workload import WorkloadState
from bench import fairness, report
from bench.page import END_MARKER, START_MARKER
from bench.queue_cost import Batch, cpu_per_submit, median_levels, summarise_level
from bench.targets import curve_reach

RESULTS = Path(__file__).resolve().parents[1] / "data" / "bench_results"


def _render(tmp_path: Path, page: Path, results: Path = RESULTS) -> int:
    return report.main(
        [
            "--report-only",
            "--results-dir",
            str(results),
            "--img-dir",
            str(tmp_path / "img"),
            "--markdown",
            str(page),
        ]
    )


def test_page_holds_every_section_target_and_plot(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page) == 0
    text = page.read_text()
    for heading in (
        "## Targets (issue 6)",
        "## End to end: noop ceiling vs FastAPI+Celery+Redis vs asyncnb",
        "## Latency at a sustainable load (64 clients, paced)",
        "## Latency as the load grows (64 clients, open loop)",
        "## Queue cost: 1k / 10k / 100k queued workloads",
        "## Payload sizes",
        "## Light-load latency against raw Dask",
        "## Fair queuing across callers: one key's flood against another's trickle",
    ):
        assert heading in text
    targets = text.split("## Targets (issue 6)")[1].split("\n## ")[0]
    assert targets.count("| met |") == 12, targets
    assert "on the load curve" in targets
    assert "median of 5 fills" in targets
    drawn = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert drawn == [
        f"bench-{name}.png"
        for name in sorted(("throughput", "latency", "curve", "queue", "payloads", "light-latency"))
    ]
    for name in drawn:
        assert (tmp_path / "img" / name).stat().st_size > 10_000
        assert f"(img/{name})" in text


def test_only_the_text_between_the_markers_is_rewritten(tmp_path: Path) -> None:
    page = tmp_path / "guide.md"
    page.write_text(f"# Guide\n\nhand-written\n\n{START_MARKER}\nold\n{END_MARKER}\n\nafter\n")
    assert _render(tmp_path, page) == 0
    once = page.read_text()
    assert once.startswith("# Guide\n\nhand-written\n\n") and once.endswith("\n\nafter\n")
    assert "old" not in once and "## Payload sizes" in once
    assert _render(tmp_path, page) == 0
    assert page.read_text() == once  # idempotent


def test_a_page_without_markers_is_left_alone(tmp_path: Path) -> None:
    page = tmp_path / "guide.md"
    page.write_text("# Guide without markers\n")
    assert _render(tmp_path, page) == 1
    assert page.read_text() == "# Guide without markers\n"


def test_a_failed_part_is_reported_not_hidden(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    queue = json.loads((results / "queue.json").read_text())
    (results / "queue.json").write_text(json.dumps({"meta": queue["meta"], "error": "boom"}))
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page, results) == 0
    assert "Failed: boom" in page.read_text()
    assert "submit rate at 100,000" not in page.read_text()


@pytest.mark.parametrize(
    ("p50s", "expected"),
    [
        ([1.0, 1.5, 3.0], "; within 2 ms up to 500/s on the load curve"),
        ([2.5, 1.0, 1.0], "; above 2 ms at every rate of the load curve"),
        ([1.0, 1.0, 1.0], "; within 2 ms up to 1000/s on the load curve"),
    ],
)
def test_curve_reach_stops_at_the_first_rate_that_misses(p50s: list[float], expected: str) -> None:
    points = [
        {"offered_per_s": rate, "submit_per_s": rate, "get_p50_ms": p50, "failures": 0}
        for rate, p50 in zip((250.0, 500.0, 1000.0), p50s, strict=True)
    ]
    assert curve_reach(points, "get_p50_ms", 2.0) == expected


def test_curve_reach_needs_the_rate_to_be_kept_up() -> None:
    behind = [{"offered_per_s": 1000.0, "submit_per_s": 800.0, "get_p50_ms": 1.0}]
    assert curve_reach(behind, "get_p50_ms", 2.0).startswith("; above")


def test_queue_levels_take_the_cpu_per_submit_of_their_window() -> None:
    done = [i * 0.001 for i in range(1000)]  # 1,000 submits/s
    cpu = {i: i * 0.0002 for i in range(0, 1000, 250)}  # 200 µs of gateway CPU each
    level = summarise_level(1000, Batch(done, [0.002] * 1000, cpu), 500, 64)
    assert level.submit_per_s == pytest.approx(1000)
    assert level.cpu_us_per_submit == pytest.approx(200)
    assert cpu_per_submit(cpu, 0, 100) != cpu_per_submit(cpu, 0, 100)  # NaN: one reading
    assert median_levels([[level], [level], [level]])[0]["submit_per_s"] == pytest.approx(1000)


def _finished(submitted_by: str, created: float, started: float, finished: float) -> WorkloadState:
    workload = WorkloadState(
        new_workload_id(), "sleepy", created_at=created, content_type="application/json"
    )
    workload.submitted_by = submitted_by
    workload.status = Status.COMPLETED
    workload.started_at, workload.finished_at = started, finished
    return workload


def _fairness_results() -> dict[str, Any]:
    """bench.fairness's figures from made-up workloads: 100 of A's, 10 ms each from t=0, and
    three of B's that ran after 2, 5 and 100 of A's (no cluster runs)."""
    flood = [_finished("A", 0.0, i * 0.01, (i + 1) * 0.01) for i in range(100)]

    def lone(after: int) -> WorkloadState:
        return _finished("B", 0.005, after * 0.01 - 0.001, after * 0.01 + 0.009)

    runs = {
        "fair_flood": fairness.summarise("fair", 0.0, 0.01, flood, [lone(2), lone(5)]),
        "fair_alone": fairness.summarise("fair", 0.0, 0.0, [], [lone(1)]),
        "fifo_flood": fairness.summarise("fifo", 0.0, 0.01, flood, [lone(100)]),
    }
    return {
        "flood": 100,
        "item_ms": 10.0,
        "trickle_every_ms": 100.0,
        "alone_s": 1.0,
        "max_chunk": 64,
        "prefetch": 1,
        "runs": runs,
        "flood_ratio": runs["fair_flood"]["flood_per_s"] / runs["fifo_flood"]["flood_per_s"],
        "all_ratio": runs["fair_flood"]["all_per_s"] / runs["fifo_flood"]["all_per_s"],
    }


def test_fairness_figures_count_what_ran_while_b_waited() -> None:
    results = _fairness_results()
    fair, fifo = results["runs"]["fair_flood"], results["runs"]["fifo_flood"]
    assert fair["a_during_b_p50"] == 3.5 and fifo["a_during_b_p50"] == 100
    assert fair["b_workloads"] == 2 and fair["flood"] == 100
    assert fair["flood_per_s"] == pytest.approx(100)
    assert fair["b_wait_p95_s"] == pytest.approx(0.044)
    assert "flood_per_s" not in results["runs"]["fair_alone"]
    checks = fairness.evaluate(results)
    assert [check["met"] for check in checks] == [True, True]


def test_the_fairness_section_lands_in_the_page(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    meta = {"command": "python -m bench.fairness --json x.json", "date_utc": "today"}
    data = _fairness_results()
    payload = {"meta": meta, "results": data, "targets": fairness.evaluate(data)}
    (results / "fairness.json").write_text(json.dumps(payload))
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page, results) == 0
    text = page.read_text()
    section = text.split("## Fair queuing across callers")[1].split("\n## ")[0]
    for label in ("| fair, with the flood |", "| fair, B alone |", "| fifo, with the flood |"):
        assert label in section
    assert "Throughput of the flood, fair / fifo" in section
    targets = text.split("## Targets (issue 6)")[1].split("\n## ")[0]
    assert "behind a flood of 100, fair" in targets and "| fairness |" in targets
    assert "| `python -m bench.fairness --json x.json` |" in text
