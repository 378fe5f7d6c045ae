"""Throughput and latency of an API's recent workloads: the `stats` of its status record.

`Engine.finish_many` records each completed or failed workload (cancellations are not work
done); `summary` answers the figures over the last `window_s` seconds. Memory is bounded: the
last `capacity` finishes are kept, so under a rate above `capacity / window_s` the figures
cover the last `capacity` finishes, and `window_s` in the answer says how many seconds those
span.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

WINDOW_S = 60.0
CAPACITY = 10_000


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of a sorted, non-empty list."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class RecentFinishes:
    def __init__(self, window_s: float = WINDOW_S, capacity: int = CAPACITY) -> None:
        self.window_s = window_s
        # (when the gateway saw it end, end-to-end latency in seconds, failed)
        self._ends: deque[tuple[float, float, bool]] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._ends)

    def record(self, now: float, latency_s: float, failed: bool) -> None:
        self._ends.append((now, max(0.0, latency_s), failed))

    def summary(self, now: float) -> dict[str, Any]:
        since = now - self.window_s
        latencies: list[float] = []
        failed = 0
        for ended, latency, did_fail in reversed(self._ends):
            if ended < since:
                break
            latencies.append(latency)
            failed += did_fail
        span = self.window_s
        if len(self._ends) == self._ends.maxlen and latencies and self._ends[0][0] >= since:
            # Full, and the oldest kept finish is inside the window: older ones were dropped.
            span = max(now - self._ends[0][0], 1e-3)
        latencies.sort()
        completed = len(latencies) - failed
        return {
            "window_s": round(span, 3),
            "finished": len(latencies),
            "completed": completed,
            "failed": failed,
            "completed_per_s": round(completed / span, 3),
            "latency_p50_s": round(percentile(latencies, 0.5), 4) if latencies else None,
            "latency_p95_s": round(percentile(latencies, 0.95), 4) if latencies else None,
        }
