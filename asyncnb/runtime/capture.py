"""Capture of a running workload's stdout/stderr and logging, handed to it as log lines.

Captured are what a workload writes to `sys.stdout`/`sys.stderr` and the `logging` records that
reach the root logger (`LOG_FORMAT`; loggers' levels still apply: the root's is WARNING unless
configured) while it runs, in its thread or one its context was copied to (`call_with_timeout`,
`asyncio.to_thread`; not a bare `threading.Thread`). The workload's contextvar routes them, so
concurrent workloads of one process never mix lines. Writes still reach the worker's own
stdout/stderr too; writes through `sys.stdout.buffer` or to fds 1/2 (C code, subprocesses) are
not captured, and neither is what asyncnb itself writes or logs inside `uncaptured()`.

The text goes to the workload's `LogSink` (a `streaming.WorkloadRun`), which makes it lines.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from .progress import current_running

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_STREAM_HANDLER_EMIT = logging.StreamHandler.emit.__code__

# Set while asyncnb itself sends or stores: what that writes or logs is nobody's log.
_internal = threading.local()


@contextmanager
def uncaptured() -> Iterator[None]:
    """While asyncnb itself sends or stores: nothing this thread writes or logs is captured."""
    _internal.on = True
    try:
        yield
    finally:
        _internal.on = False


class LogSink:
    """Where the running workload's captured text goes: the `sink` of its `progress.Running`."""

    def write(self, stream: str, text: str) -> None:
        """Text written to sys.stdout/sys.stderr (`stream`: "stdout" or "stderr")."""
        raise NotImplementedError

    def log_record(self, text: str, level: str) -> None:
        """A logging record, formatted with LOG_FORMAT (`level`: its level's name)."""
        raise NotImplementedError


def _current_sink() -> LogSink | None:
    if getattr(_internal, "on", False):
        return None
    running = current_running()
    sink = running.sink if running is not None else None
    return sink if isinstance(sink, LogSink) else None


def _loggers(record: logging.LogRecord) -> list[logging.Logger]:
    """The loggers whose handlers see `record`: its own, then its parents while it propagates."""
    chain: list[logging.Logger] = []
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        chain.append(logger)
        logger = logger.parent if logger.propagate else None
    return chain


def _from_logging(frame: FrameType | None) -> bool:
    """Written by a logging.StreamHandler, for a record that the capture handler takes too."""
    if frame is None or frame.f_code is not _STREAM_HANDLER_EMIT:
        return False
    record = frame.f_locals.get("record")
    return isinstance(record, logging.LogRecord) and logging.root in _loggers(record)


class _StreamProxy:
    """sys.stdout/sys.stderr: forwards every write to the stream it replaced and, while a
    workload runs in the writing thread, gives the text to that workload's log too."""

    def __init__(self, name: str, original: Any) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        if isinstance(text, str) and text:
            try:
                sink = _current_sink()
                if sink is not None and not _from_logging(sys._getframe(1)):
                    sink.write(self._name, text)
            except Exception:
                pass
        if self._original is None:
            return len(text)
        written: int = self._original.write(text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._original is not None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _CaptureHandler(logging.Handler):
    """On the root logger while workloads run: the records of the writing thread's workload.
    A record no other handler sees still goes to logging.lastResort (stderr), as before."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sink = _current_sink()
            if sink is not None:
                sink.log_record(self.format(record), record.levelname)
            last = logging.lastResort
            if (
                last is not None
                and record.levelno >= last.level
                and not any(h is not self for lg in _loggers(record) for h in lg.handlers)
            ):
                last.handle(record)
        except Exception:
            pass

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class OutputCapture:
    """The stdout/stderr proxies (installed once, again if someone replaced them) and the root
    logger's handler, there only while runs are: so `logging.basicConfig()` in a predictor's
    __init__ still finds the root logger without handlers and configures it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs = 0
        self.handler = _CaptureHandler()

    def acquire(self) -> None:
        with self._lock:
            for name in ("stdout", "stderr"):
                if not isinstance(getattr(sys, name), _StreamProxy):
                    setattr(sys, name, _StreamProxy(name, getattr(sys, name)))
            self._runs += 1
            if self.handler not in logging.root.handlers:
                logging.root.addHandler(self.handler)

    def release(self) -> None:
        with self._lock:
            self._runs = max(0, self._runs - 1)
            if self._runs == 0:
                logging.root.removeHandler(self.handler)


output_capture = OutputCapture()  # one per process
