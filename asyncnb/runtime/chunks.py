"""Worker side: runs one chunk of workloads with the cached predictor.

It knows storage and the predictor contract, never the web layer. The gateway sends a chunk
as one Dask task; results small enough travel back inline, larger ones go straight to storage.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import json
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..contract.predictor import Predictor, build_predictor, decode_payload, encode_result
from ..contract.tasks import (
    OUTCOMES_TOPIC,
    ChunkItem,
    ChunkSpec,
    ErrorRecord,
    Outcome,
    StartEvent,
    WarmResult,
    error_record,
)
from ..storage import Storage, storage_from_description
from .progress import clear_running, current_running, set_running
from .recycling import health, mark_recycle
from .streaming import ChunkStream, FailedItem, WorkloadRun

# (storage, api, version) → built predictor. __init__ runs once per worker process per
# version. The storage is part of the key: one cluster may serve gateways of several storages
# (a team's and another's, staging and production), whose APIs can share a name and version.
PredictorKey = tuple[str, str, int]
_predictors: dict[PredictorKey, Predictor] = {}
_predictor_locks: dict[PredictorKey, threading.Lock] = {}
_registry_lock = threading.Lock()
_gates: dict[tuple[str, str, int], threading.Semaphore] = {}
_KEEP_VERSIONS = 2


def _storage_key(spec: ChunkSpec) -> str:
    return json.dumps(spec["storage"], sort_keys=True, default=str)


class PredictorInitError(Exception):
    """The predictor's __init__ (or unpickling its class) raised."""


class Timeout(Exception):
    """A predict call ran past the API's timeout_s."""


def _current_worker() -> Any:
    """The Dask worker running this task, or None (a direct call in a test or a notebook)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ValueError, ImportError):
        return None


def _task_key(worker: Any) -> str | None:
    key = worker.get_current_task() if worker is not None else None
    return str(key) if key is not None else None


def load_predictor(spec: ChunkSpec) -> Predictor:
    key = (_storage_key(spec), spec["api"], int(spec["version"]))
    found = _predictors.get(key)
    if found is not None:
        return found
    with _registry_lock:
        lock = _predictor_locks.setdefault(key, threading.Lock())
    with lock:
        found = _predictors.get(key)
        if found is not None:
            return found
        storage = storage_from_description(spec["storage"])
        _, api, version = key
        blob = storage.read_bytes(storage.predictor_path(api, version))
        if blob is None:
            raise PredictorInitError(f"predictor of {api} v{version} is missing from storage")
        try:
            class_blob, config = pickle.loads(blob)
            cls = cloudpickle.loads(class_blob)
            predictor = Predictor.wrap(build_predictor(cls, config))
        except Exception as exc:
            raise PredictorInitError(f"{type(exc).__name__}: {exc}") from exc
        _predictors[key] = predictor
        _forget_old_versions(key[0], key[1])
        return predictor


def _forget_old_versions(storage: str, api: str) -> None:
    versions = sorted(v for s, a, v in _predictors if (s, a) == (storage, api))
    for version in versions[:-_KEEP_VERSIONS]:
        _predictors.pop((storage, api, version), None)


def artifact_path_for_current_workload(name: str) -> tuple[Storage, str] | None:
    """Where the running workload may keep a file `name` (e.g. an executed notebook)."""
    running = current_running()
    if running is None or running.storage is None or len(running.ids) != 1:
        return None
    storage = storage_from_description(running.storage)
    return storage, storage.artifact_path(running.api, running.ids[0], name)


def warm(spec: ChunkSpec) -> WarmResult:
    """Build the predictor on this worker now, so deploy can report ready or the error."""
    try:
        load_predictor(spec)
    except PredictorInitError as exc:
        return {"ok": False, "error": _init_error(exc)}
    return {"ok": True}


_OWN_FILES = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "concurrent/futures",
    "contextvars",
)


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code down: asyncnb's own frames say nothing to them."""
    tb = exc.__traceback__
    while tb is not None and any(part in tb.tb_frame.f_code.co_filename for part in _OWN_FILES):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


def _user_error(exc: BaseException, type_name: str | None = None) -> ErrorRecord:
    return error_record(exc, type_name, _user_traceback(exc))


def _init_error(exc: PredictorInitError) -> ErrorRecord:
    return _user_error(exc.__cause__ or exc, "PredictorInitError")


def call_with_timeout(func: Callable[[], Any], timeout_s: float | None) -> Any:
    """`func()`, raising Timeout after `timeout_s` seconds (None: no limit)."""
    if timeout_s is None:
        return func()
    # A hung predict cannot be interrupted in Python; it is left on a daemon thread so that
    # this task, and the worker slot, move on, and the process is tainted: its Nanny restarts
    # it once its other tasks end (see recycling.py).
    ctx = contextvars.copy_context()
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def call() -> None:
        try:
            future.set_result(ctx.run(func))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=call, name="asyncnb-predict", daemon=True).start()
    try:
        return future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        health.taint(_current_worker())
        raise Timeout(f"predict did not finish within timeout_s={timeout_s:g}") from None


def _read_payload(spec: ChunkSpec, item: ChunkItem) -> Any:
    body = item.get("body")
    if body is None:
        storage = storage_from_description(spec["storage"])
        body = storage.read_bytes(storage.payload_path(spec["api"], item["id"]))
        if body is None:
            raise FileNotFoundError(f"payload of workload {item['id']} is missing from storage")
    return decode_payload(body, item.get("content_type"))


def _success(spec: ChunkSpec, item_id: str, value: Any, started: float) -> Outcome:
    data, content_type = encode_result(value)
    outcome: Outcome = {
        "id": item_id,
        "ok": True,
        "content_type": content_type,
        "size": len(data),
        "started_at": started,
        "finished_at": time.time(),
    }
    if len(data) > spec["inline_limit"]:
        storage = storage_from_description(spec["storage"])
        storage.write_bytes(storage.result_path(spec["api"], item_id), data)
        outcome["stored"] = True
    else:
        outcome["data"] = data
    return outcome


def _failure(item_id: str, error: ErrorRecord, started: float, **extra: bool) -> Outcome:
    outcome: Outcome = {
        "id": item_id,
        "ok": False,
        "error": error,
        "started_at": started,
        "finished_at": time.time(),
    }
    if extra.get("init_failed"):
        outcome["init_failed"] = True
    return outcome


def _gate(spec: ChunkSpec) -> threading.Semaphore:
    """max_concurrency per worker process, whatever number of chunks Dask has started here."""
    limit = int(spec.get("max_concurrency", 1))
    key = (_storage_key(spec), spec["api"], limit)
    gate = _gates.get(key)
    if gate is None:
        with _registry_lock:
            gate = _gates.setdefault(key, threading.Semaphore(limit))
    return gate


def run_chunk(spec: ChunkSpec, items: list[ChunkItem]) -> list[Outcome] | None:
    """Run `items` (one Dask task): one outcome per item, never raising for them.

    With `spec["outcomes_by_event"]`, small outcomes are published on `OUTCOMES_TOPIC` and
    the task returns None: the gateway already reads the scheduler's event stream, so it
    needs no second connection (to this worker) to fetch the task's result.
    """
    health.enter()
    try:
        with _gate(spec):
            outcomes = _run_chunk(spec, items)
    finally:
        last_of_tainted = health.leave()
    worker = _current_worker()
    if last_of_tainted:
        mark_recycle(outcomes, worker)
    if spec.get("outcomes_by_event") and _approx_bytes(outcomes) <= _OUTCOMES_EVENT_BYTES:
        key = _task_key(worker)
        if worker is not None and key is not None:
            worker.log_event(OUTCOMES_TOPIC, {"key": key, "outcomes": outcomes})
            return None
    return outcomes


# The scheduler keeps the last `distributed.admin.low-level-log-length` (1,000) events of a
# topic: at most this much each (a full chunk of 64 small outcomes), so ≤ 16 MiB in all.
_OUTCOMES_EVENT_BYTES = 16 * 1024


def _approx_bytes(outcomes: list[Outcome]) -> int:
    return sum(200 + len(o.get("data") or b"") + len(str(o.get("error") or "")) for o in outcomes)


_START_EVENT_AFTER_S = 0.005


def _run_chunk(spec: ChunkSpec, items: list[ChunkItem]) -> list[Outcome]:
    started = time.time()
    worker = _current_worker()  # the stream's clock thread is not a task thread: capture it
    start_event: StartEvent = {
        "kind": "start",
        "api": spec["api"],
        "ids": [i["id"] for i in items],
        "key": _task_key(worker),
        "t": started,
    }
    # A chunk that ends within a few milliseconds needs no "started" event (its outcome says
    # so), and sending one would hold its result behind the event in Dask's batched stream.
    # The stream sends it after that, or before the chunk's first output, log line or progress.
    stream = ChunkStream(worker, start_event, spec["storage"], start_after=_START_EVENT_AFTER_S)
    try:
        return _run_items(spec, items, started, stream)
    finally:
        stream.close()  # every item out, before the outcomes


def _run_items(
    spec: ChunkSpec, items: list[ChunkItem], started: float, stream: ChunkStream
) -> list[Outcome]:
    try:
        predictor = load_predictor(spec)
    except PredictorInitError as exc:
        error = _init_error(exc)
        return [_failure(i["id"], error, started, init_failed=True) for i in items]
    batch_size = int(spec.get("max_batch_size", 1))
    if batch_size > 1 and predictor.has_batch:
        return _run_batches(spec, predictor, items, batch_size, stream)
    return [_run_one(spec, predictor, item, stream) for item in items]


def _run_one(
    spec: ChunkSpec, predictor: Predictor, item: ChunkItem, stream: ChunkStream
) -> Outcome:
    started = time.time()
    run = stream.run([item], batch=not predictor.has_single)
    token = set_running(spec["api"], [item["id"]], run.progress, spec["storage"], run)
    try:
        payload = _read_payload(spec, item)
        value = call_with_timeout(
            lambda: run.collect(predictor.predict(payload, item["id"])), spec.get("timeout_s")
        )
        return _success(spec, item["id"], value, started)
    except Exception as exc:
        return _failure(item["id"], _user_error(exc), started)
    finally:
        clear_running(token)
        run.end()


def _run_batches(
    spec: ChunkSpec,
    predictor: Predictor,
    items: list[ChunkItem],
    batch_size: int,
    stream: ChunkStream,
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        started = time.time()
        ready: list[tuple[ChunkItem, Any]] = []
        for item in batch:
            try:
                ready.append((item, _read_payload(spec, item)))
            except Exception as exc:
                outcomes.append(_failure(item["id"], _user_error(exc), started))
        if not ready:
            continue
        run = stream.run([item for item, _ in ready], batch=True)
        ids = [item["id"] for item, _ in ready]
        token = set_running(spec["api"], ids, run.progress, spec["storage"], run)
        try:
            payloads = [p for _, p in ready]
            values = call_with_timeout(
                functools.partial(_predict_batch, run, predictor, payloads), spec.get("timeout_s")
            )
        except Exception as exc:
            error = _user_error(exc)
            outcomes.extend(_failure(item["id"], error, started) for item, _ in ready)
            continue
        finally:
            clear_running(token)
            run.end()
        for (item, _), value in zip(ready, values, strict=True):
            if isinstance(value, FailedItem):  # its generator raised
                outcomes.append(_failure(item["id"], _user_error(value.error), started))
                continue
            try:
                outcomes.append(_success(spec, item["id"], value, started))
            except Exception as exc:
                outcomes.append(_failure(item["id"], _user_error(exc), started))
    return outcomes


def _predict_batch(run: WorkloadRun, predictor: Predictor, payloads: list[Any]) -> list[Any]:
    return run.collect_batch(predictor.predict_batch(payloads))
