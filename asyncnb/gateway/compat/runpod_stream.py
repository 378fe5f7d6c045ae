"""RunPod's `stream`: each call answers the outputs made since the job's previous call.

The `runpod` client polls `GET /{api}/stream/{id}` and sends no position, so the gateway
keeps one per job: the last event id it answered (`StreamCursors`, in memory, the newest
`CAPACITY` jobs). The outputs are the workload's `output` events (engine/events.py), each
given once; the terminal event ends the stream with the job's final status. A workload that
completed without any output (a predictor that returns, not yields) gives its result as
one last chunk.

What a cursor does not survive: a gateway restart or a takeover by a standby, after which a
job's stream starts again from its first output.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ...contract.events import OUTPUT, TERMINAL_TYPES
from ...contract.status import Status
from ...engine import Engine
from ...engine.workload import WorkloadState

CAPACITY = 10_000
BATCH = 1000  # events read per call; a longer backlog comes over the next calls


@dataclass
class Cursor:
    after: int = 0  # the last event id answered
    outputs: int = 0  # outputs answered so far
    ended: bool = False  # the terminal event was answered
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one call at a time moves it


class StreamCursors:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cursors)

    def of(self, workload_id: str) -> Cursor:
        cursor = self._cursors.pop(workload_id, None) or Cursor()
        self._cursors[workload_id] = cursor
        while len(self._cursors) > self.capacity:
            self._cursors.popitem(last=False)
        return cursor


def output_value(event: dict[str, Any]) -> Any:
    """An output event's value as JSON: itself, a text, or base64 text (its `encoding`); one
    over the event size limit says so (the whole output is in the result)."""
    if event.get("truncated"):
        return {"truncated": True, "size": event.get("size")}
    return event.get("value")


@dataclass(frozen=True)
class Chunks:
    outputs: list[Any]
    ended: bool  # the workload's terminal event is behind the cursor: its status is final


async def next_chunks(
    engine: Engine,
    workload: WorkloadState,
    cursor: Cursor,
    result: Callable[[], Awaitable[Any]],
) -> Chunks:
    """The outputs after `cursor`, which moves past them; `result()` is the one chunk of a
    workload that completed without any output."""
    if cursor.ended:
        return Chunks([], True)
    outputs: list[Any] = []
    for event in await engine.events.history(workload, cursor.after, BATCH):
        cursor.after = int(event["event_id"])
        if event["type"] == OUTPUT:
            outputs.append(output_value(event))
        elif event["type"] in TERMINAL_TYPES:
            cursor.ended = True
            break
    if cursor.ended and not outputs and not cursor.outputs and workload.status is Status.COMPLETED:
        outputs.append(await result())
    cursor.outputs += len(outputs)
    return Chunks(outputs, cursor.ended)
