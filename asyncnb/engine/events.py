"""Each workload's event log, and the hub that numbers, keeps, persists and serves them.

The gateway is the one sequencer of a workload's events (contract/events.py): it gives each an
`event_id` that increases over the workload's whole life, keeps the newest in a bounded window
in memory, and writes the rest to storage (event_store.py) every `flush_interval_s`. Readers
(SSE streams, webhook streamers) take what is older than the window from storage, so a slow
or late reader costs no gateway memory, and a gateway restart loses nothing that was flushed.

A workload the gateway recovered after a restart may already have events in storage: its log
starts "not ready", loads the last id and attempt from storage, and numbers what arrived in
the meantime after them. Attempts never go backwards: a run that starts after a restart is
numbered after the last attempt the stored events name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from ..contract.events import LOG, LOG_CAP_BYTES, OUTPUT, PROGRESS, START, StreamItem
from ..contract.status import Status
from .background import BackgroundTasks
from .event_store import EventStore
from .workload import WorkloadState

logger = logging.getLogger(__name__)

WINDOW_EVENTS = 256  # per workload, in memory
WINDOW_BYTES = 1024 * 1024  # per workload, in memory (approximately: the events' JSON size)
MAX_UNPERSISTED = 20_000  # past this (storage down for long), the oldest are dropped
FLUSH_INTERVAL_S = 0.2
READER_FLUSH_DELAY_S = 0.005  # with readers waiting: how long events gather into one segment

Listener = Callable[[WorkloadState, dict[str, Any]], None]
IO = Callable[..., Awaitable[Any]]


def event_timestamp(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def _size(event: dict[str, Any]) -> int:
    value = event.get("value")
    line = event.get("line")
    return 200 + (len(value) if isinstance(value, str) else 0) + (len(line) if line else 0)


class EventLog:
    """One workload's events: the window in memory, what awaits persistence, the readers'
    wake-up."""

    def __init__(self, api: str, workload_id: str, *, ready: bool) -> None:
        self.api = api
        self.id = workload_id
        self.next_id = 1
        self.last_attempt = 0
        self.window: deque[dict[str, Any]] = deque()
        self.window_bytes = 0
        self.unpersisted: list[dict[str, Any]] = []
        self.persisted_upto = 0  # every event up to this id is in storage
        self.closed = False  # the terminal event was appended
        self.ready = asyncio.Event()
        if ready:
            self.ready.set()
        self.early: list[Callable[[], None]] = []  # what arrived before the log was loaded
        self.run_key: str | None = None  # the Dask key of the run whose items are accepted
        self.run_attempt = 0
        self.max_seq: dict[int, int] = {}  # per attempt: items at or below were taken
        self._changed = asyncio.Event()
        self.dropped = 0
        self.readers = 0  # follow()ers now: while there are some, events are flushed at once
        self.flush_soon: asyncio.Task[None] | None = None
        self.writing = asyncio.Lock()

    # writing ---------------------------------------------------------------------------------
    def append(self, kind: str, attempt: int, t: float, fields: dict[str, Any]) -> dict[str, Any]:
        event = {
            "event_id": self.next_id,
            "type": kind,
            "id": self.id,
            "api": self.api,
            "attempt": attempt,
            "timestamp": event_timestamp(t),
            **fields,
        }
        self.next_id += 1
        self.window.append(event)
        self.window_bytes += _size(event)
        self.unpersisted.append(event)
        if len(self.unpersisted) > MAX_UNPERSISTED:
            # Storage has been failing for long: keep memory bounded, and say so once in a while.
            self.unpersisted.pop(0)
            self.dropped += 1
            if self.dropped % 1000 == 1:
                logger.warning("dropping unpersisted events of %s (storage failing)", self.id)
        self._trim()
        self._wake()
        return event

    def _trim(self) -> None:
        # Only persisted events leave the window: a reader finds the rest in storage.
        while (
            len(self.window) > WINDOW_EVENTS or self.window_bytes > WINDOW_BYTES
        ) and self.window[0]["event_id"] <= self.persisted_upto:
            self.window_bytes -= _size(self.window.popleft())

    def persisted(self, upto: int) -> None:
        self.persisted_upto = max(self.persisted_upto, upto)
        self._trim()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # reading ---------------------------------------------------------------------------------
    def since(self, after: int) -> list[dict[str, Any]] | None:
        """The persisted events after `after` from memory, or None when some of them left
        the window. Only persisted ones: a reader never sees an event that a crash could
        take back (and a restarted gateway number again)."""
        if self.window and self.window[0]["event_id"] > after + 1:
            return None
        if not self.window and self.next_id > after + 1:
            return None
        return [e for e in self.window if after < e["event_id"] <= self.persisted_upto]

    async def changed(self, timeout: float) -> bool:
        """Wait until an event is appended (True) or `timeout` passes (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def first_in_window(self) -> int:
        return int(self.window[0]["event_id"]) if self.window else self.next_id


class EventHub:
    """Every live workload's event log; the one place events are made."""

    def __init__(
        self,
        store: EventStore,
        io: IO,
        tasks: BackgroundTasks,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.store = store
        self.io = io
        self.tasks = tasks
        self.flush_interval_s = flush_interval_s
        self.logs: dict[str, EventLog] = {}
        self._recovered: set[str] = set()  # may have stored events: load before numbering
        self._listeners: list[Listener] = []
        # whether a workload's webhook wants events as they happen (so its log is made early)
        self._live_event_wanted: list[Callable[[WorkloadState], bool]] = []
        self._dirty: set[str] = set()

    def listen(
        self, listener: Listener, wants: Callable[[WorkloadState], bool] | None = None
    ) -> None:
        """`listener(workload, event)` for every event made (webhook streaming); `wants`
        says of a workload whether the listener needs its events even when it emits none."""
        self._listeners.append(listener)
        if wants is not None:
            self._live_event_wanted.append(wants)

    def recovered(self, workload_ids: Iterable[str]) -> None:
        self._recovered.update(workload_ids)

    # the log of a workload ---------------------------------------------------------------
    def log_for(
        self, workload: WorkloadState, key: str | None = None, *, announce: bool = True
    ) -> EventLog:
        """The workload's log, made now if it has none. A workload that emits nothing, is
        watched by nobody and whose webhook wants no live event never gets one: its history
        (start, end) is made from its record when asked (most workloads: no write at all).
        A log made while a run is under way begins with that run's start."""
        log = self.logs.get(workload.id)
        if log is not None:
            return log
        recovered = workload.id in self._recovered
        log = EventLog(workload.api, workload.id, ready=not recovered)
        self.logs[workload.id] = log
        if recovered:
            self._recovered.discard(workload.id)
            self.tasks.spawn(self._load(workload, log))
        elif announce and workload.status is Status.IN_PROGRESS and workload.attempts > 0:
            log.run_key = key or workload.chunk_key
            log.run_attempt = log.last_attempt = workload.attempts
            self._emit(workload, log, START, workload.started_at or time.time())
        return log

    def _needs_log(self, workload: WorkloadState) -> bool:
        return (
            workload.id in self.logs
            or workload.id in self._recovered
            or any(wants(workload) for wants in self._live_event_wanted)
        )

    async def _load(self, workload: WorkloadState, log: EventLog) -> None:
        try:
            last_id, last_attempt = await self.io(self.store.tail, log.api, log.id)
        except Exception:
            logger.exception("could not read the stored events of %s", log.id)
            last_id, last_attempt = 0, 0
        log.next_id = last_id + 1
        log.persisted_upto = last_id
        log.last_attempt = last_attempt
        log.ready.set()
        early, log.early = log.early, []
        for deliver in early:
            deliver()

    def _when_ready(self, log: EventLog, action: Callable[[], None]) -> None:
        if log.ready.is_set():
            action()
        else:
            log.early.append(action)

    def _emit(
        self, workload: WorkloadState, log: EventLog, kind: str, t: float, **fields: Any
    ) -> None:
        event = log.append(kind, log.run_attempt or workload.attempts, t, fields)
        self._dirty.add(log.id)
        if log.readers and (log.flush_soon is None or log.flush_soon.done()):
            log.flush_soon = self.tasks.spawn(self._flush_soon(log))
        for listener in self._listeners:
            try:
                listener(workload, event)
            except Exception:
                logger.exception("an event listener failed")

    # what the dispatcher reports -----------------------------------------------------------
    def started(
        self, workload: WorkloadState, key: str | None, t: float, worker: str | None
    ) -> None:
        """A run of `workload` began (its chunk `key`); `workload.attempts` counts it."""
        if not self._needs_log(workload):
            return  # made, with this start, when something needs it
        log = self.log_for(workload, key, announce=False)

        def start() -> None:
            if workload.attempts <= log.last_attempt:
                workload.attempts = log.last_attempt + 1  # never backwards, across restarts
            log.run_key = key
            log.run_attempt = log.last_attempt = workload.attempts
            fields = {"worker": worker} if worker else {}
            self._emit(workload, log, START, t, **fields)

        self._when_ready(log, start)

    def progress(
        self, workload: WorkloadState, fraction: float | None, message: str | None
    ) -> None:
        log = self.log_for(workload)
        self._when_ready(
            log,
            lambda: self._emit(
                workload, log, PROGRESS, time.time(), fraction=fraction, message=message
            ),
        )

    def stream(self, workload: WorkloadState, key: str | None, items: list[StreamItem]) -> None:
        """Outputs and log lines of the run `key` of `workload` (the dispatcher checked that it
        is the workload's current run)."""
        log = self.log_for(workload, key)

        def take() -> None:
            if key != log.run_key:
                return  # a stale run's, or its start was never seen: the start comes first
            attempt = log.run_attempt
            taken = log.max_seq.get(attempt, -1)
            for item in items:
                seq = int(item.get("seq", 0))
                if seq <= taken:
                    continue  # seen already (a replayed message)
                taken = seq
                fields = {
                    k: v for k, v in item.items() if k not in ("id", "seq", "type", "t", "attempt")
                }
                kind = OUTPUT if item.get("type") == OUTPUT else LOG
                self._emit(workload, log, kind, float(item.get("t") or time.time()), **fields)
            log.max_seq[attempt] = taken

        self._when_ready(log, take)

    def finished(self, workload: WorkloadState, status: Status) -> None:
        """The terminal event (after the final record was persisted); flushed at once."""
        if not self._needs_log(workload):
            return  # nothing but its start and end: made from its record when asked
        log = self.log_for(workload)

        def end() -> None:
            if log.closed:
                return
            if log.run_attempt != workload.attempts and workload.attempts > 0:
                # A run too short to be announced: its start, then its end.
                log.run_attempt = log.last_attempt = max(workload.attempts, log.last_attempt + 1)
                workload.attempts = log.run_attempt
                self._emit(workload, log, START, workload.started_at or time.time())
            record = workload.public(status)
            self._emit(workload, log, status.value, workload.finished_at or time.time(), **record)
            log.closed = True
            self.tasks.spawn(self._flush_and_forget(log))

        self._when_ready(log, end)

    def forget(self, workload_id: str) -> None:
        self.logs.pop(workload_id, None)
        self._recovered.discard(workload_id)

    # persistence -----------------------------------------------------------------------------
    async def flush(self, only: Iterable[str] | None = None) -> None:
        """Write the unpersisted events of every dirty log (of `only`): one segment each."""
        names = set(only) if only is not None else set(self._dirty)
        self._dirty -= names
        for workload_id in names:
            log = self.logs.get(workload_id)
            if log is not None:
                await self._flush_log(log)

    async def _flush_log(self, log: EventLog) -> None:
        async with log.writing:  # one segment at a time per log, so they stay in order
            if not log.unpersisted:
                return
            batch, log.unpersisted = log.unpersisted, []
            try:
                await self.io(self.store.write, log.api, log.id, batch)
            except Exception:
                logger.warning("could not persist %d events of %s", len(batch), log.id)
                log.unpersisted = batch + log.unpersisted
                self._dirty.add(log.id)
                return
            log.persisted(int(batch[-1]["event_id"]))

    async def _flush_soon(self, log: EventLog) -> None:
        """Someone is reading: persist within a few milliseconds (what arrives meanwhile
        goes in the same segment), rather than at the next periodic flush."""
        await asyncio.sleep(READER_FLUSH_DELAY_S)
        await self.flush([log.id])

    async def _flush_and_forget(self, log: EventLog) -> None:
        for _ in range(50):
            await self.flush([log.id])
            if not log.unpersisted:
                break
            await asyncio.sleep(self.flush_interval_s)
        if self.logs.get(log.id) is log and not log.unpersisted:
            del self.logs[log.id]

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            if self._dirty:
                try:
                    await self.flush()
                except Exception:
                    logger.exception("event flush failed")

    # reading -------------------------------------------------------------------------------
    async def follow(
        self, workload: WorkloadState, after: int, keepalive_s: float
    ) -> AsyncIterator[dict[str, Any] | None]:
        """The workload's events after `after`, live until its terminal event; None every
        `keepalive_s` without one (for a keep-alive line)."""
        log = self.logs.get(workload.id)
        if log is None and workload.status.finished:
            async for event in self._replay(workload, after):
                yield event
            return
        if log is None:
            log = self.log_for(workload)
        await log.ready.wait()
        log.readers += 1
        try:
            if log.unpersisted:
                await self.flush([log.id])
            while True:
                batch = log.since(after)
                if batch is None:
                    batch = await self.io(
                        self.store.read, log.api, log.id, after, log.first_in_window
                    )
                    batch += log.since(int(batch[-1]["event_id"]) if batch else after) or []
                for event in batch:
                    after = int(event["event_id"])
                    yield event
                    if event["type"] in _TERMINAL:
                        return
                if log.closed and after >= log.next_id - 1:
                    return
                if not await log.changed(keepalive_s):
                    yield None
        finally:
            log.readers -= 1

    async def _replay(
        self, workload: WorkloadState, after: int
    ) -> AsyncIterator[dict[str, Any] | None]:
        """A finished workload's stored events; a terminal event made from its record when the
        gateway stopped before flushing one (or it finished before events existed)."""
        events = await self.io(self.store.read, workload.api, workload.id, after)
        last = after
        for event in events:
            last = int(event["event_id"])
            yield event
            if event["type"] in _TERMINAL:
                return
        if not events:
            stored_last, _ = await self.io(self.store.tail, workload.api, workload.id)
            if stored_last == 0 and workload.attempts > 0 and after < 1:
                # A workload that emitted nothing kept no events: its start, from its record.
                yield {
                    "event_id": 1,
                    "type": START,
                    "id": workload.id,
                    "api": workload.api,
                    "attempt": workload.attempts,
                    "timestamp": event_timestamp(workload.started_at or time.time()),
                }
            last = max(last, stored_last, 1 if workload.attempts > 0 and stored_last == 0 else 0)
        status = workload.status
        yield {
            "event_id": last + 1,
            "type": status.value,
            "attempt": workload.attempts,
            "timestamp": event_timestamp(workload.finished_at or time.time()),
            **workload.public(status),
        }

    async def history(
        self, workload: WorkloadState, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` events after `after`, without waiting (the JSON form of /events)."""
        log = self.logs.get(workload.id)
        if log is not None:
            await log.ready.wait()
            batch = log.since(after)
            if batch is None:
                batch = await self.io(self.store.read, log.api, log.id, after, log.first_in_window)
                batch += log.since(int(batch[-1]["event_id"]) if batch else after) or []
            return batch[:limit]
        found: list[dict[str, Any]] = []
        if workload.status.finished:
            async for event in self._replay(workload, after):
                if event is not None:
                    found.append(event)
                if len(found) >= limit:
                    break
            return found
        return await self.io(self.store.read, workload.api, workload.id, after)

    async def log_text(self, workload: WorkloadState) -> str:
        """The workload's log: the newest LOG_CAP_BYTES of its latest attempt. The tail its
        worker stored when the attempt ended, else (still running, or the worker stopped
        early) the attempt's `log` events."""
        if workload.status.finished and workload.attempts:
            path = self.store.storage.logs_path(workload.api, workload.id, workload.attempts)
            stored = await self.io(self.store.storage.read_bytes, path)
            if stored is not None:
                return str(stored.decode("utf-8", "replace"))
        events = await self.history(workload, 0, 10**9)
        attempts = [int(e.get("attempt") or 0) for e in events if e.get("type") == LOG]
        if not attempts:
            return ""
        latest = max(attempts)
        lines = [
            str(e.get("line", ""))
            for e in events
            if e.get("type") == LOG and int(e.get("attempt") or 0) == latest
        ]
        text = "".join(line + "\n" for line in lines)
        data = text.encode()
        if len(data) > LOG_CAP_BYTES:
            data = data[-LOG_CAP_BYTES:]
            data = data[data.find(b"\n") + 1 :]  # whole lines only
        return data.decode("utf-8", "replace")


_TERMINAL = frozenset(s.value for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED))
