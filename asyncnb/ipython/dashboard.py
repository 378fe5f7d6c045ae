"""The live notebook dashboard of an API (ipywidgets 8): a view of `AsyncAPI.watch`.

The data loop is the client's (`watch`: the public HTTP API, the same one a colleague uses,
about once a second); this widget only renders each snapshot, batching trait changes with
`hold_sync`. One task on the kernel's event loop drives it, and stops when the widget is
closed or the kernel's loop ends. Nothing runs on a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import ipywidgets as widgets
from traitlets import Int, Unicode

from ..client import APISnapshot, AsyncAPI
from . import templates


class APIDashboard(widgets.VBox):
    """Name, version, state, endpoint, counts, scaling and recent workloads of one API."""

    state = Unicode("")
    version = Int(0)
    queue_depth = Int(0)
    in_progress = Int(0)
    completed = Int(0)
    failed = Int(0)
    workers = Int(0)
    desired_workers = Int(0)

    def __init__(self, api: AsyncAPI, interval: float = 1.0, recent: int = 8) -> None:
        self._api = api
        self._interval = interval
        self._recent = recent
        self._history: deque[int] = deque(maxlen=60)
        self._task: asyncio.Task[None] | None = None
        self.header = widgets.HTML()
        self.counts = widgets.HTML()
        self.scaling = widgets.HTML()
        self.table = widgets.HTML()
        super().__init__([self.header, self.counts, self.scaling, self.table])
        self.add_class("asyncnb-dashboard")
        self.refresh()
        self.start()

    # refreshing --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Fetch and show the API's status now (blocking; the periodic task uses the async one)."""
        try:
            status = self._api.status()
            rows = self._api.workloads(limit=self._recent)
        except Exception as exc:
            self._show_error(exc)
            return
        self._render(status, rows)

    def show(self, snapshot: APISnapshot) -> None:
        if snapshot.status is None:
            self._show_error(snapshot.error or RuntimeError("no status"))
        else:
            self._render(snapshot.status, snapshot.workloads)

    def _render(self, status: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self._history.append(int(status.get("queue_depth", 0)))
        endpoint = self._api.url
        curl = f"curl -s -X POST {endpoint} -H 'Content-Type: application/json' -d '{{}}'"
        with self.hold_sync():
            self.state = str(status.get("state", ""))
            self.version = int(status.get("version", 0))
            for name in (
                "queue_depth",
                "in_progress",
                "completed",
                "failed",
                "workers",
                "desired_workers",
            ):
                setattr(self, name, int(status.get(name, 0)))
            self.header.value = templates.header(status, endpoint, curl)
            self.counts.value = templates.counts(status, list(self._history))
            self.scaling.value = templates.scaling(status)
            self.table.value = templates.workloads(rows)

    def _show_error(self, exc: BaseException) -> None:
        self.header.value = (
            f"<b>{self._api.name}</b> <span style='color:#cf222e'>cannot reach the gateway: "
            f"{type(exc).__name__}</span>"
        )

    # the periodic task ---------------------------------------------------------------------
    def start(self) -> None:
        """Refresh periodically on the running event loop (a kernel's); no-op without one."""
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        snapshots = self._api.watch(self._interval, self._recent)
        async with contextlib.aclosing(snapshots):  # type: ignore[type-var]
            async for snapshot in snapshots:
                if self.comm is None:
                    return
                self.show(snapshot)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        super().close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
