"""Outcomes that ask for a recycle restart their worker, after they are applied."""

from __future__ import annotations

import asyncio

from asyncnb.contract.status import Status
from asyncnb.engine.backends.fake import FakeBackend

from .harness import dispatcher, failed_outcome, new_workload, ok_outcome, ready_api, until


def test_recycle_flag_restarts_the_worker_once_outcomes_are_applied() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api(max_retries=0)
        built, finished = dispatcher(backend, state)
        await built.start()
        hung, fine = new_workload(state.name), new_workload(state.name)
        state.queue.push(hung)
        state.queue.push(fine)
        built.wake()
        await until(lambda: backend.pending())
        [task] = backend.pending()
        task.start()
        outcomes = [failed_outcome(hung.id), ok_outcome(fine.id)]
        outcomes[0]["error"]["type"] = "Timeout"
        for outcome in outcomes:
            outcome["recycle"] = True
            outcome["worker"] = "tcp://worker-0"
        task.publish(outcomes)
        await until(lambda: backend.recycled)
        assert backend.recycled == [(task.key, "tcp://worker-0")]
        # applied first: the hung one failed with Timeout, the other completed
        assert finished.statuses() == {hung.id: Status.FAILED, fine.id: Status.COMPLETED}
        await built.close()

    asyncio.run(scenario())


def test_ordinary_outcomes_restart_nothing() -> None:
    async def scenario() -> None:
        backend = FakeBackend(workers=1)
        state = ready_api()
        built, finished = dispatcher(backend, state)
        await built.start()
        state.queue.push(new_workload(state.name))
        built.wake()
        await until(lambda: backend.pending())
        [task] = backend.pending()
        task.succeed()
        await until(lambda: finished.endings)
        await asyncio.sleep(0.05)
        assert backend.recycled == []
        await built.close()

    asyncio.run(scenario())
