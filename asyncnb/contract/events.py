"""A workload's events: what it emitted while it ran, as every side sees them.

Workers publish outputs (each `yield` of a generator predictor, or `asyncnb.emit(value)`) and
log lines (stdout, stderr and `logging` records written while the workload runs) as batched
`StreamMessage`s on the Dask event topic, each item numbered (`seq`) within its chunk. The
gateway is the one sequencer: it gives every event of a workload an `event_id` that increases
across the workload's whole life (attempts included), keeps a bounded window in memory,
persists the rest to storage in segments, and serves them as Server-Sent Events, webhooks and
`/logs`.

The event a client sees (`data:` of the SSE stream, one element of a webhook's `events`):

    {"event_id": 7, "type": "output", "id": "<workload id>", "api": "echo", "attempt": 1,
     "timestamp": "2026-12-02T10:00:00.123Z", "value": ..., "encoding": "json"}

- `start`: the attempt began on a worker (`worker` may say which);
- `progress`: `fraction` (0..1) and `message` (None or text), as `report_progress` sent them;
- `output`: `index` (its position among the attempt's outputs, from 0), `value` and
  `encoding`: "json" (any JSON value), "text" (a str output), or
  "base64" (bytes, or anything else the result codecs encode, with its `content_type`). A
  generator's result is the JSON list of these `value`s (yielded or `emit`ted), in order, of
  its last attempt; a `predict` that returns a value keeps it as its result. An
  output over `MAX_OUTPUT_EVENT_BYTES` carries no value but `truncated: true` and its `size`
  (it is in the result);
- `log`: `line` (one line, without its newline, at most `MAX_LOG_LINE` characters), `stream`
  ("stdout", "stderr" or "logging") and, for logging, `level`. Past `LOG_CAP_BYTES` of an
  attempt's lines, one last line says so (`/logs` keeps the newest `LOG_CAP_BYTES`);
- a terminal event, `completed`, `failed` or `cancelled`: the workload's status record (the
  same as `GET /{api}/{id}`) with `type`, `attempt`, `timestamp` and `event_id` added. Nothing
  comes after it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, Literal, TypedDict

from typing_extensions import NotRequired

START = "start"
PROGRESS = "progress"
OUTPUT = "output"
LOG = "log"
TERMINAL_TYPES = ("completed", "failed", "cancelled")
EVENT_TYPES = (START, PROGRESS, OUTPUT, LOG, *TERMINAL_TYPES)
# What a webhook gets unless the submitter or the deploy says otherwise: as before streaming.
DEFAULT_WEBHOOK_EVENTS = TERMINAL_TYPES

# Limits, documented in docs/http-api.md.
# An output's encoded size past which its event carries no value (it is in the result). Small,
# because the events travel through the Dask scheduler, which keeps its topics' last 1,000.
MAX_OUTPUT_EVENT_BYTES = 64 * 1024
MAX_LOG_LINE = 8 * 1024  # characters of one log line; the rest is cut, with an ellipsis
LOG_CAP_BYTES = 1024 * 1024  # a workload attempt's log: the newest this many bytes are kept
SSE_KEEPALIVE_S = 15.0  # a comment line this often, so proxies keep an idle stream open
WEBHOOK_COALESCE_S = 0.5  # at most one output/log/progress delivery per workload this often

WEBHOOK_EVENTS_HEADER = "X-Webhook-Events"


class StreamItem(TypedDict):
    """One output or log line of one workload, from the worker."""

    id: str  # the workload
    attempt: int  # ChunkItem["attempt"] of the run that emitted it
    seq: int  # order among this workload's items of this attempt, from 0
    type: Literal["output", "log"]
    t: float  # epoch seconds, on the worker
    index: NotRequired[int]  # outputs: the position among this attempt's outputs, from 0
    value: NotRequired[Any]
    encoding: NotRequired[str]
    content_type: NotRequired[str]
    truncated: NotRequired[bool]
    size: NotRequired[int]
    line: NotRequired[str]
    stream: NotRequired[str]
    level: NotRequired[str]


class StreamMessage(TypedDict):
    """A worker's batch of stream items (on the Dask event topic, next to start/progress): at
    most one per chunk every 50 ms (or per ~256 KiB of items), after the chunk's StartEvent and
    before its outcomes; a chunk's items of several workloads may share one message."""

    kind: Literal["stream"]
    api: str
    key: str | None  # the Dask key of the chunk's task: items of an old attempt are ignored
    items: list[StreamItem]


def parse_event_types(
    text: str | Iterable[str], *, what: str = WEBHOOK_EVENTS_HEADER
) -> tuple[str, ...]:
    """`"start,output,completed"` (or a list) → the event types, in EVENT_TYPES order;
    ValueError naming the unknown ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    chosen = {name.strip().lower() for name in names if name and name.strip()}
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise ValueError(
            f"{what}: unknown event type(s) {', '.join(unknown)}; "
            f"choose from {', '.join(EVENT_TYPES)}"
        )
    if not chosen:
        raise ValueError(f"{what}: name at least one of {', '.join(EVENT_TYPES)}")
    return tuple(name for name in EVENT_TYPES if name in chosen)


def encode_output(data: bytes, content_type: str, original: Any) -> dict[str, Any]:
    """An output's `value` and `encoding`, from the result codec's encoding (`data`,
    `content_type`) of the value the predictor yielded (`original`)."""
    if isinstance(original, str):
        return {"value": original, "encoding": "text"}
    if content_type.startswith("application/json"):
        return {"value": json.loads(data), "encoding": "json"}
    return {
        "value": base64.b64encode(data).decode("ascii"),
        "encoding": "base64",
        "content_type": content_type,
    }


def output_event_fields(data: bytes, content_type: str, original: Any) -> dict[str, Any]:
    """What an output's event carries: `encode_output`, or past MAX_OUTPUT_EVENT_BYTES only
    its size (the value is in the result)."""
    if len(data) > MAX_OUTPUT_EVENT_BYTES:
        return {"truncated": True, "size": len(data), "content_type": content_type}
    return encode_output(data, content_type, original)


def decode_output(event: dict[str, Any]) -> Any:
    """The value an output event carries, in its type (bytes for base64); None if truncated."""
    if event.get("truncated"):
        return None
    value = event.get("value")
    if event.get("encoding") == "base64" and isinstance(value, str):
        return base64.b64decode(value)
    return value
