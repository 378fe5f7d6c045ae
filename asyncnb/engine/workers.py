"""The workers the scheduler reported last, and what this gateway has running on each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .backends.base import WorkerInfo


def satisfies(offered: Mapping[str, float], wanted: Mapping[str, float]) -> bool:
    """Whether a worker offering `offered` can run a task asking for `wanted`."""
    return all(offered.get(name, 0) >= amount for name, amount in wanted.items())


class WorkerPool:
    def __init__(self) -> None:
        self._workers: dict[str, WorkerInfo] = {}
        self._chunks_on: dict[str, int] = {}  # worker address → our chunks running there
        self.warming = 0  # deploy warm-ups not answered yet

    def update(self, workers: dict[str, WorkerInfo]) -> None:
        self._workers = dict(workers)

    def clear(self) -> None:
        """Nothing is dispatched to workers we cannot see; they may be gone for good."""
        self._workers = {}

    def addresses(self) -> list[str]:
        return list(self._workers)

    def name(self, address: str) -> Any:
        info = self._workers.get(address)
        return info.name if info is not None else address

    def eligible(self, wanted: Mapping[str, float]) -> list[str]:
        return [a for a, w in self._workers.items() if satisfies(w.resources, wanted)]

    def count(self, wanted: Mapping[str, float]) -> int:
        return sum(1 for w in self._workers.values() if satisfies(w.resources, wanted))

    def least_loaded(self, wanted: Mapping[str, float]) -> str | None:
        """Where the next chunk goes: Dask alone may stack chunks on one multi-threaded worker."""
        eligible = self.eligible(wanted)
        if not eligible:
            return None
        return min(eligible, key=lambda address: self._chunks_on.get(address, 0))

    def placed(self, address: str | None) -> None:
        if address:
            self._chunks_on[address] = self._chunks_on.get(address, 0) + 1

    def left(self, address: str | None) -> None:
        if address and self._chunks_on.get(address):
            self._chunks_on[address] -= 1

    def chunks_on(self, address: str) -> int:
        return self._chunks_on.get(address, 0)

    def is_idle(self, address: str) -> bool:
        """No chunk of ours runs or waits there (and no deploy warm-up is pending)."""
        return not self._chunks_on.get(address) and not self.warming
