"""JournalStore: append, replay after a crash, torn tails, one owner, expiry."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from asyncnb.contract.status import Status
from asyncnb.engine.store import JournalLocked, JournalStore
from asyncnb.engine.workload import WorkloadState
from asyncnb.storage import Storage


def workload(n: int, body: bytes = b'{"n": 1}\n{"more": "lines"}') -> WorkloadState:
    return WorkloadState(
        f"{n:032x}",
        "api",
        created_at=time.time(),
        content_type="application/json",
        body=body,
        size=len(body),
    )


def final(w: WorkloadState, expires_in: float = 3600) -> dict:
    w.result_data, w.result_content_type, w.result_size = b'{"ok":true}', "application/json", 11
    w.finished_at = time.time()
    w.expires_at = time.time() + expires_in
    return w.final_record(Status.COMPLETED)


def test_replay_requeues_only_unfinished(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    store = JournalStore(storage)
    accepted = [workload(n) for n in range(10)]
    for w in accepted:
        store.accept(w)
    store.finish("api", [(w, final(w), None) for w in accepted[:4]])
    store.close()  # a kill -9 leaves the same bytes behind: every record is one write()

    again = JournalStore(storage)
    pending = again.pending("api")
    assert sorted(w.id for w in pending) == sorted(w.id for w in accepted[4:])
    assert pending[0].body == accepted[4].body  # newlines inside a payload survive
    record = again.final_record("api", accepted[0].id)
    assert record is not None and record["status"] == "completed"
    restored = WorkloadState.from_final_record(record)
    assert restored.result_data == b'{"ok":true}'
    assert again.final_record("other-api", accepted[0].id) is None
    assert again.pending("api") == []  # handed over once
    again.close()


def test_owed_webhooks_survive_restart(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    store = JournalStore(storage)
    owing, paid = workload(1), workload(2)
    for w in (owing, paid):
        store.accept(w)
    store.finish(
        "api",
        [
            (owing, final(owing), "http://127.0.0.1:1/h"),
            (paid, final(paid), "http://127.0.0.1:1/h"),
        ],
    )
    store.record_webhook("api", paid.id, final(paid))
    store.close()
    again = JournalStore(storage)
    assert again.owed_webhooks("api") == [(owing.id, "http://127.0.0.1:1/h")]
    assert "_webhook_owed" not in (again.final_record("api", owing.id) or {})
    again.close()


def test_torn_tail_is_dropped(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    store = JournalStore(storage)
    first, second = workload(1), workload(2)
    store.accept(first)
    store.accept(second)
    store.close()
    segment = next((tmp_path / "journal" / "api").glob("*.log"))
    os.truncate(segment, segment.stat().st_size - 5)  # power loss in the middle of a write
    again = JournalStore(storage)
    assert [w.id for w in again.pending("api")] == [first.id]
    third = workload(3)
    again.accept(third)
    again.close()
    assert {w.id for w in JournalStore(storage).pending("api")} == {first.id, third.id}


def test_one_gateway_per_journal(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    store = JournalStore(storage)
    with pytest.raises(JournalLocked, match="another gateway"):
        JournalStore(storage)
    store.close()
    JournalStore(storage).close()


def test_sweep_deletes_expired_finished_segments(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    store = JournalStore(storage, segment_bytes=200)  # tiny segments: one record rotates
    old, live = workload(1), workload(2)
    store.accept(old)
    store.accept(live)
    store.finish("api", [(old, final(old, expires_in=-1), None)])
    store.accept(workload(3))  # moves writing on to a fresh segment
    segments_before = len(list((tmp_path / "journal" / "api").glob("*.log")))
    removed = store.sweep()
    assert removed >= 1
    assert len(list((tmp_path / "journal" / "api").glob("*.log"))) < segments_before
    assert store.final_record("api", old.id) is None
    assert {w.id for w in store.pending("api")} == set()  # nothing was replayed in this process
    store.close()
    assert {w.id for w in JournalStore(storage).pending("api")} == {live.id, workload(3).id}
