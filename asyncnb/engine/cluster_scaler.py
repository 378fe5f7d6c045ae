"""Acting on the autoscaler: every interval each API gets its recommendation, and a cluster
this gateway owns is sized to their sum (clamped to the cluster's bounds).

Without a cluster object (`--scheduler ADDRESS`) nothing can be acted on: the desired counts
are only published (`GET /{api}`, `/metrics`) for an external scaler such as KEDA or an HPA.
Scale-down retires idle workers only, so a running workload is never killed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from ..contract.timestamps import isoformat
from .api_state import APIState
from .workers import WorkerPool, satisfies

logger = logging.getLogger(__name__)


class ScalableCluster(Protocol):
    """What the scaler uses of a Dask cluster object (LocalCluster, SpecCluster, the
    dask-kubernetes and dask-jobqueue clusters...). `scale` and `scale_down` may be coroutines;
    `new_spec`, where there is one, is the template of the workers it adds."""

    def scale(self, n: int) -> Any: ...


class ClusterScaler:
    def __init__(
        self,
        apis: Mapping[str, APIState],
        workers: WorkerPool,
        cluster: ScalableCluster | None,
        *,
        interval: float = 10.0,
        min_workers: int = 0,
        max_workers: int | None = None,
    ) -> None:
        self.apis = apis
        self.workers = workers
        self.cluster = cluster
        self.interval = interval
        self.min_workers = min_workers
        self.max_workers = max_workers
        self.events: list[dict[str, Any]] = []
        self._requested: int | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("autoscaling tick failed")

    def can_provide(self, resources: dict[str, float]) -> bool:
        """Whether this gateway could add a worker offering `resources`."""
        if self.cluster is None or (self.max_workers is not None and self.max_workers <= 0):
            return False
        template = getattr(self.cluster, "new_spec", None) or {}
        offered = (template.get("options") or {}).get("resources") or {}
        return satisfies(offered, resources)

    async def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for state in list(self.apis.values()):
            self._recommend(state, now)
        if self.cluster is not None:
            await self._size_cluster()

    def _recommend(self, state: APIState, now: float) -> None:
        recommendation = state.autoscaler.recommend(now, state.in_flight, state.workers)
        if recommendation.replicas != state.desired_workers:
            state.record_scaling(
                now, state.desired_workers, recommendation.replicas, recommendation.reason
            )
            state.desired_workers = recommendation.replicas
        wanted = state.options.dask_resources()
        if state.workers == 0 and state.in_flight + state.desired_workers > 0:
            state.blocked = (
                None
                if self.can_provide(wanted)
                else (f"no worker offers {wanted or 'the API'} and none can be added")
            )
        else:
            state.blocked = None

    def _bounded(self, wanted: int) -> int:
        wanted = max(self.min_workers, wanted)
        return wanted if self.max_workers is None else min(self.max_workers, wanted)

    async def _size_cluster(self) -> None:
        cluster: Any = self.cluster
        target = self._bounded(sum(s.desired_workers for s in self.apis.values()))
        workers = self.workers.addresses()
        current = len(workers)
        if target > current:
            if self._requested != target:  # workers take a while to start: ask once
                await self._act(cluster.scale(target))
                self._event(current, target, "scale up")
            self._requested = target
        elif target < current:
            retire = [a for a in workers if self.workers.is_idle(a)][: current - target]
            if not retire:
                return
            scale_down = getattr(cluster, "scale_down", None)
            if scale_down is not None:
                await self._act(scale_down([self.workers.name(a) for a in retire]))
            else:
                await self._act(cluster.scale(current - len(retire)))
            self._requested = current - len(retire)
            self._event(current, self._requested, f"retire {len(retire)} idle workers")
        else:
            self._requested = target

    @staticmethod
    async def _act(result: Any) -> None:
        if inspect.isawaitable(result):
            await result

    def _event(self, before: int, after: int, reason: str) -> None:
        event = {"time": isoformat(time.time()), "from": before, "to": after, "reason": reason}
        logger.info("cluster %s: %d → %d workers", reason, before, after)
        self.events.append(event)
        del self.events[:-50]
