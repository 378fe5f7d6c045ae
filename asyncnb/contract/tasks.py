"""What the engine and the workers say to each other through Dask, as typed records.

The gateway hands a worker a `ChunkSpec` and a list of `ChunkItem`s (one Dask task); the worker
answers one `Outcome` per item, and while it runs it publishes `StartEvent`s and
`ProgressEvent`s on `EVENT_TOPIC`. Small outcomes travel as one `OutcomesEvent` on
`OUTCOMES_TOPIC` instead of as the task's result. Every error, whoever records it, is an
`ErrorRecord`. They are plain dicts on the wire (msgpack), so they stay TypedDicts here.
"""

from __future__ import annotations

import traceback as tb
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

EVENT_TOPIC = "asyncnb"
OUTCOMES_TOPIC = "asyncnb-outcomes"

MAX_ERROR_MESSAGE = 4000
MAX_ERROR_TRACEBACK = 20_000


class StorageDescription(TypedDict):
    """What a worker needs to open the gateway's storage."""

    url: str
    options: dict[str, Any]


class ChunkSpec(TypedDict):
    """The API a chunk runs for, as the worker needs to know it."""

    api: str
    version: int
    storage: StorageDescription
    inline_limit: int  # results larger than this go to storage, not back to the gateway
    max_batch_size: int
    max_concurrency: int
    timeout_s: float | None
    outcomes_by_event: bool


class ChunkItem(TypedDict):
    id: str
    content_type: str
    body: bytes | None  # None: the payload is in storage
    attempt: NotRequired[int]  # which attempt of the workload this run is (1, 2, ...)


class ErrorRecord(TypedDict):
    """Why a workload failed or an API could not start; shown to users as `error`."""

    type: str
    message: str
    traceback: str


class Outcome(TypedDict):
    """How one item of a chunk ended."""

    id: str
    ok: bool
    started_at: float
    finished_at: float
    content_type: NotRequired[str]
    size: NotRequired[int]
    data: NotRequired[bytes]  # the encoded result, when not stored
    stored: NotRequired[bool]  # the result was written to storage by the worker
    error: NotRequired[ErrorRecord]
    init_failed: NotRequired[bool]  # the predictor could not be built: nothing ran
    # A predict of this worker process hung past timeout_s, and this chunk was its last one:
    # the gateway restarts `worker` (through its Nanny) once it holds these outcomes.
    recycle: NotRequired[bool]
    worker: NotRequired[str]  # the Dask address of the worker that ran the chunk


class WarmResult(TypedDict):
    ok: bool
    error: NotRequired[ErrorRecord]


class StartEvent(TypedDict):
    kind: Literal["start"]
    api: str
    ids: list[str]
    key: str | None  # the Dask key of the chunk's task
    t: float


class ProgressEvent(TypedDict):
    kind: Literal["progress"]
    api: str
    ids: list[str]
    fraction: float
    message: str | None


WorkerEvent = StartEvent | ProgressEvent


class OutcomesEvent(TypedDict):
    key: str
    outcomes: list[Outcome]


def error_record(
    exc: BaseException, type_name: str | None = None, traceback_text: str | None = None
) -> ErrorRecord:
    """The one format of an error: type, message and traceback, each bounded in size."""
    text = traceback_text if traceback_text is not None else "".join(tb.format_exception(exc))
    return {
        "type": type_name or type(exc).__name__,
        "message": str(exc)[:MAX_ERROR_MESSAGE],
        "traceback": text[-MAX_ERROR_TRACEBACK:],
    }
