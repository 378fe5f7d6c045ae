"""Cortex's queue-based autoscaling algorithm, as pure logic (no clock, no cluster).

Every interval the gateway feeds one sample of in-flight work (queued + running) and the
current replica count; `recommend` answers the replicas wanted and why. Cortex's rules:

1. average in-flight over `window`; raw = ceil(average / target_in_flight);
2. keep the current count when raw is within `upscale_tolerance` / `downscale_tolerance`;
3. bound one step to [min(cur-1, ceil(cur*max_downscale_factor)),
   max(cur+1, ceil(cur*max_upscale_factor))];
4. clamp to [min_replicas, max_replicas];
5. never go below the highest recommendation of the last `downscale_stabilization_period`,
   nor above the lowest of the last `upscale_stabilization_period` (and do not scale in a
   direction during its first stabilization period after start).

The bounds of step 4 hold even while stabilizing: a current count outside them (after a
deploy or a change of the bounds) goes to the nearest bound at once.

One deliberate departure: work waiting on zero replicas scales to one at once. Cortex's
stabilization would hold a scale-to-zero API at zero for a whole upscale period.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from ..contract.options import APIOptions


@dataclass(frozen=True)
class Recommendation:
    replicas: int
    reason: str


class Autoscaler:
    def __init__(self, options: APIOptions, started_at: float) -> None:
        self.options = options
        self.started_at = started_at
        self._samples: deque[tuple[float, float]] = deque()
        self._recommendations: deque[tuple[float, int]] = deque()

    def recommend(self, now: float, in_flight: float, current: int) -> Recommendation:
        o = self.options
        self._samples.append((now, float(in_flight)))
        while self._samples and self._samples[0][0] <= now - o.window:
            self._samples.popleft()
        average = sum(v for _, v in self._samples) / len(self._samples)
        raw = math.ceil(average / o.effective_target_in_flight - 1e-9)
        reason = f"average in-flight {average:.2f} / target {o.effective_target_in_flight:g}"

        request = raw
        ratio = average / o.effective_target_in_flight / current if current else 0.0
        if current > 0 and raw > current and ratio - 1 <= o.upscale_tolerance + 1e-9:
            request, reason = current, f"{reason}, within upscale tolerance"
        elif current > 0 and raw < current and 1 - ratio <= o.downscale_tolerance + 1e-9:
            request, reason = current, f"{reason}, within downscale tolerance"

        lowest = min(current - 1, math.ceil(current * o.max_downscale_factor))
        highest = max(current + 1, math.ceil(current * o.max_upscale_factor))
        if request > highest:
            request, reason = highest, f"{reason}, step bounded by max_upscale_factor"
        elif request < lowest:
            request, reason = lowest, f"{reason}, step bounded by max_downscale_factor"
        request = max(o.min_replicas, min(o.max_replicas, request))

        self._recommendations.append((now, request))
        horizon = max(o.upscale_stabilization_period, o.downscale_stabilization_period)
        while self._recommendations and self._recommendations[0][0] < now - horizon:
            self._recommendations.popleft()

        # The bounds are hard, even while stabilizing (a deploy or `PATCH /apis/{api}` may
        # have just moved them): a count outside them goes to the nearest bound at once.
        if current < o.min_replicas:
            return Recommendation(o.min_replicas, f"below min_replicas {o.min_replicas}")
        if current > o.max_replicas:
            return Recommendation(o.max_replicas, f"above max_replicas {o.max_replicas}")
        if current == 0 and in_flight > 0 and o.max_replicas > 0:
            return Recommendation(max(1, request), "work is waiting on zero replicas")
        if request > current:
            if now < self.started_at + o.upscale_stabilization_period:
                return Recommendation(current, "no upscaling during the first stabilization")
            ceiling = min(self._since(now, o.upscale_stabilization_period))
            if request > ceiling:
                request = max(ceiling, current)
                reason = f"{reason}, held by upscale stabilization"
        elif request < current:
            if now < self.started_at + o.downscale_stabilization_period:
                return Recommendation(current, "no downscaling during the first stabilization")
            floor = max(self._since(now, o.downscale_stabilization_period))
            if request < floor:
                request = min(floor, current)
                reason = f"{reason}, held by downscale stabilization"
        return Recommendation(request, reason)

    def _since(self, now: float, period: float) -> list[int]:
        """Recommendations of the last `period` seconds (always including this one)."""
        return [r for t, r in self._recommendations if t >= now - period]
