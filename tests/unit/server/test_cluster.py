"""The cluster the gateway owns (server/cluster.py), started again when its scheduler stops:
real LocalClusters of this process (thread workers; the processes are tests/system's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from distributed import Client, LocalCluster

from asyncnb.contract.settings import GatewaySettings
from asyncnb.server.cluster import OwnedCluster, start_dask, stop_cluster, worker_bounds
from asyncnb.storage import Storage


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


async def local_cluster() -> Any:
    return await LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",  # not inproc://: a client may come from outside
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0", "dashboard": False},
        asynchronous=True,
    )


async def n_workers(client: Client, n: int) -> None:
    while len((await client.scheduler.identity())["workers"]) != n:
        await asyncio.sleep(0.01)


async def shut_down_from_outside(address: str) -> None:
    """What anyone may do to a scheduler they can reach: `Client(address).shutdown()`."""
    outsider = await Client(address, asynchronous=True)
    await outsider.shutdown()


def test_a_cluster_whose_scheduler_was_shut_down_is_started_again_at_its_size() -> None:
    async def scenario() -> None:
        owned = OwnedCluster(local_cluster)
        client = await owned.start()
        try:
            await owned.scale(2)  # the autoscaler sized it
            await n_workers(client, 2)
            old, address = owned.current, client.scheduler.address
            assert not owned.scheduler_stopped()
            await shut_down_from_outside(address)
            assert owned.scheduler_stopped()
            await client.close()  # the backend's part
            client = await owned.restart()
            assert old.status.name == "closed"  # what was left of it
            assert owned.current is not old and client.scheduler.address != address
            assert len(owned.worker_spec) == 2  # as the old one was sized
            await n_workers(client, 2)
            assert not owned.scheduler_stopped() and owned.restarts == 1
        finally:
            await client.close()
            await stop_cluster(owned)
        assert owned.current.status.name == "closed"  # the shutdown closed the new one

    run(scenario)


def test_scaling_asked_for_during_a_restart_applies_to_the_new_cluster() -> None:
    async def scenario() -> None:
        owned: OwnedCluster

        async def start() -> Any:
            if owned.current is not None:  # a restart: the autoscaler acts meanwhile
                assert owned.scale(3) is None
            return await local_cluster()

        owned = OwnedCluster(start)
        client = await owned.start()
        await shut_down_from_outside(client.scheduler.address)
        await client.close()
        client = await owned.restart()
        try:
            assert len(owned.worker_spec) == 3
            await n_workers(client, 3)
        finally:
            await client.close()
            await stop_cluster(owned)

    run(scenario)


def test_a_stopping_gateway_starts_no_new_cluster() -> None:
    async def scenario() -> None:
        owned = OwnedCluster(local_cluster)
        client = await owned.start()
        await client.close()
        await stop_cluster(owned)
        assert owned.current.scheduler.status.name == "closed"
        assert not owned.scheduler_stopped()  # closed by the gateway: nothing to restart
        with pytest.raises(RuntimeError, match="stopping"):
            await owned.restart()

    run(scenario)


def test_a_cluster_started_while_the_gateway_began_to_stop_is_closed_again() -> None:
    async def scenario() -> None:
        owned: OwnedCluster
        started: list[Any] = []

        async def start() -> Any:
            if owned.current is not None:  # a restart, during which the gateway stops
                await stop_cluster(owned)
            started.append(await local_cluster())
            return started[-1]

        owned = OwnedCluster(start)
        client = await owned.start()
        await shut_down_from_outside(client.scheduler.address)
        await client.close()
        with pytest.raises(RuntimeError, match="stopping"):
            await owned.restart()
        assert [c.status.name for c in started] == ["closed", "closed"]

    run(scenario)


def test_start_dask_owns_the_local_cluster_and_stands_it_in_for_the_scaler() -> None:
    async def scenario() -> None:
        settings = GatewaySettings(storage=f"memory://unit-{uuid.uuid4().hex}", n_workers=1)
        client, owned = await start_dask(settings, Storage(settings.storage))
        try:
            assert isinstance(owned, OwnedCluster)
            assert worker_bounds(settings, owned) == {"min_workers": 1, "max_workers": 1}
            assert owned.new_spec == owned.current.new_spec  # what the scaler reads
            await n_workers(client, 1)
        finally:
            await client.close()
            await stop_cluster(owned)

    run(scenario)


def test_an_external_scheduler_is_not_owned(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = await local_cluster()
        try:
            settings = GatewaySettings(storage=str(tmp_path), scheduler=cluster.scheduler_address)
            client, owned = await start_dask(settings, Storage(settings.storage))
            await client.close()
            assert owned is None  # only reconnected to, never started again
        finally:
            await cluster.close()

    run(scenario)
