"""A workload's events in storage: append-only segments, one object per flush.

Object stores have no append, so every flush writes a new segment named by its first event id
(`workloads/<api>/<id>/events/000000000042.jsonl`, one JSON event per line). Reading after an
id lists the segments and reads from the last one that starts at or before it. The segments
live in the workload's folder and expire with it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..storage import Storage
from . import jsoncodec

logger = logging.getLogger(__name__)


class EventStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, api: str, workload_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        path = self.storage.event_segment_path(api, workload_id, int(events[0]["event_id"]))
        self.storage.write_bytes(path, b"".join(jsoncodec.dumps(e) + b"\n" for e in events))

    def segment_starts(self, api: str, workload_id: str) -> list[int]:
        starts = []
        for name in self.storage.list_names(self.storage.events_dir(api, workload_id)):
            stem = name.rsplit("/", 1)[-1].removesuffix(".jsonl")
            if stem.isdigit():
                starts.append(int(stem))
        return sorted(starts)

    def _segment(self, api: str, workload_id: str, start: int) -> list[dict[str, Any]]:
        data = self.storage.read_bytes(self.storage.event_segment_path(api, workload_id, start))
        events = []
        for line in (data or b"").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                # A torn write of a crashed gateway: the events before it still count.
                logger.warning("skipping an unreadable event line of %s", workload_id)
        return events

    def read(
        self, api: str, workload_id: str, after: int = 0, before: int | None = None
    ) -> list[dict[str, Any]]:
        """The stored events with `after < event_id < before`, in order, each once."""
        starts = self.segment_starts(api, workload_id)
        first = 0
        for index, start in enumerate(starts):
            if start <= after + 1:
                first = index
        found: list[dict[str, Any]] = []
        last = after
        for start in starts[first:]:
            if before is not None and start >= before:
                break
            for event in self._segment(api, workload_id, start):
                event_id = int(event.get("event_id", 0))
                if event_id <= last or (before is not None and event_id >= before):
                    continue
                found.append(event)
                last = event_id
        return found

    def tail(self, api: str, workload_id: str) -> tuple[int, int]:
        """(the last stored event id, the last attempt an event names); (0, 0) for none."""
        starts = self.segment_starts(api, workload_id)
        for start in reversed(starts):
            events = self._segment(api, workload_id, start)
            if events:
                last_attempt = max(int(e.get("attempt") or 0) for e in events)
                return int(events[-1]["event_id"]), last_attempt
        return 0, 0
