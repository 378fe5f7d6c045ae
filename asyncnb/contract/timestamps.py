"""Timestamps as the HTTP API writes them: ISO 8601 in UTC with a `Z`."""

from __future__ import annotations

import functools
from datetime import datetime, timezone


def isoformat(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return _isoformat(stamp)


@functools.lru_cache(maxsize=1 << 16)
def _isoformat(stamp: float) -> str:
    # Every poll renders the same few stamps of a workload again (~4 % of the gateway's CPU
    # under load before this cache).
    return datetime.fromtimestamp(stamp, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
