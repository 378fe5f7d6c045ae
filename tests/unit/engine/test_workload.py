"""Workload records: the durable queue entry, the final record and the public views."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asyncnb.contract.predictor import BYTES_TYPE, JSON_TYPE, TEXT_TYPE, encode_result
from asyncnb.contract.status import Status
from asyncnb.contract.timestamps import isoformat, parse_iso
from asyncnb.engine.workload import WorkloadState

WID = "0123456789abcdef" * 2
CREATED = 1_700_000_000.123456


def _workload(**kwargs: Any) -> WorkloadState:
    defaults: dict[str, Any] = {"created_at": CREATED, "content_type": "application/json"}
    return WorkloadState(WID, "iris", **{**defaults, **kwargs})


# queue entry ------------------------------------------------------------------------------------


def test_queue_entry_round_trip_with_inline_body() -> None:
    body = b'{"a": 1}\n{"b": 2}\n\x00\xff\n\n'
    original = _workload(
        content_type="application/x-ndjson",
        priority=7,
        body=body,
        size=len(body),
        webhook_url="http://127.0.0.1:9/hook",
        idempotency_key="key-1",
        attempts=2,
    )
    entry = original.queue_entry()
    assert entry.count(b"\n") == 1 + body.count(b"\n")
    restored = WorkloadState.from_queue_entry(entry)
    assert restored.id == WID
    assert restored.api == "iris"
    assert restored.created_at == CREATED
    assert restored.content_type == "application/x-ndjson"
    assert restored.priority == 7
    assert restored.body == body
    assert restored.payload_stored is False
    assert restored.size == len(body)
    assert restored.webhook_url == "http://127.0.0.1:9/hook"
    assert restored.idempotency_key == "key-1"
    assert restored.attempts == 2
    assert restored.status is Status.IN_QUEUE
    assert restored.chunk_key is None and restored.retry_at is None


def test_queue_entry_round_trip_with_stored_payload() -> None:
    original = _workload(content_type="image/png", payload_stored=True, size=10_000_000)
    entry = original.queue_entry()
    assert entry.endswith(b"\n")
    restored = WorkloadState.from_queue_entry(entry)
    assert restored.payload_stored is True
    assert restored.body is None
    assert restored.size == 10_000_000
    assert restored.webhook_url is None and restored.idempotency_key is None


def test_queue_entry_with_empty_body() -> None:
    restored = WorkloadState.from_queue_entry(_workload(body=b"", size=0).queue_entry())
    assert restored.body == b""
    assert restored.size == 0


def test_queue_entry_header_is_one_json_line() -> None:
    header, _, _ = _workload(body=b"x\ny").queue_entry().partition(b"\n")
    assert json.loads(header)["id"] == WID


# final record -----------------------------------------------------------------------------------


def _finished(value: Any, status: Status = Status.COMPLETED) -> WorkloadState:
    workload = _workload(body=b"{}", size=2, attempts=1)
    workload.started_at = CREATED + 1
    workload.finished_at = CREATED + 2
    workload.expires_at = CREATED + 3600
    workload.version = 3
    if status is Status.COMPLETED:
        data, content_type = encode_result(value)
        workload.result_data = data
        workload.result_content_type = content_type
        workload.result_size = len(data)
    return workload


def _round_trip(workload: WorkloadState, status: Status) -> tuple[dict[str, Any], WorkloadState]:
    record = workload.final_record(status)
    stored = json.loads(json.dumps(record))  # it is written as JSON
    return stored, WorkloadState.from_final_record(stored)


def _assert_common(restored: WorkloadState, status: Status) -> None:
    assert restored.id == WID and restored.api == "iris"
    assert restored.status is status
    assert restored.version == 3
    assert restored.attempts == 1
    assert restored.expires_at == CREATED + 3600
    assert restored.content_type == "application/json"
    assert restored.created_at == pytest.approx(CREATED, abs=1e-6)
    assert restored.started_at == pytest.approx(CREATED + 1, abs=1e-6)
    assert restored.finished_at == pytest.approx(CREATED + 2, abs=1e-6)


def test_final_record_round_trip_json_result() -> None:
    value = {"label": "setosa", "scores": [0.9, 0.1]}
    record, restored = _round_trip(_finished(value), Status.COMPLETED)
    assert "result" not in record  # the raw bytes travel base64-encoded instead
    _assert_common(restored, Status.COMPLETED)
    assert restored.result_content_type == JSON_TYPE
    assert json.loads(restored.result_data or b"") == value
    assert restored.result_stored is False
    assert restored.public()["result"] == value


def test_final_record_round_trip_text_result() -> None:
    record, restored = _round_trip(_finished("héllo\nworld"), Status.COMPLETED)
    assert "result" not in record
    _assert_common(restored, Status.COMPLETED)
    assert restored.result_content_type == TEXT_TYPE
    assert restored.result_data == "héllo\nworld".encode()
    assert restored.public()["result"] == "héllo\nworld"


def test_final_record_round_trip_bytes_result() -> None:
    data = bytes(range(256))
    record, restored = _round_trip(_finished(data), Status.COMPLETED)
    assert record["_result_stored"] is False
    _assert_common(restored, Status.COMPLETED)
    assert restored.result_content_type == BYTES_TYPE
    assert restored.result_data == data
    assert restored.result_size == 256
    view = restored.public()
    assert "result" not in view
    assert view["result_url"] == f"/iris/{WID}/result"
    assert view["result_content_type"] == BYTES_TYPE


def test_final_record_round_trip_stored_result() -> None:
    workload = _finished({"big": True})
    workload.result_data = None
    workload.result_stored = True
    record, restored = _round_trip(workload, Status.COMPLETED)
    assert "_result_b64" not in record
    assert restored.result_stored is True
    assert restored.result_data is None
    view = restored.public()
    assert "result" not in view
    assert view["result_url"] == f"/iris/{WID}/result"


def test_final_record_round_trip_failed() -> None:
    workload = _finished(None, Status.FAILED)
    error = {"type": "ZeroDivisionError", "message": "division by zero", "traceback": "..."}
    workload.error = error
    workload.webhook = {"url": "http://127.0.0.1:9/h", "status": "pending", "attempts": 0}
    record, restored = _round_trip(workload, Status.FAILED)
    assert record["status"] == "failed" and "_result_b64" not in record
    _assert_common(restored, Status.FAILED)
    assert restored.error == error
    assert restored.webhook == workload.webhook
    assert restored.result_data is None
    view = restored.public()
    assert view["status"] == "failed"
    assert view["error"] == error
    assert "result" not in view and "result_url" not in view


def test_final_record_keeps_progress() -> None:
    workload = _finished([1, 2])
    workload.progress = {"fraction": 1.0, "message": "done"}
    _, restored = _round_trip(workload, Status.COMPLETED)
    assert restored.progress == {"fraction": 1.0, "message": "done"}


# public views -----------------------------------------------------------------------------------


def test_public_of_queued_workload() -> None:
    view = _workload(body=b"{}").public()
    assert view == {
        "id": WID,
        "api": "iris",
        "status": "in_queue",
        "attempts": 0,
        "priority": 0,
        "submitted_by": "owner",
        "created_at": isoformat(CREATED),
        "started_at": None,
        "finished_at": None,
    }
    assert view["created_at"].endswith("Z")


def test_public_shows_results_only_when_completed() -> None:
    workload = _finished({"x": 1})
    assert "result" not in workload.public(Status.IN_PROGRESS)
    assert "result_url" not in workload.public(Status.IN_PROGRESS)
    completed = workload.public(Status.COMPLETED)
    assert completed["result"] == {"x": 1}
    assert completed["result_url"] == f"/iris/{WID}/result"
    assert completed["result_size"] == len(b'{"x": 1}')


@pytest.mark.parametrize("value", [None, 0, False, ""])
def test_public_shows_falsy_results(value: Any) -> None:
    view = _finished(value).public(Status.COMPLETED)
    assert "result" in view and view["result"] == value


def test_webhook_event() -> None:
    workload = _finished({"x": 1})
    workload.status = Status.COMPLETED
    event = workload.webhook_event()
    assert event["status"] == "completed"
    assert event["result"] == {"x": 1}
    assert event["result_url"] == f"/iris/{WID}/result"
    failed = _finished(None, Status.FAILED)
    failed.status = Status.FAILED
    failed.error = {"type": "E", "message": "m"}
    assert "result" not in failed.webhook_event()
    assert failed.webhook_event()["error"] == {"type": "E", "message": "m"}


def test_status_finished() -> None:
    assert not Status.IN_QUEUE.finished and not Status.IN_PROGRESS.finished
    assert Status.COMPLETED.finished and Status.FAILED.finished and Status.CANCELLED.finished


def test_iso_helpers() -> None:
    assert isoformat(None) is None and parse_iso(None) is None and parse_iso("") is None
    assert isoformat(0) == "1970-01-01T00:00:00Z"
    assert parse_iso(isoformat(CREATED)) == pytest.approx(CREATED, abs=1e-6)


def test_attribution_survives_both_stored_forms() -> None:
    workload = WorkloadState(
        WID,
        "iris",
        created_at=CREATED,
        content_type="application/json",
        submitted_by="bob",
        key_id="0123456789abcdef",
    )
    queued = WorkloadState.from_queue_entry(workload.queue_entry())
    assert (queued.submitted_by, queued.key_id) == ("bob", "0123456789abcdef")
    workload.status = Status.COMPLETED
    final = WorkloadState.from_final_record(workload.final_record(Status.COMPLETED))
    assert (final.submitted_by, final.key_id) == ("bob", "0123456789abcdef")
    assert workload.public()["submitted_by"] == "bob"
    assert "key_id" not in workload.public()
    assert workload.webhook_event()["submitted_by"] == "bob"


def test_old_records_without_attribution_read_as_the_owner() -> None:
    entry = _workload(body=b"{}").queue_entry()
    header, _, body = entry.partition(b"\n")
    old = json.loads(header)
    del old["submitted_by"], old["key_id"]
    restored = WorkloadState.from_queue_entry(json.dumps(old).encode() + b"\n" + body)
    assert (restored.submitted_by, restored.key_id) == ("owner", None)
