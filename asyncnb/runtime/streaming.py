"""A running workload's outputs and log lines, sent to the gateway as batched stream items.

Outputs are what a generator `predict` yields (for `predict_batch`, one generator per payload,
consumed round-robin) and what `emit(value)` sends; a generator's result is the JSON list of
its attempt's output values (`encode_output`) in order: output `index` i is element i.

Log lines are the workload's stdout/stderr and logging, as `capture` takes them (what it takes
and what it does not is said there). A `predict_batch` call's lines belong to every workload of
its batch. A line keeps its part after the last `\\r` (progress bars) and is cut at MAX_LOG_LINE.

Each chunk's items travel as `StreamMessage`s on `EVENT_TOPIC`: at most one every
FLUSH_INTERVAL_S (earlier when MAX_MESSAGE_BYTES of items are waiting), always after the
chunk's `StartEvent` and before the chunk's outcomes. A workload attempt emits at most
LOG_CAP_BYTES of log items (then one notice line); its newest LOG_CAP_BYTES of log text go to
`storage.logs_path(api, id, attempt)` when its run ends (no file when it logged nothing).
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..contract.events import (
    LOG_CAP_BYTES,
    MAX_LOG_LINE,
    StreamItem,
    StreamMessage,
    encode_output,
    output_event_fields,
)
from ..contract.predictor import encode_result
from ..contract.tasks import EVENT_TOPIC, ChunkItem, ProgressEvent, StartEvent, StorageDescription
from .capture import LogSink, output_capture, uncaptured
from .progress import current_running

FLUSH_INTERVAL_S = 0.05  # at most one stream message per chunk this often
# Of items in one message: past it, the message goes now. The scheduler keeps the last 1,000
# messages of the topic, so this bounds what streaming costs it (about 100 MB at most).
MAX_MESSAGE_BYTES = 64 * 1024
_MIB = LOG_CAP_BYTES // (1024 * 1024)
CAP_NOTICE = f"[asyncnb] log output past {_MIB} MiB: GET /logs has the newest {_MIB} MiB"
_ITEM_BYTES = 120  # what an item's other fields weigh, roughly


class FailedItem:
    """The result of a `predict_batch` item whose generator raised: that item fails alone."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


def emit(value: Any, workload_id: str | None = None, *, item: int | None = None) -> None:
    """Send `value` as an output of the running workload now (a JSON value, str or bytes).

    Call it from `predict` (or a generator predictor) while a workload runs; outside one it
    does nothing, like `report_progress`. It does not change the result of a `predict` that
    returns a value; a generator's result lists its emitted outputs with its yielded ones.
    Inside `predict_batch` say which payload the output is for: `item=i` (its position in
    `payloads`) or `workload_id=` (its request id); without either it raises ValueError, whatever
    the batch's size. A value the result codecs cannot encode raises TypeError.
    """
    running = current_running()
    sink = running.sink if running is not None else None
    if isinstance(sink, WorkloadRun):
        sink.emit(value, workload_id, item)


class _Clock:
    """One daemon thread per process that sends the start events and flushes that are due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[ChunkStream, float] = {}
        self._pid = 0

    def wake(self, chunk: ChunkStream, at: float) -> None:
        with self._cond:
            current = self._due.get(chunk)
            if current is None or at < current:
                self._due[chunk] = at
                self._cond.notify()
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="asyncnb-stream", daemon=True).start()

    def forget(self, chunk: ChunkStream) -> None:
        with self._cond:
            self._due.pop(chunk, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [chunk for chunk, at in self._due.items() if at <= now]
                for chunk in due:
                    del self._due[chunk]
                if not due:
                    self._cond.wait(min(self._due.values(), default=now + 60.0) - now)
                    continue
            for chunk in due:
                try:
                    chunk.tick()
                except Exception:
                    pass


_clock = _Clock()


class ChunkStream:
    """One chunk's start event and the stream items of its workloads, sent in order.

    One lock orders everything: the start event goes before the first item or progress event
    (sent by whichever thread needs it first), items go in `seq` order, and nothing is sent
    after `close()`. Without a worker (a direct call) nothing is sent; logs are still stored.
    """

    def __init__(
        self,
        worker: Any,
        start_event: StartEvent,
        storage: StorageDescription | None,
        *,
        start_after: float,
    ) -> None:
        self.worker = worker
        self.api = start_event["api"]
        self.key = start_event["key"]
        self.storage = storage
        self.lock = threading.RLock()
        self._start_event = start_event
        self._start_at = time.monotonic() + start_after
        self._start_sent = False
        self._closed = False
        self._pending: list[StreamItem] = []
        self._pending_bytes = 0
        self._flush_at: float | None = None
        self._last_flush = float("-inf")
        # Capture goes on with the chunk's first run (after the predictor's __init__, which
        # may call logging.basicConfig) and off with the chunk, not per run: the root logger's
        # handler would otherwise come and go with every workload (half of a no-op workload's
        # cost on the worker).
        self._captured = False
        if worker is not None:
            _clock.wake(self, self._start_at)

    def run(self, items: Sequence[ChunkItem], *, batch: bool) -> WorkloadRun:
        """The sink of one predict (`batch`: predict_batch) call over `items`."""
        with self.lock:
            if not self._captured and not self._closed:
                self._captured = True
                output_capture.acquire()
        return WorkloadRun(self, items, batch=batch)

    def add(self, item: StreamItem, size: int) -> None:
        """Queue `item` (call with `lock` held, so that `seq` and queue order agree)."""
        if self._closed or self.worker is None:
            return
        if self._pending and self._pending_bytes + size > MAX_MESSAGE_BYTES:
            self._flush()
        self._pending.append(item)
        self._pending_bytes += size
        if self._pending_bytes >= MAX_MESSAGE_BYTES:
            self._flush()
        elif self._flush_at is None:
            self._flush_at = max(time.monotonic(), self._last_flush + FLUSH_INTERVAL_S)
            _clock.wake(self, self._flush_at)

    def send(self, message: ProgressEvent) -> None:
        """A progress event, after the start and every item queued before it."""
        with self.lock:
            if self._closed or self.worker is None:
                return
            self._flush()
            self._send_start()
            self._log(message)

    def tick(self) -> None:
        """From the clock: whatever is due."""
        with self.lock:
            if self._closed:
                return
            now = time.monotonic()
            if not self._start_sent and now >= self._start_at:
                self._send_start()
            if self._flush_at is not None and now >= self._flush_at:
                self._flush()
            upcoming = [] if self._start_sent else [self._start_at]
            if self._flush_at is not None:
                upcoming.append(self._flush_at)
            if upcoming:
                _clock.wake(self, min(upcoming))

    def close(self) -> None:
        """The chunk ended: send what is queued (after the start), then nothing more. A chunk
        that ends within `start_after` and streamed nothing sends no start event."""
        with self.lock:
            if self._closed:
                return
            self._flush()
            self._closed = True
        _clock.forget(self)
        if self._captured:
            self._captured = False
            output_capture.release()

    def _send_start(self) -> None:
        if not self._start_sent:
            self._start_sent = True
            self._log(self._start_event)

    def _flush(self) -> None:
        self._flush_at = None
        if not self._pending or self.worker is None:
            return
        self._send_start()
        items, self._pending, self._pending_bytes = self._pending, [], 0
        self._last_flush = time.monotonic()
        message = StreamMessage(kind="stream", api=self.api, key=self.key, items=items)
        if not self._log(message) and len(items) > 1:
            for item in items:  # one that cannot be sent (msgpack) must not take the rest along
                self._log({**message, "items": [item]})

    def _log(self, message: Any) -> bool:
        with uncaptured():
            try:
                self.worker.log_event(EVENT_TOPIC, message)
                return True
            except Exception:
                return False


class _Workload:
    """One workload attempt's numbering, outputs and log tail."""

    __slots__ = ("attempt", "capped", "id", "log_bytes", "outputs", "seq", "tail", "tail_bytes")

    def __init__(self, workload_id: str, attempt: int) -> None:
        self.id = workload_id
        self.attempt = attempt
        self.seq = 0
        self.outputs: list[Any] = []  # the values of its outputs: a generator's result
        self.tail: deque[tuple[str, int]] = deque()  # (line, its bytes with the newline)
        self.tail_bytes = 0
        self.log_bytes = 0  # of log items emitted
        self.capped = False


class WorkloadRun(LogSink):
    """What one predict/predict_batch call emits (the `sink` of its `progress.Running`)."""

    def __init__(self, chunk: ChunkStream, items: Sequence[ChunkItem], *, batch: bool) -> None:
        self.chunk = chunk
        self.batch = batch
        self.workloads = [_Workload(i["id"], int(i.get("attempt") or 1)) for i in items]
        self._by_id = {w.id: w for w in self.workloads}
        self._partial: dict[str, str] = {}
        self._skipping: set[str] = set()  # streams whose overlong line is cut until "\n"
        self.closed = False

    # from the workload -----------------------------------------------------------------------
    def progress(self, message: ProgressEvent) -> None:
        if not self.closed:
            self.chunk.send(message)

    def emit(self, value: Any, workload_id: str | None, item: int | None) -> None:
        if workload_id is not None:
            found = self._by_id.get(str(workload_id))
            if found is None:
                raise ValueError(f"emit(): {workload_id!r} is not a workload running here")
        elif item is not None:
            if not 0 <= item < len(self.workloads):
                raise ValueError(f"emit(): item={item} is not a position in this batch")
            found = self.workloads[item]
        elif self.batch:
            raise ValueError(
                "emit() inside predict_batch must say which payload the output is for: "
                "emit(value, item=i), i its position in payloads (or workload_id=...)"
            )
        else:
            found = self.workloads[0]
        self.output(found, value)

    def output(self, workload: _Workload, value: Any) -> None:
        data, content_type = encode_result(value)
        fields = output_event_fields(data, content_type, value)
        if "value" in fields:
            kept = fields["value"]
        else:  # too big for its event: only the result has it
            kept = encode_output(data, content_type, value)["value"]
        size = len(data) * 4 // 3 if fields.get("encoding") == "base64" else len(data)
        with self.chunk.lock:
            if self.closed:
                return
            index = len(workload.outputs)
            workload.outputs.append(kept)
            self._add(workload, {"type": "output", "index": index, **fields}, size)

    def write(self, stream: str, text: str) -> None:
        """Text written to sys.stdout/sys.stderr: whole lines go out, the rest waits."""
        with self.chunk.lock:
            if self.closed:
                return
            buffered = self._partial.get(stream, "") + text
            lines = buffered.split("\n")
            rest = lines.pop()
            for line in lines:
                if stream in self._skipping:
                    self._skipping.discard(stream)  # the end of a line already cut
                else:
                    self._line(line, stream)
            if len(rest) > MAX_LOG_LINE:
                rest = _last_part(rest)
                if len(rest) > MAX_LOG_LINE:
                    if stream not in self._skipping:
                        self._line(rest, stream)
                        self._skipping.add(stream)
                    rest = ""
            self._partial[stream] = rest

    def log_record(self, text: str, level: str) -> None:
        with self.chunk.lock:
            if not self.closed:
                for line in text.split("\n"):
                    self._line(line, "logging", level)

    # consuming what predict returned -----------------------------------------------------------
    def collect(self, value: Any) -> Any:
        """predict's return value, or for a generator the list of its outputs' values."""
        if not inspect.isgenerator(value):
            return value
        workload = self.workloads[0]
        try:
            for output in value:
                if self.closed:
                    break  # abandoned (timed out): stop at its next yield
                self.output(workload, output)
        finally:
            value.close()
        return list(workload.outputs)

    def collect_batch(self, values: Sequence[Any]) -> list[Any]:
        """predict_batch's results, each generator's (consumed round-robin, so that every item's
        outputs flow) replaced by its outputs' values, or by FailedItem if it raised."""
        results = list(values)
        live = {i: v for i, v in enumerate(results) if inspect.isgenerator(v)}
        try:
            while live and not self.closed:
                for i, generator in list(live.items()):
                    try:
                        self.output(self.workloads[i], next(generator))
                        continue
                    except StopIteration:
                        results[i] = list(self.workloads[i].outputs)
                    except Exception as exc:
                        results[i] = FailedItem(exc)
                    generator.close()
                    del live[i]
        finally:
            for generator in live.values():
                generator.close()
        return results

    # the end ------------------------------------------------------------------------------
    def end(self) -> None:
        """The run ended (call after the workload's contextvar is cleared): its partial lines
        are lines now, its log tails are stored, and what it emits later is dropped."""
        with self.chunk.lock:
            if self.closed:
                return
            for stream, rest in self._partial.items():
                if rest and stream not in self._skipping:
                    self._line(rest, stream)
            self.closed = True
        if self.chunk.storage is not None and any(w.tail for w in self.workloads):
            self._store_tails(self.chunk.storage)

    def _store_tails(self, description: StorageDescription) -> None:
        from ..storage import storage_from_description

        with uncaptured():
            try:
                storage = storage_from_description(description)
                for workload in self.workloads:
                    if workload.tail:
                        text = "".join(line + "\n" for line, _ in workload.tail)
                        path = storage.logs_path(self.chunk.api, workload.id, workload.attempt)
                        storage.write_bytes(path, text.encode("utf-8"))
            except Exception:
                pass  # a log that cannot be stored must not fail the workload

    def _line(self, line: str, stream: str, level: str | None = None) -> None:
        line = _last_part(line)
        if len(line) > MAX_LOG_LINE:
            line = line[: MAX_LOG_LINE - 1] + "…"
        try:
            size = len(line.encode("utf-8")) + 1
        except UnicodeEncodeError:  # lone surrogates: msgpack could not send them
            line = line.encode("utf-8", "replace").decode("utf-8")
            size = len(line.encode("utf-8")) + 1
        fields: dict[str, Any] = {"type": "log", "line": line, "stream": stream}
        if level is not None:
            fields["level"] = level
        for workload in self.workloads:
            workload.tail.append((line, size))
            workload.tail_bytes += size
            while workload.tail_bytes > LOG_CAP_BYTES:
                workload.tail_bytes -= workload.tail.popleft()[1]
            if workload.capped:
                continue
            if workload.log_bytes + size > LOG_CAP_BYTES:
                workload.capped = True
                self._add(workload, {"type": "log", "line": CAP_NOTICE, "stream": "stderr"}, 100)
            else:
                workload.log_bytes += size
                self._add(workload, dict(fields), size)

    def _add(self, workload: _Workload, fields: dict[str, Any], size: int) -> None:
        item: StreamItem = {
            "id": workload.id,
            "attempt": workload.attempt,
            "seq": workload.seq,
            "type": fields.pop("type"),
            "t": time.time(),
            **fields,  # type: ignore[typeddict-item]
        }
        workload.seq += 1
        self.chunk.add(item, size + _ITEM_BYTES)


def _last_part(line: str) -> str:
    """What a terminal would show of a line with carriage returns: its last non-empty part."""
    if "\r" not in line:
        return line
    parts = [part for part in line.split("\r") if part]
    return parts[-1] if parts else ""
