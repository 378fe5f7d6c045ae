"""A real Engine (or Dispatcher) over the in-process fake backend, and helpers to drive it."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import cloudpickle

from asyncnb.contract.options import APIOptions
from asyncnb.contract.status import APIPhase, Status
from asyncnb.contract.tasks import Outcome
from asyncnb.engine import Engine, EngineSettings
from asyncnb.engine.api_state import APIState
from asyncnb.engine.backends.fake import FakeBackend
from asyncnb.engine.background import BackgroundTasks
from asyncnb.engine.dispatch import Dispatcher
from asyncnb.engine.metrics import GatewayMetrics
from asyncnb.engine.workload import Ending, WorkloadState
from asyncnb.storage import Storage

_ids = itertools.count(1)


class Echo:
    def predict(self, payload: Any) -> Any:
        return {"echo": payload}


def asynctest(func: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run the coroutine test on a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(func(*args, **kwargs))

    return run


async def until(probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `probe` on the running loop until it is truthy (the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.002)


def memory_storage() -> Storage:
    return Storage(f"memory://unit-{uuid.uuid4().hex}")


def new_workload(api: str, body: bytes = b"{}", priority: int = 0, **kw: Any) -> WorkloadState:
    return WorkloadState(
        f"{next(_ids):032x}",
        api,
        created_at=time.time(),
        content_type="application/json",
        priority=priority,
        body=body,
        size=len(body),
        **kw,
    )


def ok_outcome(workload_id: str, value: bytes = b'"ok"') -> Outcome:
    now = time.time()
    return {
        "id": workload_id,
        "ok": True,
        "content_type": "application/json",
        "size": len(value),
        "data": value,
        "started_at": now,
        "finished_at": now,
    }


def failed_outcome(workload_id: str, message: str = "boom", **extra: bool) -> Outcome:
    now = time.time()
    outcome: Outcome = {
        "id": workload_id,
        "ok": False,
        "error": {"type": "ValueError", "message": message, "traceback": "Traceback ..."},
        "started_at": now,
        "finished_at": now,
    }
    if extra.get("init_failed"):
        outcome["init_failed"] = True
    return outcome


# a Dispatcher alone ---------------------------------------------------------------------------
class Finished:
    """The dispatcher's `finish` collaborator, recording what it was asked to persist."""

    def __init__(self) -> None:
        self.endings: list[Ending] = []
        self.fail = False

    async def __call__(self, state: APIState, endings: list[Ending]) -> None:
        if self.fail:
            raise OSError("storage is down")
        for workload, status, error in endings:
            workload.status, workload.error = status, error
            state.running.pop(workload.id, None)
        self.endings += endings

    def statuses(self) -> dict[str, Status]:
        return {w.id: status for w, status, _ in self.endings}


def ready_api(name: str = "api", **options: Any) -> APIState:
    state = APIState(name, 1, APIOptions(**options), None, "whsec_" + "A" * 43)
    state.state = APIPhase.READY
    return state


def dispatcher(
    backend: FakeBackend, *states: APIState, **settings: Any
) -> tuple[Dispatcher, Finished]:
    finished = Finished()
    apis = {state.name: state for state in states}
    built = Dispatcher(
        backend,
        apis,
        finish=finished,
        storage=memory_storage().describe(),
        metrics=GatewayMetrics(lambda: []),
        tasks=BackgroundTasks(),
        **settings,
    )
    return built, finished


# a whole Engine -------------------------------------------------------------------------------
def engine(backend: FakeBackend, storage: Storage | None = None, **settings: Any) -> Engine:
    return Engine(storage or memory_storage(), backend, EngineSettings(**settings))


async def deploy(engine: Engine, name: str = "api", cls: type = Echo, **options: Any) -> APIState:
    state, _ = await engine.deploy(name, cloudpickle.dumps(cls), None, APIOptions(**options))
    await until(lambda: state.state is not APIPhase.DEPLOYING)
    return state


async def submit(
    engine: Engine, state: APIState, body: bytes = b"{}", priority: int = 0, **kw: Any
) -> WorkloadState:
    return await engine.accept(state, new_workload(state.name, body, priority, **kw))
