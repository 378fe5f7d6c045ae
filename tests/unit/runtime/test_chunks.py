"""Worker-side run_chunk / warm, called directly in this process (no Dask: events are skipped)."""

from __future__ import annotations

import json
import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import cloudpickle

from asyncnb import report_progress
from asyncnb.contract.predictor import BYTES_TYPE, JSON_TYPE, TEXT_TYPE
from asyncnb.runtime import chunks as runtime
from asyncnb.storage import Storage


class Doubler:
    def __init__(self, config: dict[str, Any]) -> None:
        self.factor = config.get("factor", 2)

    def predict(self, payload: Any, request_id: str) -> Any:
        report_progress(0.5, "halfway")  # a no-op outside a Dask worker
        if payload == "boom":
            raise ZeroDivisionError("kaboom")
        if isinstance(payload, dict) and "big" in payload:
            return "x" * payload["big"]
        if isinstance(payload, bytes):
            return payload[::-1]
        return {"value": payload["n"] * self.factor, "id": request_id}


class Sleeper:
    def predict(self, payload: Any) -> Any:
        time.sleep(payload["sleep"])
        return "awake"


class BrokenInit:
    def __init__(self, config: dict[str, Any]) -> None:
        raise RuntimeError("no weights at " + config["path"])

    def predict(self, payload: Any) -> Any:
        return payload


class Batcher:
    calls: list[int] = []
    lock = threading.Lock()

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        with Batcher.lock:
            Batcher.calls.append(len(payloads))
        if any(p == "boom" for p in payloads):
            raise ValueError("bad batch")
        return [{"sum": sum(p)} for p in payloads]


class SingleAndBatch:
    def predict(self, payload: Any) -> Any:
        return "single"

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return ["batch"] * len(payloads)


class Counted:
    inits = 0

    def __init__(self) -> None:
        Counted.inits += 1

    def predict(self, payload: Any) -> Any:
        return Counted.inits


def _deploy(
    tmp_path: Path, cls: type, config: dict[str, Any] | None = None, **spec: Any
) -> tuple[Storage, dict[str, Any]]:
    """Store the predictor blob the way the engine does, under a fresh API name."""
    storage = Storage(f"file://{tmp_path / 'storage'}")
    api = f"api-{uuid.uuid4().hex[:12]}"
    blob = pickle.dumps((cloudpickle.dumps(cls), config or {}))
    storage.write_bytes(storage.predictor_path(api, 1), blob)
    full = {
        "api": api,
        "version": 1,
        "storage": storage.describe(),
        "inline_limit": 1024,
        "max_batch_size": 1,
        "timeout_s": None,
        **spec,
    }
    return storage, full


def _item(payload: Any, content_type: str = "application/json") -> dict[str, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {"id": uuid.uuid4().hex, "content_type": content_type, "body": body}


def test_ok_outcomes(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler, {"factor": 3})
    items = [_item({"n": 1}), _item({"n": 5})]
    before = time.time()
    outcomes = runtime.run_chunk(spec, items)
    assert [o["id"] for o in outcomes] == [i["id"] for i in items]
    for item, outcome, n in zip(items, outcomes, (1, 5), strict=True):
        assert outcome["ok"] is True
        assert outcome["content_type"] == JSON_TYPE
        assert json.loads(outcome["data"]) == {"value": 3 * n, "id": item["id"]}
        assert outcome["size"] == len(outcome["data"])
        assert before <= outcome["started_at"] <= outcome["finished_at"] <= time.time()
        assert "stored" not in outcome


def test_content_types_of_results(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler)
    text, raw = runtime.run_chunk(
        spec, [_item({"big": 3}), _item(b"abc", "application/octet-stream")]
    )
    assert (text["data"], text["content_type"]) == (b"xxx", TEXT_TYPE)
    assert (raw["data"], raw["content_type"]) == (b"cba", BYTES_TYPE)


def test_failing_item_does_not_affect_others(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler)
    items = [_item({"n": 1}), _item("boom"), _item({"n": 2})]
    first, failed, last = runtime.run_chunk(spec, items)
    assert first["ok"] and last["ok"]
    assert json.loads(last["data"])["value"] == 4
    assert failed["ok"] is False
    assert failed["id"] == items[1]["id"]
    assert failed["error"]["type"] == "ZeroDivisionError"
    assert failed["error"]["message"] == "kaboom"
    assert "kaboom" in failed["error"]["traceback"]
    assert "test_chunks.py" in failed["error"]["traceback"]  # the user's own frames
    assert "init_failed" not in failed


def test_bad_payload_fails_only_its_item(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler)
    bad = {"id": uuid.uuid4().hex, "content_type": "application/json", "body": b"{not json"}
    broken, fine = runtime.run_chunk(spec, [bad, _item({"n": 1})])
    assert broken["ok"] is False and broken["error"]["type"] == "JSONDecodeError"
    assert fine["ok"] is True


def test_unserializable_result_fails_the_item(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler, {"factor": float("nan")})
    (outcome,) = runtime.run_chunk(spec, [_item({"n": 1})])
    assert outcome["ok"] is False
    assert outcome["error"]["type"] == "TypeError"
    assert "JSON-serializable" in outcome["error"]["message"]


def test_large_result_is_stored(tmp_path: Path) -> None:
    storage, spec = _deploy(tmp_path, Doubler)
    small, big = _item({"big": 1024}), _item({"big": 1025})
    at_limit, over = runtime.run_chunk(spec, [small, big])
    assert at_limit["data"] == b"x" * 1024 and "stored" not in at_limit
    assert over["ok"] is True
    assert over["stored"] is True
    assert "data" not in over
    assert over["size"] == 1025
    assert over["content_type"] == TEXT_TYPE
    assert storage.read_bytes(storage.result_path(spec["api"], big["id"])) == b"x" * 1025
    assert storage.read_bytes(storage.result_path(spec["api"], small["id"])) is None


def test_stored_payload_is_read_from_storage(tmp_path: Path) -> None:
    storage, spec = _deploy(tmp_path, Doubler)
    wid = uuid.uuid4().hex
    storage.write_bytes(storage.payload_path(spec["api"], wid), b'{"n": 21}')
    missing = {"id": uuid.uuid4().hex, "content_type": "application/json", "body": None}
    found, lost = runtime.run_chunk(
        spec, [{"id": wid, "content_type": "application/json", "body": None}, missing]
    )
    assert json.loads(found["data"])["value"] == 42
    assert lost["ok"] is False and lost["error"]["type"] == "FileNotFoundError"


def test_timeout(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Sleeper, timeout_s=0.05)
    started = time.monotonic()
    slow, fast = runtime.run_chunk(spec, [_item({"sleep": 0.3}), _item({"sleep": 0})])
    assert time.monotonic() - started < 0.3
    assert slow["ok"] is False
    assert slow["error"]["type"] == "Timeout"
    assert "timeout_s=0.05" in slow["error"]["message"]
    assert fast["ok"] is True and fast["data"] == b"awake"


def test_init_failure_fails_every_item(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, BrokenInit, {"path": "/models/x"})
    items = [_item(1), _item(2)]
    outcomes = runtime.run_chunk(spec, items)
    assert [o["id"] for o in outcomes] == [i["id"] for i in items]
    for outcome in outcomes:
        assert outcome["ok"] is False
        assert outcome["init_failed"] is True
        assert outcome["error"]["type"] == "PredictorInitError"
        assert outcome["error"]["message"] == "no weights at /models/x"
        assert "RuntimeError" in outcome["error"]["traceback"]


def test_missing_predictor_blob_fails_init(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Doubler)
    spec = {**spec, "version": 2}
    (outcome,) = runtime.run_chunk(spec, [_item({"n": 1})])
    assert outcome["init_failed"] is True
    assert "missing from storage" in outcome["error"]["message"]


def test_warm(tmp_path: Path) -> None:
    _, good = _deploy(tmp_path, Doubler)
    assert runtime.warm(good) == {"ok": True}
    _, bad = _deploy(tmp_path, BrokenInit, {"path": "/nowhere"})
    result = runtime.warm(bad)
    assert result["ok"] is False
    assert result["error"]["type"] == "PredictorInitError"
    assert result["error"]["message"] == "no weights at /nowhere"
    _, garbage = _deploy(tmp_path, Doubler)
    storage = Storage(garbage["storage"]["url"])
    storage.write_bytes(storage.predictor_path(garbage["api"], 1), b"not a pickle")
    assert runtime.warm(garbage)["ok"] is False


def test_predictor_is_built_once_per_version(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Counted)
    before = Counted.inits
    assert runtime.warm(spec) == {"ok": True}
    runtime.run_chunk(spec, [_item(1)])
    runtime.run_chunk(spec, [_item(1)])
    assert Counted.inits == before + 1


def test_same_api_and_version_of_two_storages_are_two_predictors(tmp_path: Path) -> None:
    """One cluster can serve gateways of several storages (staging and production, two
    teams): an API of the same name and version in each must run its own class."""
    blobs = {"a": Doubler, "b": Sleeper}
    specs = {}
    for name, cls in blobs.items():
        storage = Storage(f"file://{tmp_path / name}")
        storage.write_bytes(
            storage.predictor_path("same", 1), pickle.dumps((cloudpickle.dumps(cls), {}))
        )
        specs[name] = {
            "api": "same",
            "version": 1,
            "storage": storage.describe(),
            "inline_limit": 1024,
            "max_batch_size": 1,
            "timeout_s": None,
        }
    doubled = runtime.run_chunk(specs["a"], [_item({"n": 2})])[0]
    slept = runtime.run_chunk(specs["b"], [_item({"sleep": 0})])[0]
    assert json.loads(doubled["data"])["value"] == 4
    assert slept["ok"] and bytes(slept["data"]) == b"awake"


def test_predict_batch_used_when_batch_size_above_one(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Batcher, max_batch_size=2)
    Batcher.calls.clear()
    items = [_item([1, 2]), _item([3]), _item([4, 5, 6])]
    outcomes = runtime.run_chunk(spec, items)
    assert Batcher.calls == [2, 1]
    assert [json.loads(o["data"]) for o in outcomes] == [{"sum": 3}, {"sum": 3}, {"sum": 15}]
    assert [o["id"] for o in outcomes] == [i["id"] for i in items]


def test_failing_batch_fails_only_its_items(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Batcher, max_batch_size=2)
    Batcher.calls.clear()
    outcomes = runtime.run_chunk(spec, [_item("boom"), _item([1]), _item([2])])
    assert [o["ok"] for o in outcomes] == [False, False, True]
    assert outcomes[0]["error"]["type"] == "ValueError"


def test_batch_only_predictor_with_batch_size_one(tmp_path: Path) -> None:
    _, spec = _deploy(tmp_path, Batcher)
    Batcher.calls.clear()
    outcomes = runtime.run_chunk(spec, [_item([1]), _item([2])])
    assert Batcher.calls == [1, 1]
    assert [json.loads(o["data"]) for o in outcomes] == [{"sum": 1}, {"sum": 2}]


def test_single_predict_used_when_batch_size_is_one(tmp_path: Path) -> None:
    _, single = _deploy(tmp_path, SingleAndBatch)
    assert runtime.run_chunk(single, [_item(1)])[0]["data"] == b"single"
    _, batched = _deploy(tmp_path, SingleAndBatch, max_batch_size=4)
    assert runtime.run_chunk(batched, [_item(1)])[0]["data"] == b"batch"
