"""`--durability`: buffered never fsyncs; fsync group-commits, so concurrent writes share fsyncs
and every record is on disk (fsynced) before the engine answers 202 or shows a result."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asyncnb.contract.status import Status
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.store import JournalStore, open_store
from asyncnb.engine.store.commit import GroupCommit
from asyncnb.engine.workload import WorkloadState
from asyncnb.runtime.chunks import run_chunk, warm
from asyncnb.storage import Storage

from ..harness import deploy, engine, new_workload, submit
from .test_journal import final, workload


class FsyncCounter:
    """os.fsync, counted (and slowed, like a disk), with the fds it was called on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> None:
        self.calls = 0
        self.fds: list[int] = []
        self.delay = delay
        self._real = os.fsync
        self._lock = threading.Lock()
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.calls += 1
            self.fds.append(fd)
        if self.delay:
            time.sleep(self.delay)
        self._real(fd)


def test_buffered_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = FsyncCounter(monkeypatch)
    store = open_store(Storage(str(tmp_path)))
    assert isinstance(store, JournalStore) and store.commits is None
    accepted = [workload(n) for n in range(20)]
    for w in accepted:
        store.accept(w)
    store.finish("api", [(w, final(w), None) for w in accepted[:10]])
    store.close()
    assert fsyncs.calls == 0
    again = JournalStore(Storage(str(tmp_path)))
    assert len(again.pending("api")) == 10
    again.close()


def test_object_stores_have_no_fsync_mode() -> None:
    store = open_store(Storage("memory://durability-objects"), "fsync")
    assert not isinstance(store, JournalStore)
    store.close()


def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = FsyncCounter(monkeypatch, delay=0.005)  # a disk's few milliseconds per fsync
    storage = Storage(str(tmp_path))
    store = open_store(storage, "fsync")
    assert isinstance(store, JournalStore) and store.commits is not None
    commits = store.commits
    accepted = [workload(n) for n in range(64)]

    async def one(w: WorkloadState) -> None:
        await asyncio.sleep(0)
        store.accept(w)  # inline on the loop, as the engine calls it
        await commits.synced()
        durable.append(fsyncs.calls)  # at least one fsync ran after this write

    async def scenario() -> None:
        await asyncio.gather(*(one(w) for w in accepted))

    durable: list[int] = []
    asyncio.run(scenario())
    assert len(durable) == 64 and min(durable) >= 1
    # 64 appends: the first round syncs one (and the new segment's folder), the rest share
    assert commits.fsyncs <= 8, commits.fsyncs
    assert fsyncs.calls < 64 // 4, fsyncs.calls
    store.close()

    again = JournalStore(storage)
    assert sorted(w.id for w in again.pending("api")) == sorted(w.id for w in accepted)
    again.close()


def test_finals_and_rotation_are_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = FsyncCounter(monkeypatch)
    storage = Storage(str(tmp_path))
    store = JournalStore(storage, fsync=True, segment_bytes=256)  # a new segment every record
    commits = store.commits
    assert commits is not None
    accepted = [workload(n) for n in range(6)]

    async def scenario() -> None:
        for w in accepted:
            store.accept(w)
            await commits.synced()
        calls = fsyncs.calls
        store.finish("api", [(w, final(w), None) for w in accepted[:3]])
        await commits.synced()
        assert fsyncs.calls > calls

    asyncio.run(scenario())
    segments = sorted((tmp_path / "journal" / "api").glob("*.log"))
    assert len(segments) >= 6
    # each new segment: its file and its folder (a directory fd) were fsynced
    assert fsyncs.calls >= 2 * len(segments)
    store.close()  # closes the retired writers too: nothing leaks
    again = JournalStore(storage)
    assert sorted(w.id for w in again.pending("api")) == sorted(w.id for w in accepted[3:])
    record = again.final_record("api", accepted[0].id)
    assert record is not None and record["status"] == "completed"
    again.close()


def test_a_failed_fsync_refuses_every_later_write(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    commits = GroupCommit()
    read, write = os.pipe()
    monkeypatch.setattr(os, "fsync", broken)

    async def scenario() -> None:
        commits.wrote(write)
        with pytest.raises(OSError, match="could not fsync"):
            await commits.synced()
        with pytest.raises(OSError, match="could not fsync"):
            await commits.synced()

    try:
        asyncio.run(scenario())
    finally:
        commits.close()
        os.close(read)
        os.close(write)


def test_engine_fsync_mode_answers_after_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = FsyncCounter(monkeypatch, delay=0.002)
    seen: list[Any] = []

    async def scenario() -> None:
        backend = FakeBackend(1, runner=run_chunk, warmer=warm)  # the real worker runtime
        gateway = engine(backend, Storage(str(tmp_path)), durability="fsync")
        await gateway.start()
        state = await deploy(gateway)
        before = fsyncs.calls
        workloads = await asyncio.gather(*(submit(gateway, state) for _ in range(32)))
        assert fsyncs.calls > before  # each accept awaited a sync
        seen.append(fsyncs.calls - before)
        for w in workloads:
            await gateway.wait(w, 10)
            assert w.status is Status.COMPLETED
        metrics = gateway.metrics.render().decode()
        line = next(x for x in metrics.splitlines() if x.startswith("asyncnb_journal_fsyncs_total"))
        assert 0 < float(line.split()[-1]) < 32 + 32  # accepts and finals share fsyncs
        assert "asyncnb_journal_fsync_seconds_bucket" in metrics
        await gateway.close()

    asyncio.run(scenario())
    assert seen[0] < 32


def test_engine_buffered_mode_never_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fsyncs = FsyncCounter(monkeypatch)

    async def scenario() -> None:
        backend = FakeBackend(1, runner=run_chunk, warmer=warm)
        gateway = engine(backend, Storage(str(tmp_path)))
        await gateway.start()
        state = await deploy(gateway)
        workloads = [await submit(gateway, state) for _ in range(8)]
        for w in workloads:
            await gateway.wait(w, 10)
            assert w.status is Status.COMPLETED
        assert "asyncnb_journal_fsyncs_total 0.0" in gateway.metrics.render().decode()
        await gateway.close()

    asyncio.run(scenario())
    assert fsyncs.calls == 0


def test_a_streamed_payload_is_fsynced_before_its_queue_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncnb.engine.engine as engine_module
    from asyncnb.engine.store.commit import fsync_file

    order: list[str] = []

    def synced_file(path: str) -> None:
        fsync_file(path)
        order.append(path)

    monkeypatch.setattr(engine_module, "fsync_file", synced_file)

    async def scenario() -> None:
        storage = Storage(str(tmp_path))
        backend = FakeBackend(1, runner=run_chunk, warmer=warm)
        gateway = engine(backend, storage, durability="fsync")
        await gateway.start()
        state = await deploy(gateway)
        body = b'{"big": true}'
        stored = new_workload(state.name, body, payload_stored=True)
        stored.body = None
        path = storage.payload_path(state.name, stored.id)
        storage.write_bytes(path, body)  # as the upload streams it
        await gateway.accept(state, stored)
        assert order == [path]
        await gateway.wait(stored, 10)
        assert stored.status is Status.COMPLETED
        plain = await submit(gateway, state)  # an inline payload: nothing beside the journal
        await gateway.wait(plain, 10)
        assert order == [path]
        await gateway.close()

    asyncio.run(scenario())
