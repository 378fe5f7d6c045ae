"""A gateway renews its lease in the background, and stops when it cannot (self-fencing)."""

from __future__ import annotations

import asyncio
import time

from asyncnb.engine.lease import ObjectLease
from asyncnb.server.serve import _renew_until_lost

from ..engine.test_lease import FakeObjects


def test_renewal_keeps_the_lease_then_gives_up_at_the_ttl_when_storage_fails() -> None:
    async def scenario() -> None:
        objects = FakeObjects()
        lease = ObjectLease(objects, "http://a", 0.6)
        assert lease.acquire()
        renewing = asyncio.ensure_future(_renew_until_lost(lease))
        await asyncio.sleep(1.0)  # well past one TTL: renewed meanwhile
        assert not renewing.done() and objects.writes >= 3
        objects.fail = True
        failed_at = time.monotonic()
        await asyncio.wait_for(renewing, 2)
        assert time.monotonic() - failed_at < 0.6

    asyncio.run(scenario())


def test_renewal_stops_at_once_when_taken_over() -> None:
    async def scenario() -> None:
        objects = FakeObjects()
        lease = ObjectLease(objects, "http://a", 0.6)
        assert lease.acquire()
        renewing = asyncio.ensure_future(_renew_until_lost(lease))
        objects.data = b'{"holder": "b", "epoch": 2, "expires_at": 1e12}'
        await asyncio.wait_for(renewing, 1)
        assert lease.epoch is None

    asyncio.run(scenario())
