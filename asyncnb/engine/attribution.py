"""Who submits to an API: per-submitter counts for `/metrics`, the API record and the
dashboard, with a bounded number of submitters so a metric's labels stay few."""

from __future__ import annotations

from typing import Any

from ..contract.status import Status

OTHERS = "(others)"  # not a valid key name, so it can never be confused with one
MAX_SUBMITTERS = 50


class SubmitterCounts:
    """Counts per submitter name; past `limit` names, newcomers count under OTHERS."""

    def __init__(self, limit: int = MAX_SUBMITTERS) -> None:
        self.limit = limit
        self._counts: dict[str, dict[str, int]] = {}

    def _row(self, name: str) -> dict[str, int]:
        row = self._counts.get(name)
        if row is None:
            if len(self._counts) >= self.limit and name != OTHERS:
                return self._row(OTHERS)
            row = self._counts[name] = {
                "submitted": 0,
                "completed": 0,
                "failed": 0,
                "cancelled": 0,
            }
        return row

    def submitted(self, name: str) -> None:
        self._row(name)["submitted"] += 1

    def finished(self, name: str, status: Status) -> None:
        self._row(name)[status.value] += 1

    def rows(self) -> dict[str, dict[str, int]]:
        return {name: dict(row) for name, row in self._counts.items()}

    def public(self) -> list[dict[str, Any]]:
        """Busiest first: each submitter with its counts and unfinished workloads."""
        busiest = sorted(self._counts.items(), key=lambda item: (-item[1]["submitted"], item[0]))
        return [
            {
                "submitted_by": name,
                **row,
                "unfinished": row["submitted"]
                - row["completed"]
                - row["failed"]
                - row["cancelled"],
            }
            for name, row in busiest
        ]
