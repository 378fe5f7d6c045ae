"""Throughput and latency of recent finishes (`stats` of the API record), alone and as the
engine records them in `finish_many`; and `Engine.reconfigure` (new scaling bounds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import pytest
from pydantic import ValidationError

from asyncnb.engine import NotFound
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.stats import RecentFinishes, percentile
from asyncnb.runtime.chunks import run_chunk, warm

from .harness import deploy, engine, submit, until


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


class Flaky:
    def predict(self, payload: Any) -> Any:
        if payload.get("fail"):
            raise ValueError("asked to fail")
        return payload


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.0
    assert percentile(ordered, 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1.0, 2.0], 0.5) == 1.0


def test_no_finishes_means_no_latency() -> None:
    summary = RecentFinishes().summary(time.time())
    assert summary == {
        "window_s": 60.0,
        "finished": 0,
        "completed": 0,
        "failed": 0,
        "completed_per_s": 0.0,
        "latency_p50_s": None,
        "latency_p95_s": None,
    }


def test_only_the_window_counts() -> None:
    finishes = RecentFinishes(window_s=60)
    now = 10_000.0
    finishes.record(now - 120, 50.0, failed=False)  # too old: not counted
    for n in range(1, 21):  # 20 completed in the last 20 s, latencies 0.1 .. 2.0 s
        finishes.record(now - 20 + n, n / 10, failed=False)
    finishes.record(now - 1, 9.0, failed=True)
    summary = finishes.summary(now)
    assert summary["window_s"] == 60
    assert (summary["finished"], summary["completed"], summary["failed"]) == (21, 20, 1)
    assert summary["completed_per_s"] == round(20 / 60, 3)
    assert summary["latency_p50_s"] == 1.1  # 11th of 21 sorted latencies
    assert summary["latency_p95_s"] == 2.0  # 20th of 21: the failed one's 9 s is the 21st
    assert len(finishes) == 22


def test_memory_is_bounded_and_a_full_buffer_says_what_it_spans() -> None:
    finishes = RecentFinishes(window_s=60, capacity=100)
    now = 1_000.0
    for n in range(1_000):  # 1000 finishes in the last 10 s: only the last 100 are kept
        finishes.record(now - 10 + n / 100, 0.5, failed=False)
    assert len(finishes) == 100
    summary = finishes.summary(now)
    assert summary["finished"] == 100
    assert summary["window_s"] == pytest.approx(1.0, abs=0.02)  # the 100 kept span ~1 s
    assert summary["completed_per_s"] == pytest.approx(100, rel=0.05)  # the true rate


def test_the_engine_records_completed_and_failed_workloads() -> None:
    async def scenario() -> None:
        gateway = engine(FakeBackend(1, runner=run_chunk, warmer=warm))
        await gateway.start()
        state = await deploy(gateway, "flaky", Flaky)
        done = [await submit(gateway, state, b'{"n": 1}') for _ in range(3)]
        done.append(await submit(gateway, state, b'{"fail": true}'))
        for workload in done:
            await gateway.wait(workload, 10)
        cancelled = await submit(gateway, state, b"{}")
        await gateway.cancel("flaky", cancelled.id)
        await until(lambda: state.counts["cancelled"] == 1)
        stats = state.public()["stats"]
        assert (stats["finished"], stats["completed"], stats["failed"]) == (4, 3, 1)
        assert stats["completed_per_s"] == round(3 / 60, 3)
        latencies = sorted((w.finished_at or 0) - w.created_at for w in done)
        assert stats["latency_p50_s"] == pytest.approx(latencies[1], abs=1e-3)
        assert stats["latency_p95_s"] == pytest.approx(latencies[3], abs=1e-3)
        await gateway.close()

    run(scenario())


def test_reconfigure_persists_new_bounds_without_a_new_version() -> None:
    async def scenario() -> None:
        storage_engine = engine(FakeBackend())
        await storage_engine.start()
        state = await deploy(storage_engine, "api", min_replicas=1, max_replicas=4)
        state.desired_workers = 3
        changed = await storage_engine.reconfigure("api", {"max_replicas": 2})
        assert changed is state and state.version == 1
        assert (state.options.min_replicas, state.options.max_replicas) == (1, 2)
        assert state.desired_workers == 2  # moved within the new bounds
        assert "scaling bounds changed to [1, 2]" in state.scaling_events[-1]["reason"]
        spec = storage_engine.storage.read_json(storage_engine.storage.spec_path("api"))
        assert spec["options"]["max_replicas"] == 2 and spec["version"] == 1
        await storage_engine.reconfigure("api", {"min_replicas": 0})
        assert state.desired_workers == 2  # within [0, 2]: kept
        await storage_engine.close()

        # A restart reads the spec: the bounds stay.
        again = engine(FakeBackend(), storage=storage_engine.storage)
        await again.start()
        recovered = again.apis["api"].options
        assert (recovered.min_replicas, recovered.max_replicas) == (0, 2)
        await again.close()

    run(scenario())


def test_reconfigure_refuses_what_a_deploy_would_and_what_needs_a_deploy() -> None:
    async def scenario() -> None:
        gateway = engine(FakeBackend())
        await gateway.start()
        state = await deploy(gateway, "api", max_replicas=4)
        with pytest.raises(ValidationError, match="min_replicas must not exceed max_replicas"):
            await gateway.reconfigure("api", {"min_replicas": 5})
        with pytest.raises(ValidationError):
            await gateway.reconfigure("api", {"max_replicas": 0})
        with pytest.raises(ValueError, match="not a scaling option: gpu"):
            await gateway.reconfigure("api", {"gpu": 1})
        with pytest.raises(NotFound):
            await gateway.reconfigure("nope", {"min_replicas": 0})
        assert state.options.max_replicas == 4 and state.options.min_replicas == 1
        await gateway.close()

    run(scenario())
