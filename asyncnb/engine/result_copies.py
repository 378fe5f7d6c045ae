"""Copies of finished workloads' outcomes, written to storage paths named at submit.

A contract whose clients read results from storage (SageMaker Async's S3 output location)
names two paths when it submits: `output` gets the result's bytes, `failure` the error as JSON
(a failed or cancelled workload). `expect` writes a durable marker (`copies/{api}/{id}.json`)
before the workload is accepted, so what is owed survives a kill -9 anywhere after the 202:
the copy is made once the final record is persisted (`finished`, from `Engine.finish_many`),
and `reconcile`, at start and then every `interval_s`, makes the copies of finished workloads
whose markers are still there. A marker goes once its copy is written; at start, one whose
workload does not exist (its submit failed, or its record expired) is dropped. Writing a copy
twice writes the same bytes, so a crash between the copy and the marker's delete is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..contract.status import Status
from ..storage import Storage
from .background import BackgroundTasks
from .workload import WorkloadState

logger = logging.getLogger(__name__)

Getter = Callable[[str, str], Awaitable[WorkloadState | None]]


@dataclass(frozen=True)
class CopyTarget:
    """Storage paths (under the storage's root) for the result and for the error."""

    output: str
    failure: str

    def record(self) -> dict[str, str]:
        return {"output": self.output, "failure": self.failure}


class ResultCopies:
    def __init__(
        self,
        storage: Storage,
        io: Callable[..., Awaitable[Any]],
        tasks: BackgroundTasks,
        get: Getter,
        *,
        interval_s: float = 60.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        self.storage = storage
        self._io = io
        self._tasks = tasks
        self._get = get
        self.interval_s = interval_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self._owed: dict[str, tuple[str, CopyTarget]] = {}  # workload id: (api, where)
        self._copying: set[str] = set()

    def _inside(self, path: str) -> bool:
        return path.startswith(self.storage.root + "/")

    @property
    def owed(self) -> int:
        return len(self._owed)

    async def expect(self, api: str, workload_id: str, target: CopyTarget) -> None:
        """Owe a copy of the workload's outcome: durable before its submit is accepted."""
        if not (self._inside(target.output) and self._inside(target.failure)):
            raise ValueError("copies are written inside the storage's root only")
        marker = self.storage.copy_marker_path(api, workload_id)
        await self._io(self.storage.write_json, marker, target.record())
        self._owed[workload_id] = (api, target)

    async def forget(self, api: str, workload_id: str) -> None:
        """Owe nothing for a submit that was refused."""
        self._owed.pop(workload_id, None)
        await self._io(self.storage.delete, self.storage.copy_marker_path(api, workload_id))

    def finished(self, workload: WorkloadState) -> None:
        """The workload's final record is persisted: make its copy, if one is owed."""
        if workload.id in self._owed and workload.status.finished:
            self._tasks.spawn(self._copy(workload))

    async def _copy(self, workload: WorkloadState) -> bool:
        """Write the copy (a few tries); False leaves the marker for the next reconcile."""
        owed = self._owed.get(workload.id)
        if owed is None or workload.id in self._copying:
            return False
        self._copying.add(workload.id)
        try:
            for attempt in range(self.attempts):
                try:
                    await self._io(self._write, workload, owed[1])
                except Exception:
                    logger.warning(
                        "could not write the copy of %s (attempt %d)",
                        workload.id,
                        attempt + 1,
                        exc_info=True,
                    )
                    await asyncio.sleep(self.backoff_s * 2**attempt)
                    continue
                self._owed.pop(workload.id, None)
                return True
            return False
        finally:
            self._copying.discard(workload.id)

    def _write(self, workload: WorkloadState, target: CopyTarget) -> None:
        storage = self.storage
        if workload.status is Status.COMPLETED:
            data = workload.result_data
            if data is None:
                data = storage.read_bytes(storage.result_path(workload.api, workload.id))
            if data is None:
                raise OSError(f"the result of {workload.id} is not in storage")
            storage.write_bytes(target.output, data)
        else:
            error = workload.error or {
                "type": "Cancelled",
                "message": f"workload {workload.id} was cancelled",
            }
            storage.write_json(
                target.failure,
                {
                    "id": workload.id,
                    "api": workload.api,
                    "status": workload.status.value,
                    "error": error,
                },
            )
        storage.delete(storage.copy_marker_path(workload.api, workload.id))

    def _markers(self) -> list[tuple[str, str, dict[str, Any] | None]]:
        storage = self.storage
        found: list[tuple[str, str, dict[str, Any] | None]] = []
        for api in storage.list_names(storage.copies_dir()):
            for name in storage.list_names(storage.copies_dir(api)):
                if name.endswith(".json"):
                    workload_id = name.removesuffix(".json")
                    record = storage.read_json(storage.copy_marker_path(api, workload_id))
                    found.append((api, workload_id, record if isinstance(record, dict) else None))
        return found

    async def reconcile(self, *, startup: bool = False) -> int:
        """Take up every marker in storage; copy what finished. At `startup` (nothing is being
        submitted yet), a marker whose workload does not exist is dropped. Returns how many
        copies were started."""
        started = 0
        for api, workload_id, record in await self._io(self._markers):
            try:
                if record is None:
                    continue
                target = CopyTarget(str(record["output"]), str(record["failure"]))
                self._owed.setdefault(workload_id, (api, target))
                workload = await self._get(api, workload_id)
                if workload is None:
                    if startup:
                        await self.forget(api, workload_id)
                    continue
                if workload.status.finished and workload.id not in self._copying:
                    self._tasks.spawn(self._copy(workload))
                    started += 1
            except Exception:
                logger.warning("could not take up the copy owed for %s", workload_id, exc_info=True)
        return started

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.reconcile()
            except Exception:
                logger.warning("could not reconcile the copies owed", exc_info=True)
