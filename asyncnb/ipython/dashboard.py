"""The live notebook dashboard of an API (ipywidgets 8): a view of `AsyncAPI.watch`.

The data loop is the client's (`watch`: the public HTTP API, the same one a colleague uses,
about once a second); this widget only renders each snapshot, batching trait changes with
`hold_sync`. One task on the kernel's event loop drives it, and stops when the widget is
closed or the kernel's loop ends. What a click asks for (a workload's details, a cancel, new
scaling bounds, a try-it submit) runs as a short task on the same loop, its HTTP call on a
worker thread (`asyncio.to_thread`), so the kernel never waits on the gateway.

It shows: state, endpoint and a curl line; counts, throughput and latency; a Vega-Lite plot of
the last ten minutes (`plot.py`); workers and the scaling bounds, with controls; the newest
workloads, where a click on a row shows that workload in full, with a cancel button; and a
box that submits a JSON payload.

The selected workload's details also show its last outputs and log lines as they come: one
more task, for that workload only, reads its event stream (`Workload.astream`, on the same
loop, no thread) and is cancelled when the selection changes or the widget closes; what it
reads is shown at most every RENDER_EVERY_S, the rest with the next snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol

import ipywidgets as widgets
from traitlets import Int, Unicode

from ..client import APISnapshot, FreshOutputs, describe_output
from . import templates
from .panels import DetailsPanel, ScalingControls, TryIt, WorkloadTable, holding
from .plot import Timeline

RENDER_EVERY_S = 0.25  # the details show what the event stream brought at most this often


# What the dashboard uses of an API handle (`asyncnb.client.AsyncAPI` and its `Workload`).
class WorkloadHandle(Protocol):
    @property
    def id(self) -> str: ...

    def info(self, wait: float = 0) -> dict[str, Any]: ...

    def cancel(self) -> dict[str, Any]: ...

    def astream(self, last_event_id: int | None = None) -> AsyncIterator[dict[str, Any]]: ...


class TokenHolder(Protocol):
    @property
    def token(self) -> str | None: ...


class DashboardAPI(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def client(self) -> TokenHolder: ...

    @property
    def last_payload_json(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...

    def workloads(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    def watch(self, interval: float = 1.0, recent: int = 8) -> AsyncIterator[APISnapshot]: ...

    def workload(self, workload_id: str) -> WorkloadHandle: ...

    def submit(self, payload: Any) -> WorkloadHandle: ...

    def set_scaling(
        self, min_replicas: int | None = None, max_replicas: int | None = None
    ) -> dict[str, Any]: ...


def _close_all(children: Any) -> None:
    """Close widgets and every widget inside them (their frontend views go with them)."""
    for child in children:
        _close_all(getattr(child, "children", ()))
        child.close()


# what a terminal event adds to the status record it carries
_EVENT_FIELDS = ("type", "event_id", "attempt", "timestamp")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class APIDashboard(widgets.VBox):
    """Everything about one API at a glance, refreshed from `AsyncAPI.watch`."""

    state = Unicode("")
    version = Int(0)
    queue_depth = Int(0)
    in_progress = Int(0)
    completed = Int(0)
    failed = Int(0)
    workers = Int(0)
    desired_workers = Int(0)

    def __init__(
        self,
        api: DashboardAPI,
        interval: float = 1.0,
        recent: int = 8,
        history_s: float = 600.0,
    ) -> None:
        self._api = api
        self._interval = interval
        self._recent = recent
        self.timeline = Timeline(history_s, interval)
        self._task: asyncio.Task[None] | None = None
        self._actions: set[asyncio.Task[None]] = set()
        self._events: asyncio.Task[None] | None = None  # reads the selected one's events
        self._status: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self.selected: str | None = None
        self._fetching: str | None = None  # the workload whose record is being fetched
        self._unfetched: str | None = None  # one whose fetch failed: not again by itself
        self.header = widgets.HTML()
        self.counts = widgets.HTML()
        # min_height: the plot keeps its place while the frontend redraws it
        self.plot = widgets.Output(layout=widgets.Layout(min_height="300px"))
        self.plot.add_class("asyncnb-plot")
        self.scaling = widgets.HTML()
        self.scaling_controls = ScalingControls(self._apply_scaling)
        self.table = WorkloadTable(recent, self.select)
        self.details = DetailsPanel(self._cancel_selected, lambda: self.select(None))
        self.try_it = TryIt(self._try)
        self.scaling.layout.width = "440px"
        top = widgets.Layout(align_items="flex-start")
        super().__init__(
            [
                self.header,
                self.counts,
                self.plot,
                widgets.HBox([self.scaling, self.scaling_controls], layout=top),
                self.table,
                widgets.HBox([self.details, self.try_it], layout=top),
            ]
        )
        self.add_class("asyncnb-dashboard")
        self.refresh()
        self.start()

    # what the header offers -----------------------------------------------------------------
    @property
    def example_payload(self) -> str:
        """The JSON the curl line and the try-it box offer: the deploy's `example` option,
        else the last payload this handle submitted, else `{}`."""
        example = ((self._status or {}).get("options") or {}).get("example")
        if example is not None:
            return json.dumps(example)
        return self._api.last_payload_json or "{}"

    @property
    def curl(self) -> str:
        token = self._api.client.token is not None
        return templates.curl_line(self._api.url, self.example_payload, token)

    # refreshing ------------------------------------------------------------------------------
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
        now = time.time()
        self._status, self._rows = status, list(rows)
        self.timeline.add(now, status)
        record = self.details.record
        fetch = False
        if self.selected is not None:
            newer = next((r for r in self._rows if r.get("id") == self.selected), None)
            if newer is not None:
                record = newer
            else:  # not in the table (any more): fetched, until it has ended
                unfinished = record is None or record.get("status") not in templates.FINISHED
                fetch = unfinished and self._unfetched != self.selected
        with holding(self, self.header, self.counts, self.plot, self.scaling):
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
            token = self._api.client.token is not None
            self.header.value = templates.header(status, self._api.url, self.curl, token)
            self.counts.value = templates.counts(status)
            self.plot.outputs = self.timeline.outputs()
            self.scaling.value = templates.scaling(status)
        self.scaling_controls.show(status.get("options") or {})
        self.table.show(self._rows, self.selected, now)
        if self.selected is not None:
            self.details.show(record, now)
        self.try_it.prefill(self.example_payload)
        if fetch and self.selected is not None:
            self._spawn(self._fetch(self.selected))

    def _show_error(self, exc: BaseException) -> None:
        self.header.value = (
            f"<div class='asyncnb-header'><b>{templates.esc(self._api.name)}</b> "
            + templates.problem(f"cannot reach the gateway: {type(exc).__name__}")
            + "</div>"
        )

    # the details of one workload -------------------------------------------------------------
    def select(self, workload_id: str | None) -> None:
        """Show `workload_id` in full (None, or its id again: hide the details)."""
        if workload_id is not None and workload_id == self.selected:
            workload_id = None
        self.selected = workload_id
        self._unfetched = None
        self._follow(workload_id)
        now = time.time()
        self.table.show(self._rows, workload_id, now)
        if workload_id is None:
            self.details.show(None, now, "")
            return
        known = next((r for r in self._rows if r.get("id") == workload_id), None)
        self.details.show(known, now, "" if known else "loading…")
        self._spawn(self._fetch(workload_id))

    def _follow(self, workload_id: str | None) -> None:
        """Read the event stream of `workload_id` (None: of none) from now on, on the running
        loop; without one (a script, a test) the details show the snapshots only."""
        if self._events is not None:
            self._events.cancel()
            self._events = None
        self.details.clear_stream()
        if workload_id is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._events = loop.create_task(self._read_events(workload_id))

    async def _read_events(self, workload_id: str) -> None:
        """`GET /{api}/{id}/events`: its outputs and log lines into the details, its terminal
        event's record too (the workload has ended: no need to wait for the snapshot)."""
        outputs = FreshOutputs()
        attempt: Any = None
        shown = 0.0
        try:
            events = self._api.workload(workload_id).astream()
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    if self.selected != workload_id or self.comm is None:
                        return
                    kind = event.get("type")
                    if outputs.fresh(event):
                        self.details.add_output(describe_output(event))
                    elif kind == "log":
                        self.details.add_log(str(event.get("line", "")))
                    elif kind == "start":
                        if attempt is not None and event.get("attempt") != attempt:
                            self.details.add_log(f"--- attempt {event.get('attempt')} ---")
                        attempt = event.get("attempt")
                    if kind in templates.FINISHED:
                        ended = {k: v for k, v in event.items() if k not in _EVENT_FIELDS}
                        self.details.show(ended, time.time())
                    elif time.monotonic() - shown >= RENDER_EVERY_S:
                        self.details.show(self.details.record, time.time())
                        shown = time.monotonic()
        except Exception as exc:
            if self.selected == workload_id and self.comm is not None:
                self.details.stream_note = f"live outputs and logs stopped: {_reason(exc)}"
                self.details.show(self.details.record, time.time())

    async def _fetch(self, workload_id: str) -> None:
        """`GET /{api}/{id}`: the full record of the selected workload."""
        if self._fetching == workload_id:
            return
        self._fetching = workload_id
        try:
            record = await asyncio.to_thread(self._api.workload(workload_id).info)
        except Exception as exc:
            self._unfetched = workload_id  # a click on its row tries again
            if self.selected == workload_id:
                message = templates.problem(f"cannot fetch {workload_id}: {_reason(exc)}")
                self.details.show(self.details.record, time.time(), message)
            return
        finally:
            if self._fetching == workload_id:
                self._fetching = None
        if self.selected == workload_id:
            self.details.show(record, time.time(), "")

    def _cancel_selected(self) -> None:
        if self.selected is not None:
            self._spawn(self._cancel(self.selected))

    async def _cancel(self, workload_id: str) -> None:
        """`DELETE /{api}/{id}`: the selected workload ends as cancelled."""
        self.details.cancel.disabled = True
        try:
            record = await asyncio.to_thread(self._api.workload(workload_id).cancel)
        except Exception as exc:
            message = templates.problem(f"cannot cancel: {_reason(exc)}")
            self.details.show(self.details.record, time.time(), message)
            return
        self._rows = [record if r.get("id") == workload_id else r for r in self._rows]
        now = time.time()
        self.table.show(self._rows, self.selected, now)
        if self.selected == workload_id:
            self.details.show(record, now, "")

    # scaling bounds --------------------------------------------------------------------------
    def _apply_scaling(self, min_replicas: int, max_replicas: int) -> None:
        self._spawn(self._set_scaling(min_replicas, max_replicas))

    async def _set_scaling(self, min_replicas: int, max_replicas: int) -> None:
        """`PATCH /apis/{api}`: new bounds for the running API (no new version)."""
        self.scaling_controls.say("applying…")
        try:
            status = await asyncio.to_thread(
                self._api.set_scaling, min_replicas=min_replicas, max_replicas=max_replicas
            )
        except Exception as exc:
            self.scaling_controls.say(templates.problem(_reason(exc)))
            return
        self.scaling_controls.say(f"applied: [{min_replicas}, {max_replicas}]")
        self._render(status, self._rows)

    # try it ----------------------------------------------------------------------------------
    def _try(self, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError as exc:
            self.try_it.show(templates.problem(f"not valid JSON: {exc}"))
            return
        self._spawn(self._submit(payload))

    async def _submit(self, payload: Any) -> None:
        """Submit through the client, then long-poll the workload until it ends."""
        self.try_it.busy(True)
        try:
            work = await asyncio.to_thread(self._api.submit, payload)
            record: dict[str, Any] = {"id": work.id, "status": "in_queue"}
            while record.get("status") not in templates.FINISHED and self.comm is not None:
                self.try_it.show(templates.outcome(record))
                record = await asyncio.to_thread(work.info, 10.0)
            self.try_it.show(templates.outcome(record))
        except Exception as exc:
            self.try_it.show(templates.problem(f"{type(exc).__name__}: {_reason(exc)}"))
        finally:
            self.try_it.busy(False)

    def _spawn(self, action: Coroutine[Any, Any, None]) -> None:
        """Run what a click asked for: a task on the running loop (the kernel's), or, with no
        loop running (a script, a test), now and to its end."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(action)
            return
        task = loop.create_task(action)
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    # the periodic task -----------------------------------------------------------------------
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
        self._follow(None)
        for task in list(self._actions):
            task.cancel()
        super().close()
        _close_all(self.children)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
