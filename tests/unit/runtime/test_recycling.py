"""A process a hung predict was left in is tainted; its last chunk asks for a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from distributed.core import Status

from asyncnb.runtime import chunks, recycling
from asyncnb.runtime.recycling import ProcessHealth
from asyncnb.storage import Storage


class FakeLoop:
    def add_callback(self, callback: Any) -> None:
        result = callback()
        if asyncio.iscoroutine(result):
            asyncio.run(result)


class FakeNanny:
    def __init__(self) -> None:
        self.kills: list[str] = []

    async def kill(self, reason: str) -> None:
        self.kills.append(reason)


class FakeWorker:
    """What recycling reads of a Dask worker: its nanny, address, status and loop."""

    def __init__(self, nanny: str | None = "tcp://127.0.0.1:9000") -> None:
        self.nanny = nanny
        self.address = "tcp://127.0.0.1:9001"
        self.status = Status.running
        self.loop = FakeLoop()
        self.events: list[tuple[str, Any]] = []
        self.nanny_rpc = FakeNanny()

    def rpc(self, address: str) -> FakeNanny:
        assert address == self.nanny
        return self.nanny_rpc

    def log_event(self, topic: str, message: Any) -> None:
        self.events.append((topic, message))

    def get_current_task(self) -> str:
        return "chunk-key"


def test_last_chunk_of_a_tainted_process_asks_once() -> None:
    health, worker = ProcessHealth(), FakeWorker()
    health.enter()
    health.enter()
    health.taint(worker)
    assert health.tainted and worker.status == Status.closing_gracefully  # no new tasks
    assert health.leave() is False  # another chunk still runs here
    assert health.leave() is True
    health.enter()
    assert health.leave() is False  # asked once


def test_an_untainted_process_is_never_recycled() -> None:
    health = ProcessHealth()
    health.enter()
    assert health.leave() is False and not health.tainted


def test_without_a_nanny_the_thread_is_left_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health, worker = ProcessHealth(), FakeWorker(nanny=None)
    with caplog.at_level(logging.WARNING, logger=recycling.__name__):
        for _ in range(3):
            health.enter()
            health.taint(worker)
            assert health.leave() is False
    assert worker.status == Status.running  # it keeps working
    assert len([r for r in caplog.records if "no Nanny" in r.getMessage()]) == 1


class Hung:
    def predict(self, payload: Any) -> Any:
        time.sleep(float(payload["sleep"]))
        return "awake"


def _spec(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    storage = Storage(f"file://{tmp_path / 'storage'}")
    api = f"api-{uuid.uuid4().hex[:12]}"
    storage.write_bytes(storage.predictor_path(api, 1), pickle.dumps((cloudpickle.dumps(Hung), {})))
    return {
        "api": api,
        "version": 1,
        "storage": storage.describe(),
        "inline_limit": 1024,
        "max_batch_size": 1,
        "timeout_s": 0.05,
        **extra,
    }


def _item(payload: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "content_type": "application/json",
        "body": json.dumps(payload).encode(),
    }


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> FakeWorker:
    fake = FakeWorker()
    monkeypatch.setattr(chunks, "health", ProcessHealth())
    monkeypatch.setattr(recycling, "FALLBACK_AFTER_S", 0.05)
    monkeypatch.setattr(chunks, "_current_worker", lambda: fake)
    return fake


def test_timed_out_chunk_fails_with_timeout_and_carries_recycle(
    tmp_path: Path, worker: FakeWorker
) -> None:
    spec = _spec(tmp_path)
    hung, fine = chunks.run_chunk(spec, [_item({"sleep": 2}), _item({"sleep": 0})])
    assert hung["ok"] is False and hung["error"]["type"] == "Timeout"
    assert fine["ok"] is True  # the rest of the chunk still ran
    assert worker.status == Status.closing_gracefully
    for outcome in (hung, fine):
        assert outcome["recycle"] is True and outcome["worker"] == worker.address
    # the process is asked to be recycled once: a later chunk here says nothing more
    [later] = chunks.run_chunk(spec, [_item({"sleep": 0})])
    assert "recycle" not in later


def test_recycle_travels_in_the_outcomes_event(tmp_path: Path, worker: FakeWorker) -> None:
    spec = _spec(tmp_path, outcomes_by_event=True)
    assert chunks.run_chunk(spec, [_item({"sleep": 2})]) is None
    [(_, message)] = [e for e in worker.events if e[0] == "asyncnb-outcomes"]
    assert message["outcomes"][0]["recycle"] is True


def test_chunks_that_never_time_out_carry_no_flag(tmp_path: Path, worker: FakeWorker) -> None:
    [outcome] = chunks.run_chunk(_spec(tmp_path), [_item({"sleep": 0})])
    assert outcome["ok"] is True and "recycle" not in outcome
    assert worker.status == Status.running


def test_without_the_gateways_restart_the_worker_asks_its_nanny(
    tmp_path: Path, worker: FakeWorker
) -> None:
    chunks.run_chunk(_spec(tmp_path), [_item({"sleep": 2})])
    deadline = time.monotonic() + 5
    while not worker.nanny_rpc.kills:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert worker.nanny_rpc.kills == ["asyncnb-hung-predict"]
