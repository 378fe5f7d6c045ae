"""asyncio helpers for the gateway's hot paths."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(step: Awaitable[T], timeout_s: float | None) -> T:
    """`await step`, raising TimeoutError after `timeout_s`; unlike `asyncio.wait_for`, starts
    no task per call on Python 3.11+ (wait_for took ~4 % of the gateway's CPU under load)."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout_s):
            return await step
    try:
        return await asyncio.wait_for(step, timeout_s)
    except asyncio.TimeoutError:
        raise TimeoutError from None
