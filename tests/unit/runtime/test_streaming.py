"""Streaming on the worker: outputs, log capture and their messages, with a recording worker.

run_chunk is called directly in this process; `_current_worker` is a fake that records what
would go to the scheduler (`log_event`), checked the way Dask checks it (msgpack).
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack
import pytest

import asyncnb
from asyncnb import emit, report_progress
from asyncnb.contract.events import LOG_CAP_BYTES, MAX_LOG_LINE, MAX_OUTPUT_EVENT_BYTES
from asyncnb.contract.tasks import EVENT_TOPIC, OUTCOMES_TOPIC
from asyncnb.runtime import capture, streaming
from asyncnb.runtime import chunks as runtime
from asyncnb.storage import Storage

KEY = "chunk-key-1"


class FakeWorker:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def log_event(self, topic: str, message: Any) -> None:
        packed = msgpack.packb(message)  # what Dask requires of an event
        with self.lock:
            self.events.append((topic, msgpack.unpackb(packed)))

    def get_current_task(self) -> str:
        return KEY

    def kinds(self) -> list[str]:
        with self.lock:
            return [m.get("kind", topic) for topic, m in self.events]

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for _, m in self.events if m.get("kind") == "stream"]

    def items(self, workload_id: str | None = None) -> list[dict[str, Any]]:
        found = [i for m in self.messages() for i in m["items"]]
        return [i for i in found if workload_id is None or i["id"] == workload_id]

    def outputs(self, workload_id: str) -> list[dict[str, Any]]:
        return [i for i in self.items(workload_id) if i["type"] == "output"]

    def lines(self, workload_id: str, stream: str | None = None) -> list[str]:
        return [
            i["line"]
            for i in self.items(workload_id)
            if i["type"] == "log" and (stream is None or i["stream"] == stream)
        ]


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> FakeWorker:
    fake = FakeWorker()
    monkeypatch.setattr(runtime, "_current_worker", lambda: fake)
    return fake


def _deploy(tmp_path: Path, cls: type, **spec: Any) -> tuple[Storage, dict[str, Any]]:
    storage = Storage(f"file://{tmp_path / 'storage'}")
    api = f"api-{uuid.uuid4().hex[:12]}"
    storage.write_bytes(storage.predictor_path(api, 1), pickle.dumps((cloudpickle.dumps(cls), {})))
    full = {
        "api": api,
        "version": 1,
        "storage": storage.describe(),
        "inline_limit": 1 << 20,
        "max_batch_size": 1,
        "max_concurrency": 1,
        "timeout_s": None,
        **spec,
    }
    return storage, full


def _item(payload: Any, attempt: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "content_type": "application/json",
        "body": json.dumps(payload).encode(),
    }
    if attempt is not None:
        item["attempt"] = attempt
    return item


def _log(storage: Storage, spec: dict[str, Any], workload_id: str, attempt: int = 1) -> str:
    data = storage.read_bytes(storage.logs_path(spec["api"], workload_id, attempt))
    return "" if data is None else data.decode()


# predictors ------------------------------------------------------------------------------------
class Yielder:
    def predict(self, payload: Any) -> Iterator[Any]:
        if payload == "kinds":
            yield 1
            yield {"a": [2, None]}
            yield "text"
            yield b"\x00\x01\xff"
            return
        if payload == "big":
            yield "x" * (MAX_OUTPUT_EVENT_BYTES + 1)
            return
        if payload == "midway":
            yield "first"
            yield "second"
            raise KeyError("broke midway")
        if payload == "unencodable":
            yield "fine"
            yield object()
        if payload == "slow":
            while True:
                yield "tick"
                time.sleep(0.02)
        if isinstance(payload, dict) and "n" in payload:
            for i in range(payload["n"]):
                if payload.get("sleep"):
                    time.sleep(payload["sleep"])
                yield payload.get("size", 0) * "y" or i


class Emitter:
    def predict(self, payload: Any, request_id: str) -> Any:
        if payload == "by-id":
            emit("mine", workload_id=request_id)
            return "done"
        if payload == "wrong-id":
            emit("theirs", workload_id="nobody")
        if payload == "bad":
            emit(object())
        if payload == "generator":
            return self.generate()
        emit("a")
        report_progress(1.0, "all")
        emit({"b": 1})
        return "done"

    def generate(self) -> Iterator[Any]:
        yield "yielded"
        emit("emitted")
        yield "yielded again"


class BatchStreamer:
    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return [self.one(p) for p in payloads]

    def one(self, payload: Any) -> Any:
        if payload == "plain":
            return "plain"
        return self.generate(payload)

    def generate(self, payload: Any) -> Iterator[Any]:
        for i in range(3):
            if payload == "boom" and i == 1:
                raise ValueError("this item broke")
            yield f"{payload}-{i}"


class BatchEmitter:
    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        print("shared line")
        for i, payload in enumerate(payloads):
            if payload == "anonymous":
                emit("whose?")
            emit(f"out-{payload}", item=i)
        return [f"result-{p}" for p in payloads]


class Printer:
    def predict(self, payload: Any) -> Any:
        if payload == "mixed":
            print("hello", "world")
            sys.stderr.write("an error line\n")
            logging.getLogger("asyncnb-test.mine").warning("careful: %s", 42)
            sys.stdout.write("par")
            sys.stdout.write("tial\nlast without newline")
            print("progress\r 50%\r 100%")
            print("x" * (MAX_LOG_LINE + 10))
            return "ok"
        if payload == "exception":
            try:
                raise RuntimeError("inner")
            except RuntimeError:
                logging.getLogger("asyncnb-test").exception("it failed")
            return "ok"
        if payload == "fail":
            print("before failing")
            raise RuntimeError("failed after printing")
        if payload == "flood":
            for i in range(1500):
                print(f"{i:06d} " + "z" * 1000)
            return "flooded"
        if payload == "handler":
            # a StreamHandler on sys.stderr, as basicConfig in __init__ would add: one line
            handler = logging.StreamHandler(sys.stderr)
            logging.getLogger().addHandler(handler)
            try:
                logging.getLogger("asyncnb-test.twice").warning("only once")
            finally:
                logging.getLogger().removeHandler(handler)
            return "ok"
        return "quiet"


_barrier = threading.Barrier(2, timeout=10)


class Concurrent:
    def predict(self, payload: Any, request_id: str) -> Any:
        _barrier.wait()
        for i in range(100):
            print(f"{payload['name']} line {i}")
            if i % 10 == 0:
                logging.getLogger("asyncnb-test.concurrent").warning(f"{payload['name']} log {i}")
                time.sleep(0.001)
        return payload["name"]


# outputs ---------------------------------------------------------------------------------------
def test_generator_outputs_and_result(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Yielder)
    item = _item("kinds")
    (outcome,) = runtime.run_chunk(spec, [item])
    assert outcome["ok"] is True
    raw = base64.b64encode(b"\x00\x01\xff").decode()
    assert json.loads(outcome["data"]) == [1, {"a": [2, None]}, "text", raw]
    outputs = worker.outputs(item["id"])
    assert [o["index"] for o in outputs] == [0, 1, 2, 3]
    assert [o["seq"] for o in outputs] == [0, 1, 2, 3]
    assert {o["attempt"] for o in outputs} == {1}  # a missing attempt is the first
    assert [(o["value"], o["encoding"]) for o in outputs] == [
        (1, "json"),
        ({"a": [2, None]}, "json"),
        ("text", "text"),
        (raw, "base64"),
    ]
    assert outputs[3]["content_type"] == "application/octet-stream"
    assert all(time.time() - 10 < o["t"] <= time.time() for o in outputs)
    message = worker.messages()[0]
    assert (message["api"], message["key"]) == (spec["api"], KEY)


def test_big_output_is_only_in_the_result(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Yielder, inline_limit=1 << 30)
    item = _item("big")
    (outcome,) = runtime.run_chunk(spec, [item])
    assert json.loads(outcome["data"]) == ["x" * (MAX_OUTPUT_EVENT_BYTES + 1)]
    (output,) = worker.outputs(item["id"])
    assert output["truncated"] is True and "value" not in output
    assert output["size"] == MAX_OUTPUT_EVENT_BYTES + 1


def test_generator_raising_midway_fails_but_keeps_its_outputs(
    tmp_path: Path, worker: FakeWorker
) -> None:
    _, spec = _deploy(tmp_path, Yielder)
    midway, unencodable = _item("midway"), _item("unencodable")
    failed, bad = runtime.run_chunk(spec, [midway, unencodable])
    assert failed["ok"] is False and failed["error"]["type"] == "KeyError"
    assert "test_streaming.py" in failed["error"]["traceback"]
    assert "streaming.py" not in failed["error"]["traceback"].replace("test_streaming.py", "")
    assert [o["value"] for o in worker.outputs(midway["id"])] == ["first", "second"]
    assert bad["ok"] is False and bad["error"]["type"] == "TypeError"
    assert [o["value"] for o in worker.outputs(unencodable["id"])] == ["fine"]


def test_generator_timeout(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Yielder, timeout_s=0.15)
    slow, fast = _item("slow"), _item({"n": 2})
    timed_out, ok = runtime.run_chunk(spec, [slow, fast])
    assert timed_out["ok"] is False and timed_out["error"]["type"] == "Timeout"
    assert ok["ok"] is True and json.loads(ok["data"]) == [0, 1]
    sent = len(worker.outputs(slow["id"]))
    assert sent >= 1  # what it yielded in time stayed emitted
    time.sleep(0.15)  # the abandoned generator is stopped at its next yield: nothing more
    assert len(worker.outputs(slow["id"])) == sent


def test_emit(tmp_path: Path, worker: FakeWorker) -> None:
    emit("outside a workload: nothing")
    _, spec = _deploy(tmp_path, Emitter)
    plain, by_id, generator = _item("x"), _item("by-id"), _item("generator")
    outcomes = runtime.run_chunk(spec, [plain, by_id, generator])
    assert [o["data"] for o in outcomes[:2]] == [b"done", b"done"]  # the return value
    assert [o["value"] for o in worker.outputs(plain["id"])] == ["a", {"b": 1}]
    assert [o["value"] for o in worker.outputs(by_id["id"])] == ["mine"]
    # a generator's result is all its outputs, yielded and emitted, in order (= index)
    assert json.loads(outcomes[2]["data"]) == ["yielded", "emitted", "yielded again"]
    assert [o["index"] for o in worker.outputs(generator["id"])] == [0, 1, 2]
    assert asyncnb.emit is emit


def test_emit_errors(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Emitter)
    wrong, bad = runtime.run_chunk(spec, [_item("wrong-id"), _item("bad")])
    assert wrong["error"]["type"] == "ValueError" and "nobody" in wrong["error"]["message"]
    assert bad["error"]["type"] == "TypeError"


def test_emit_in_a_batch_names_the_item(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, BatchEmitter, max_batch_size=4)
    items = [_item("p"), _item("q")]
    outcomes = runtime.run_chunk(spec, items)
    assert [o["data"] for o in outcomes] == [b"result-p", b"result-q"]
    for item, name in zip(items, "pq", strict=True):
        assert [o["value"] for o in worker.outputs(item["id"])] == [f"out-{name}"]
        assert worker.lines(item["id"]) == ["shared line"]  # a batch's logs are every item's
    anonymous = runtime.run_chunk(spec, [_item("anonymous")])[0]
    assert anonymous["ok"] is False and anonymous["error"]["type"] == "ValueError"
    assert "item=i" in anonymous["error"]["message"]


def test_batch_generators_round_robin(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, BatchStreamer, max_batch_size=4)
    a, b, plain, boom = _item("a"), _item("b"), _item("plain"), _item("boom")
    outcomes = runtime.run_chunk(spec, [a, b, plain, boom])
    assert [o["ok"] for o in outcomes] == [True, True, True, False]
    assert json.loads(outcomes[0]["data"]) == ["a-0", "a-1", "a-2"]
    assert json.loads(outcomes[1]["data"]) == ["b-0", "b-1", "b-2"]
    assert outcomes[2]["data"] == b"plain"
    assert outcomes[3]["error"]["type"] == "ValueError"
    assert outcomes[3]["error"]["message"] == "this item broke"  # it failed alone
    assert [o["value"] for o in worker.outputs(boom["id"])] == ["boom-0"]
    values = [i["value"] for i in worker.items() if i["type"] == "output"]
    assert values[:5] == ["a-0", "b-0", "boom-0", "a-1", "b-1"]


# order and batching ----------------------------------------------------------------------------
def test_start_before_items_and_items_before_outcomes(
    tmp_path: Path, worker: FakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_START_EVENT_AFTER_S", 60.0)  # only the first item sends it
    _, spec = _deploy(tmp_path, Emitter, outcomes_by_event=True)
    item = _item("x")
    assert runtime.run_chunk(spec, [item]) is None  # the outcomes went as an event
    kinds = worker.kinds()
    assert kinds[0] == "start" and kinds.count("start") == 1
    assert kinds[-1] == OUTCOMES_TOPIC
    assert "stream" in kinds
    # the progress went after the output emitted before it: in the order they happened
    progress = kinds.index("progress")
    assert worker.events[progress - 1][1]["items"][-1]["value"] == "a"
    assert all(topic == EVENT_TOPIC for topic, _ in worker.events[:-1])


def test_quick_quiet_chunk_sends_no_start(
    tmp_path: Path, worker: FakeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_START_EVENT_AFTER_S", 0.5)  # "quick", on a loaded machine
    _, spec = _deploy(tmp_path, Printer)
    runtime.warm(spec)
    runtime.run_chunk(spec, [_item("quiet")])
    time.sleep(0.6)
    assert worker.kinds() == []


def test_slow_quiet_chunk_announces_its_start(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Yielder)
    runtime.run_chunk(spec, [_item({"n": 1, "sleep": 0.1})])
    kinds = worker.kinds()
    assert kinds[0] == "start" and kinds.count("start") == 1


def test_items_are_batched(tmp_path: Path, worker: FakeWorker) -> None:
    _, spec = _deploy(tmp_path, Yielder)
    many = _item({"n": 2000})
    started = time.monotonic()
    runtime.run_chunk(spec, [many])
    took = time.monotonic() - started
    assert len(worker.outputs(many["id"])) == 2000
    # one message per flush interval, or per MAX_MESSAGE_BYTES of items (~120 bytes each)
    by_size = 2000 * 200 // streaming.MAX_MESSAGE_BYTES
    assert len(worker.messages()) <= 3 + by_size + took / streaming.FLUSH_INTERVAL_S
    seqs = [i["seq"] for i in worker.items(many["id"])]
    assert seqs == list(range(2000))

    worker.events.clear()
    paced = _item({"n": 10, "sleep": 0.02})  # 0.2 s of outputs: about one message in 50 ms
    started = time.monotonic()
    runtime.run_chunk(spec, [paced])
    took = time.monotonic() - started
    assert 2 <= len(worker.messages()) <= 2 + took / streaming.FLUSH_INTERVAL_S

    worker.events.clear()
    big = _item({"n": 12, "size": 100_000})  # 1.2 MB: messages of about 256 KiB
    runtime.run_chunk(spec, [big])
    sizes = [len(msgpack.packb(m)) for m in worker.messages()]
    assert len(sizes) >= 4
    assert max(sizes) <= streaming.MAX_MESSAGE_BYTES + 110_000


# logs ------------------------------------------------------------------------------------------
def test_log_capture(tmp_path: Path, worker: FakeWorker) -> None:
    storage, spec = _deploy(tmp_path, Printer)
    item = _item("mixed", attempt=3)
    (outcome,) = runtime.run_chunk(spec, [item])
    assert outcome["ok"] is True
    cut = "x" * (MAX_LOG_LINE - 1) + "…"
    # "last without newline" waits for the rest of its line: "progress\r 50%\r 100%\n",
    # of which a terminal shows the part after the last carriage return
    assert worker.lines(item["id"], "stdout") == ["hello world", "partial", " 100%", cut]
    assert worker.lines(item["id"], "stderr") == ["an error line"]
    logged = worker.items(item["id"])
    (record,) = [i for i in logged if i["type"] == "log" and i["stream"] == "logging"]
    assert record["line"] == "WARNING asyncnb-test.mine: careful: 42"
    assert record["level"] == "WARNING"
    assert {i["attempt"] for i in worker.items(item["id"])} == {3}
    text = _log(storage, spec, item["id"], attempt=3)
    assert text.startswith("hello world\n")
    assert "an error line\n" in text and "WARNING asyncnb-test.mine: careful: 42\n" in text
    assert text.endswith(cut + "\n")
    assert _log(storage, spec, item["id"], attempt=1) == ""


def test_partial_line_ends_with_the_run(tmp_path: Path, worker: FakeWorker) -> None:
    class Partial:
        def predict(self, payload: Any) -> Any:
            sys.stdout.write("no newline at the end")
            return 1

    storage, spec = _deploy(tmp_path, Partial)
    item = _item(0)
    runtime.run_chunk(spec, [item])
    assert worker.lines(item["id"]) == ["no newline at the end"]
    assert _log(storage, spec, item["id"]) == "no newline at the end\n"


def test_logs_of_a_failing_workload_and_exceptions(tmp_path: Path, worker: FakeWorker) -> None:
    storage, spec = _deploy(tmp_path, Printer)
    failing, logged = _item("fail"), _item("exception")
    outcomes = runtime.run_chunk(spec, [failing, logged])
    assert outcomes[0]["ok"] is False
    assert _log(storage, spec, failing["id"]) == "before failing\n"
    lines = worker.lines(logged["id"], "logging")
    assert lines[0] == "ERROR asyncnb-test: it failed"
    assert lines[1].startswith("Traceback") and lines[-1] == "RuntimeError: inner"


def test_stream_handler_on_captured_stderr_is_not_logged_twice(
    tmp_path: Path, worker: FakeWorker
) -> None:
    _, spec = _deploy(tmp_path, Printer)
    item = _item("handler")
    runtime.run_chunk(spec, [item])
    assert worker.lines(item["id"]) == ["WARNING asyncnb-test.twice: only once"]


def test_output_outside_workloads_is_forwarded_not_captured(
    tmp_path: Path, worker: FakeWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, spec = _deploy(tmp_path, Printer)
    item = _item("mixed")
    runtime.run_chunk(spec, [item])
    print("after the workload")
    assert "hello world" in capsys.readouterr().out  # forwarded, also while captured
    assert "after the workload" not in _log(storage, spec, item["id"])
    assert capture.output_capture.handler not in logging.getLogger().handlers  # only while runs


def test_log_cap_and_tail(tmp_path: Path, worker: FakeWorker) -> None:
    storage, spec = _deploy(tmp_path, Printer)
    item = _item("flood")
    (outcome,) = runtime.run_chunk(spec, [item])
    assert outcome["ok"] is True
    lines = worker.lines(item["id"])
    assert lines[-1] == streaming.CAP_NOTICE
    assert streaming.CAP_NOTICE.endswith("GET /logs has the newest 1 MiB")
    emitted = sum(len(line) + 1 for line in lines[:-1])
    assert LOG_CAP_BYTES - 1100 < emitted <= LOG_CAP_BYTES
    assert lines[0].startswith("000000 ")
    tail = _log(storage, spec, item["id"])
    assert LOG_CAP_BYTES - 1100 < len(tail.encode()) <= LOG_CAP_BYTES
    assert tail.endswith(f"{1499:06d} " + "z" * 1000 + "\n")
    assert not tail.startswith("000000 ")  # the oldest lines were dropped, whole
    assert len(tail.split("\n")[0]) == 1007


def test_concurrent_workloads_keep_their_own_logs(tmp_path: Path, worker: FakeWorker) -> None:
    storage, spec = _deploy(tmp_path, Concurrent, max_concurrency=2)
    runtime.warm(spec)
    items = {"left": _item({"name": "left"}), "right": _item({"name": "right"})}
    outcomes: dict[str, Any] = {}

    def run(name: str) -> None:
        outcomes[name] = runtime.run_chunk(spec, [items[name]])[0]

    threads = [threading.Thread(target=run, args=(name,)) for name in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert all(o["ok"] for o in outcomes.values())
    for name, item in items.items():
        other = "right" if name == "left" else "left"
        stdout = worker.lines(item["id"], "stdout")
        assert stdout == [f"{name} line {i}" for i in range(100)]
        logged = worker.lines(item["id"], "logging")
        assert logged == [
            f"WARNING asyncnb-test.concurrent: {name} log {i}" for i in range(0, 100, 10)
        ]
        assert other not in _log(storage, spec, item["id"])


def test_records_no_handler_takes_still_reach_stderr_once(
    tmp_path: Path,
    worker: FakeWorker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(logging.root, "handlers", [])  # a bare worker: logging.lastResort

    class Warner:
        def predict(self, payload: Any) -> Any:
            logging.getLogger("asyncnb-test.bare").warning("to stderr")
            assert sys.stdout.encoding  # the proxy passes the rest through
            sys.stdout.writelines(["a\n", "b\n"])
            return 1

    _, spec = _deploy(tmp_path, Warner)
    item = _item(0)
    runtime.run_chunk(spec, [item])
    assert capsys.readouterr().err.count("to stderr") == 1
    assert worker.lines(item["id"]) == ["WARNING asyncnb-test.bare: to stderr", "a", "b"]
