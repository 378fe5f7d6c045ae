"""The benchmark report, drawn from the JSON of a real `make bench` run (no benchmark runs)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from asyncnb.contract.names import new_workload_id
from asyncnb.contract.status import Status
from asyncnb.engine.workload import WorkloadState
from bench import durability, fairness, report, streaming
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
        "## Streaming: event latency, many SSE streams, and the cost to other workloads",
        "## Durability levels: what `--durability fsync` costs a submit",
    ):
        assert heading in text
    targets = text.split("## Targets (issue 6)")[1].split("\n## ")[0]
    assert targets.count("| met |") == 14, targets
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


# --------------------------------------------------------------------------- streaming


def _streaming_json() -> dict[str, Any]:
    found: dict[str, Any] = json.loads((RESULTS / "streaming.json").read_text())
    return found


def test_the_streaming_section_lands_in_the_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page) == 0
    text = page.read_text()
    section = text.split("## Streaming: event latency")[1].split("\n## ")[0]
    fan = _streaming_json()["results"]["fanout"]
    for label in (
        "| outputs, 1 stream, 20 ms apart |",
        "| log lines of that stream |",
        f"| outputs, {fan['streams']:,} streams ({fan['workloads']} workloads x 10 readers",
        "| the same, a second round |",
        "KiB per connected stream**",
        "| **after / before (medians)** |",
        "(`903a1d8`)",
    ):
        assert label in section, label
    targets = text.split("## Targets (issue 6)")[1].split("\n## ")[0]
    assert "SSE streams on one gateway: every output delivered, in order" in targets
    assert "non-streaming throughput, after / before streaming" in targets
    assert "| streaming |" in targets
    assert "`python -m bench.streaming" in text


def test_a_failed_streaming_part_says_why(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    meta = _streaming_json()["meta"]
    (results / "streaming.json").write_text(json.dumps({"meta": meta, "error": "no git\nmore"}))
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page, results) == 0
    section = page.read_text().split("## Streaming: event latency")[1].split("\n## ")[0]
    assert "Failed: no git" in section


def test_streaming_targets_follow_the_figures() -> None:
    results = _streaming_json()["results"]
    results["throughput"]["ratio"] = 0.96
    results["fanout"]["complete"] = results["fanout"]["streams"]
    assert [c["met"] for c in streaming.evaluate(results)] == [True, True]
    results["throughput"]["ratio"] = 0.94
    results["fanout"]["complete"] -= 1
    assert [c["met"] for c in streaming.evaluate(results)] == [False, False]
    assert streaming.evaluate({}) == []


def _event(event_id: int, kind: str, at: float, **fields: Any) -> bytes:
    stamp = dt.datetime.fromtimestamp(at, tz=dt.timezone.utc).isoformat()
    data = {"event_id": event_id, "type": kind, "attempt": 1, "timestamp": stamp, **fields}
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _read(stream: bytes, expected: int, split: int) -> streaming.SseReader:
    """An SseReader fed `stream` `split` bytes at a time, as the network might cut it."""

    async def feed() -> streaming.SseReader:
        reader = streaming.SseReader("127.0.0.1", 1, "/api/id/events", expected)
        for i in range(0, len(stream), split):
            reader.data_received(stream[i : i + split])
        return reader

    return asyncio.run(feed())


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_the_sse_reader_takes_chunked_events_however_they_are_cut(split: int) -> None:
    now = time.time()
    body = b"retry: 2000\n\n" + _event(1, "start", now - 1) + b": keep-alive\n\n"
    body += _event(2, "log", now - 0.5, line="tick 0", stream="stdout")
    body += b"".join(_event(3 + i, "output", now - 0.2, index=i, value={"i": i}) for i in range(3))
    body += _event(6, "completed", now, status="completed")
    reader = _read(HEAD + _chunked(body, 13), 3, split)
    assert reader.status == 200 and reader.terminal == "completed"
    assert reader.indices == [0, 1, 2] and reader.complete and reader.problem() is None
    assert reader.keepalives == 1 and reader.events == 6
    assert all(0.15 < x < 5 for x in reader.output_latency), reader.output_latency
    assert len(reader.log_latency) == 1 and reader.log_latency[0] > 0.45
    summary = streaming.summarise_readers([reader], [now - 0.25])
    assert summary["complete"] == 1 and summary["outputs_received"] == 3
    assert summary["output_latency"]["count"] == 3
    assert 40 < summary["first_output_lag_max_ms"] < 60


def test_the_sse_reader_says_what_a_stream_missed() -> None:
    now = time.time()
    gap = _event(1, "output", now, index=0) + _event(2, "output", now, index=2)
    missed = _read(HEAD + _chunked(gap + _event(3, "completed", now), 50), 3, 64)
    assert not missed.complete and missed.problem() == "2 of 3 outputs"
    order = _event(1, "output", now, index=1) + _event(2, "output", now, index=0)
    swapped = _read(HEAD + _chunked(order + _event(3, "completed", now), 50), 2, 64)
    assert swapped.problem() == "output 0 came as index 1"
    refused = _read(b"HTTP/1.1 503 Unavailable\r\ncontent-length: 0\r\n\r\n", 1, 64)
    assert refused.status == 503 and "503" in (refused.problem() or "")


# --------------------------------------------------------------------------- durability


def _durability_json() -> dict[str, Any]:
    found: dict[str, Any] = json.loads((RESULTS / "durability.json").read_text())
    return found


def test_the_durability_section_lands_in_the_page(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page) == 0
    text = page.read_text()
    section = text.split("## Durability levels")[1].split("\n## ")[0]
    res = _durability_json()["results"]
    fsync = res["modes"]["fsync"]
    assert "| `buffered` |" in section and "| `fsync` |" in section
    assert f"| {fsync['submit_per_s']:,.0f} | {fsync['submit_p50_ms']:,.2f} |" in section
    assert f"**{res['rate_ratio']:.0%}** of the submit rate" in section
    assert "One fsync of a 1 KiB append on this disk alone" in section
    assert "`python -m bench.durability" in text
    assert 0 < fsync["fsyncs_per_submit"] < 1  # group commit: submits shared fsyncs


def test_a_failed_durability_part_says_why(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    meta = _durability_json()["meta"]
    (results / "durability.json").write_text(json.dumps({"meta": meta, "error": "no disk"}))
    page = tmp_path / "benchmarks.md"
    assert _render(tmp_path, page, results) == 0
    section = page.read_text().split("## Durability levels")[1].split("\n## ")[0]
    assert "Failed: no disk" in section


def test_durability_medians_and_ratios() -> None:
    def one(mode: str, rate: float, p50: float, fsyncs: float = 0) -> dict[str, Any]:
        return {
            "mode": mode,
            "accepted": 100,
            "failures": 0,
            "submit_per_s": rate,
            "submit_p50_ms": p50,
            "submit_p99_ms": 2 * p50,
            "fsyncs": fsyncs,
        }

    rounds = [
        one("buffered", 1000, 10),
        one("fsync", 500, 20, 10),
        one("fsync", 700, 14, 20),
        one("buffered", 800, 12),
        one("buffered", 900, 11),
        one("fsync", 600, 16, 30),
    ]
    summary = durability.summarise(rounds)
    assert summary["modes"]["buffered"]["submit_per_s"] == 900
    assert summary["modes"]["fsync"]["submit_p50_ms"] == 16
    assert summary["modes"]["fsync"]["fsyncs_per_submit"] == pytest.approx(60 / 300)
    assert summary["rate_ratio"] == pytest.approx(600 / 900)
    assert summary["p50_added_ms"] == pytest.approx(5)
