"""The notebook dashboard's state, without a browser or a kernel (ipywidgets work without a
comm): fed snapshots, clicked, and asked what it shows. Its API handle is a stand-in that
answers like the gateway and records what the dashboard asked of it."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest

from asyncnb.client import APISnapshot
from asyncnb.errors import GatewayError, GatewayUnreachable, UsageError
from asyncnb.ipython.dashboard import APIDashboard
from asyncnb.ipython.plot import VEGALITE_MIME, Timeline

_ids = itertools.count(1)
TRACEBACK = 'Traceback (most recent call last):\n  File "<cell>", line 3\nValueError: odd n\n'


def stamp(seconds_ago: float) -> str:
    when = datetime.fromtimestamp(time.time() - seconds_ago, tz=timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


def record(status: str = "completed", **extra: Any) -> dict[str, Any]:
    """A workload status record, as `GET /{api}/{id}` answers it."""
    base: dict[str, Any] = {
        "id": f"{next(_ids):032x}",
        "api": "demo",
        "status": status,
        "attempts": 0 if status == "in_queue" else 1,
        "priority": 0,
        "created_at": stamp(10),
        "started_at": None if status == "in_queue" else stamp(9),
        "finished_at": stamp(1) if status in ("completed", "failed", "cancelled") else None,
        "version": 1,
    }
    if status == "completed":
        base.update(result={"echo": "hi"}, result_content_type="application/json")
    if status == "failed":
        base["error"] = {"type": "ValueError", "message": "odd n", "traceback": TRACEBACK}
    return {**base, **extra}


def api_record(**changes: Any) -> dict[str, Any]:
    """An API status record, as `GET /{api}` answers it."""
    status: dict[str, Any] = {
        "name": "demo",
        "version": 2,
        "state": "ready",
        "endpoint": "http://gw/demo",
        "queue_depth": 3,
        "in_progress": 2,
        "completed": 40,
        "failed": 1,
        "cancelled": 0,
        "submitted": 46,
        "workers": 2,
        "desired_workers": 3,
        "scaling_events": [
            {"time": stamp(30), "from": 2, "to": 3, "reason": "average in-flight 5.00"}
        ],
        "options": {"min_replicas": 1, "max_replicas": 4, "example": None},
        "stats": {
            "window_s": 60.0,
            "finished": 31,
            "completed": 30,
            "failed": 1,
            "completed_per_s": 0.5,
            "latency_p50_s": 0.25,
            "latency_p95_s": 1.5,
        },
    }
    status.update(changes)
    return status


class FakeWorkload:
    def __init__(self, api: FakeAPI, workload_id: str) -> None:
        self.api = api
        self.id = workload_id

    def info(self, wait: float = 0) -> dict[str, Any]:
        self.api.calls.append(("info", self.id))
        later = self.api.later.get(self.id)
        if later:
            self.api.records[self.id] = later.pop(0)
        return self.api.records[self.id]

    def cancel(self) -> dict[str, Any]:
        self.api.calls.append(("cancel", self.id))
        current = self.api.records[self.id]
        if current["status"] in ("completed", "failed", "cancelled"):
            raise GatewayError(409, f"workload {self.id} already {current['status']}")
        ended = {**current, "status": "cancelled", "finished_at": stamp(0)}
        self.api.records[self.id] = ended
        return ended

    async def astream(self, last_event_id: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """`GET /{api}/{id}/events`: `api.events[id]`, in turn ("hang": no more news; an
        exception: raised there), then the stream ends."""
        self.api.calls.append(("astream", self.id))
        try:
            for item in self.api.events.get(self.id, []):
                await asyncio.sleep(0)
                if item == "hang":
                    await asyncio.Event().wait()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.api.closed_streams.append(self.id)


class FakeAPI:
    """What the dashboard uses of `asyncnb.client.AsyncAPI`, answering like a gateway."""

    name = "demo"
    url = "http://gw/demo"

    def __init__(self, rows: list[dict[str, Any]] | None = None, token: str | None = None):
        self.client = SimpleNamespace(token=token)
        self.last_payload_json: str | None = None
        self.current = api_record()
        self.rows = list(rows or [])
        self.records = {r["id"]: r for r in self.rows}
        self.later: dict[str, list[dict[str, Any]]] = {}  # what info() answers next, in turn
        self.snapshots: list[APISnapshot] = []
        self.events: dict[str, list[Any]] = {}  # what astream() yields, per workload
        self.closed_streams: list[str] = []
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return self.current

    def workloads(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.rows[:limit]

    async def watch(self, interval: float = 1.0, recent: int = 8) -> AsyncIterator[APISnapshot]:
        for snapshot in self.snapshots:
            await asyncio.sleep(interval)
            yield snapshot
        await asyncio.Event().wait()  # no more news

    def workload(self, workload_id: str) -> FakeWorkload:
        if workload_id not in self.records:
            raise UsageError(f"workload {workload_id} of API 'demo' not found")
        return FakeWorkload(self, workload_id)

    def submit(self, payload: Any) -> FakeWorkload:
        self.calls.append(("submit", payload))
        queued = record("in_queue")
        running = {**queued, "status": "in_progress", "started_at": stamp(0)}
        if isinstance(payload, dict) and payload.get("fail"):
            done = record("failed", id=queued["id"])
        else:
            done = record("completed", id=queued["id"], result={"echo": payload})
        self.records[queued["id"]] = queued
        self.later[queued["id"]] = [running, done]
        self.last_payload_json = json.dumps(payload)
        return FakeWorkload(self, queued["id"])

    def set_scaling(
        self, min_replicas: int | None = None, max_replicas: int | None = None
    ) -> dict[str, Any]:
        self.calls.append(("set_scaling", (min_replicas, max_replicas)))
        if min_replicas is not None and max_replicas is not None and min_replicas > max_replicas:
            raise UsageError("body: Value error, min_replicas must not exceed max_replicas")
        options = {**self.current["options"], "min_replicas": min_replicas}
        options["max_replicas"] = max_replicas
        self.current = {**self.current, "options": options}
        return self.current


def dashboard(api: FakeAPI) -> APIDashboard:
    return APIDashboard(api, interval=0.01)


def spec_of(board: APIDashboard) -> dict[str, Any]:
    (output,) = board.plot.outputs
    assert output["output_type"] == "display_data"
    spec: dict[str, Any] = output["data"][VEGALITE_MIME]
    return spec


# what one snapshot shows ---------------------------------------------------------------------
def test_a_snapshot_sets_the_traits_the_counts_and_the_header() -> None:
    board = dashboard(FakeAPI())
    board.show(APISnapshot(status=api_record(completed=41, queue_depth=7), workloads=[]))
    assert (board.state, board.version) == ("ready", 2)
    assert (board.queue_depth, board.in_progress, board.completed, board.failed) == (7, 2, 41, 1)
    assert (board.workers, board.desired_workers) == (2, 3)
    assert "asyncnb-dashboard" in board._dom_classes
    assert 'class="asyncnb-counts"' in board.counts.value
    assert "completed 41" in board.counts.value and "queued 7" in board.counts.value
    assert "0.5/s" in board.counts.value
    assert "p50 250 ms" in board.counts.value and "p95 1.5 s" in board.counts.value
    assert 'class="asyncnb-header"' in board.header.value and "http://gw/demo" in board.header.value
    assert "workers 2 → desired 3, within [1, 4]" in board.scaling.value
    assert "average in-flight" in board.scaling.value
    assert "no workloads yet" in board.table.empty.value
    assert board.table.empty.layout.display == "block"


def test_an_unreachable_gateway_is_said_and_the_last_figures_stay() -> None:
    board = dashboard(FakeAPI())
    board.show(APISnapshot(error=GatewayUnreachable("cannot reach the gateway")))
    assert "cannot reach the gateway: GatewayUnreachable" in board.header.value
    assert board.completed == 40  # from the first refresh
    board.show(APISnapshot(status=api_record(completed=42)))
    assert board.completed == 42 and "cannot reach" not in board.header.value


# the plot ------------------------------------------------------------------------------------
def test_the_plot_is_a_vegalite_spec_of_one_sample_per_snapshot() -> None:
    board = dashboard(FakeAPI())  # the first refresh is one sample
    for depth in (5, 9):
        board.show(APISnapshot(status=api_record(queue_depth=depth, desired_workers=4)))
    spec = spec_of(board)
    assert spec["$schema"].endswith("/vega-lite/v5.json")
    values = spec["data"]["values"]
    assert [v["queued"] for v in values] == [3, 5, 9]
    assert values[-1] == {
        "t": values[-1]["t"],
        "queued": 9,
        "running": 2,
        "workers": 2,
        "desired": 4,
        "per_s": 0.5,
        "p50": 0.25,
        "p95": 1.5,
    }
    assert abs(values[-1]["t"] / 1000 - time.time()) < 5  # epoch milliseconds
    work, below = spec["vconcat"]
    assert work["encoding"]["x"]["type"] == "temporal"
    folded = [layer["transform"][0]["fold"] for layer in work["layer"]]
    assert folded == [["queued", "running", "workers"], ["desired"]]  # desired: dashed
    assert work["layer"][1]["mark"]["strokeDash"]
    throughput, latency = below["hconcat"]
    assert throughput["layer"][0]["transform"][0]["fold"] == ["per_s"]
    assert latency["layer"][0]["transform"][0]["fold"] == ["p50", "p95"]
    (output,) = board.plot.outputs
    assert "queued 9" in output["data"]["text/plain"]  # what other frontends show
    assert json.loads(json.dumps(output)) == output  # plain JSON: it goes over the comm


def test_the_timeline_keeps_the_last_minutes_only() -> None:
    timeline = Timeline(history_s=10, interval=1)
    for second in range(30):
        timeline.add(1000.0 + second, api_record(queue_depth=second, stats={}))
    kept = [s.queued for s in timeline]
    assert kept == list(range(19, 30))  # the last 10 s (11 samples at most)
    assert timeline.spec()["data"]["values"][0]["per_s"] is None  # no stats: a gap


# the table and the details -------------------------------------------------------------------
def test_rows_show_status_progress_and_age_and_a_click_shows_the_details() -> None:
    done = record("completed", result={"label": "positive", "score": 0.93})
    failed = record("failed")
    running = record("in_progress", progress={"fraction": 0.4, "message": "scoring"})
    api = FakeAPI([running, failed, done])
    board = dashboard(api)
    assert [r["id"] for r in board.table.records] == [running["id"], failed["id"], done["id"]]
    assert [row.layout.display for row in board.table.rows[:4]] == ["flex"] * 3 + ["none"]
    assert board.table.buttons[0].description == running["id"][:12] + "…"
    assert (
        "in_progress" in board.table.cells[0].value and "40% scoring" in board.table.cells[0].value
    )
    assert "ValueError: odd n" in board.table.cells[1].value
    assert "positive" in board.table.cells[2].value and "10.0 s" in board.table.cells[2].value
    assert board.details.layout.display == "none"

    board.table.click(done["id"])
    assert board.selected == done["id"]
    assert ("info", done["id"]) in api.calls  # GET /{api}/{id}, through the client
    assert board.table.buttons[2].button_style == "info"  # the selected row
    shown = board.details.body.value
    assert done["id"] in shown and "completed" in shown
    assert "&quot;score&quot;: 0.93" in shown  # the full result, pretty-printed
    for timing in ("created", "queued", "started", "ran", "finished", "end to end"):
        assert timing in shown
    assert board.details.layout.display == "flex"
    assert board.details.cancel.disabled  # finished: nothing to cancel

    board.table.click(failed["id"])
    shown = board.details.body.value
    assert "ValueError" in shown and "odd n" in shown
    assert "Traceback (most recent call last)" in shown and "line 3" in shown

    board.table.click(failed["id"])  # the same row again: hidden
    assert board.selected is None and board.details.layout.display == "none"


def test_details_follow_the_snapshots_and_fetch_a_workload_that_left_the_table() -> None:
    running = record("in_progress")
    api = FakeAPI([running])
    board = dashboard(api)
    board.table.click(running["id"])
    assert "in_progress" in board.details.body.value
    finished = {**running, "status": "completed", "result": 7, "finished_at": stamp(0)}
    board.show(APISnapshot(status=api_record(), workloads=[finished]))
    assert "completed" in board.details.body.value  # from the snapshot: no request
    calls = len(api.calls)
    board.show(APISnapshot(status=api_record(), workloads=[]))
    assert len(api.calls) == calls  # finished: nothing more to fetch

    other = record("in_progress")
    api.records[other["id"]] = other
    board.select(other["id"])
    api.records[other["id"]] = {**other, "progress": {"fraction": 0.9, "message": "almost"}}
    board.show(APISnapshot(status=api_record(), workloads=[]))  # not in the table, running
    assert api.calls[-1] == ("info", other["id"])
    assert "90% almost" in board.details.body.value


def test_a_failed_fetch_is_said_in_the_details() -> None:
    api = FakeAPI()
    board = dashboard(api)
    board.select("f" * 32)
    assert "cannot fetch" in board.details.body.value and "not found" in board.details.body.value
    calls = len(api.calls)
    board.show(APISnapshot(status=api_record()))
    assert len(api.calls) == calls  # not asked again by itself (a click does)
    assert "cannot fetch" in board.details.body.value


def test_cancel_ends_the_selected_running_workload() -> None:
    running = record("in_progress")
    queued = record("in_queue")
    api = FakeAPI([queued, running])
    board = dashboard(api)
    board.table.click(queued["id"])
    assert not board.details.cancel.disabled  # queued: cancellable
    board.table.click(running["id"])
    assert not board.details.cancel.disabled
    board.details.cancel.click()
    assert ("cancel", running["id"]) in api.calls  # DELETE /{api}/{id}, through the client
    assert "cancelled" in board.details.body.value and board.details.cancel.disabled
    assert "cancelled" in board.table.cells[1].value  # the row too, before the next snapshot
    board.details.cancel.click()  # a finished one: the gateway's 409 is said, nothing breaks
    assert "cannot cancel" in board.details.body.value and "already cancelled" in (
        board.details.body.value
    )


# scaling bounds --------------------------------------------------------------------------
def test_the_scaling_controls_show_and_change_the_bounds() -> None:
    api = FakeAPI()
    board = dashboard(api)
    controls = board.scaling_controls
    assert (controls.min_replicas.value, controls.max_replicas.value) == (1, 4)
    controls.min_replicas.value, controls.max_replicas.value = 0, 2
    board.show(APISnapshot(status=api_record()))  # being edited: a snapshot leaves them be
    assert (controls.min_replicas.value, controls.max_replicas.value) == (0, 2)
    controls.apply.click()
    assert api.calls[-1] == ("set_scaling", (0, 2))  # PATCH /apis/{api}, through the client
    assert "applied: [0, 2]" in controls.message.value
    assert "within [0, 2]" in board.scaling.value  # the answer is shown at once
    controls.min_replicas.value = 3
    controls.apply.click()
    assert "min_replicas must not exceed max_replicas" in controls.message.value
    other = {**api.current["options"], "min_replicas": 1, "max_replicas": 8}
    controls.min_replicas.value = 0  # back to what the gateway said: not edited any more
    board.show(APISnapshot(status=api_record(options=other)))  # changed elsewhere: followed
    assert (controls.min_replicas.value, controls.max_replicas.value) == (1, 8)


# curl and the example payload ----------------------------------------------------------------
def test_the_curl_line_carries_a_token_placeholder_only_with_a_token() -> None:
    plain = dashboard(FakeAPI())
    assert plain.curl == (
        "curl -s -X POST http://gw/demo -H 'Content-Type: application/json' -d '{}'"
    )
    assert "ASYNCNB_TOKEN" not in plain.header.value
    secret = "s3cret-token"
    tokened = dashboard(FakeAPI(token=secret))
    assert tokened.curl == (
        "curl -s -X POST http://gw/demo -H 'Content-Type: application/json' "
        "-H \"Authorization: Bearer $ASYNCNB_TOKEN\" -d '{}'"
    )
    assert "$ASYNCNB_TOKEN" in tokened.header.value and "api.client.token" in tokened.header.value
    assert secret not in tokened.header.value  # the token itself is never shown


def test_the_example_payload_is_the_deploys_else_the_last_submitted_else_empty() -> None:
    api = FakeAPI()
    board = dashboard(api)
    assert board.example_payload == "{}" and board.try_it.payload.value == "{}"
    api.last_payload_json = '{"text": "it\'s good"}'
    board.show(APISnapshot(status=api_record()))
    assert board.example_payload == '{"text": "it\'s good"}'
    assert board.curl.endswith("""-d '{"text": "it'\\''s good"}'""")  # quoted for the shell
    assert board.try_it.payload.value == '{"text": "it\'s good"}'  # untouched: follows
    with_example = {**api.current["options"], "example": {"text": "from the deploy"}}
    board.show(APISnapshot(status=api_record(options=with_example)))
    assert board.example_payload == '{"text": "from the deploy"}'  # the deploy's wins
    assert '{"text": "from the deploy"}' in board.curl
    board.try_it.payload.value = '{"mine": 1}'  # the user's own: kept
    api.current = api_record(options={**with_example, "example": [1, 2]})
    board.refresh()
    assert board.try_it.payload.value == '{"mine": 1}' and board.example_payload == "[1, 2]"
    big = {**with_example, "example": {"text": "x" * 400}}
    board.show(APISnapshot(status=api_record(options=big)))
    assert board.curl.endswith("-d @payload.json") and "payload.json" in board.header.value


# try it ----------------------------------------------------------------------------------
def test_try_it_submits_the_payload_and_shows_the_result() -> None:
    api = FakeAPI()
    board = dashboard(api)
    board.try_it.payload.value = '{"text": "good"}'
    board.try_it.submit.click()
    assert ("submit", {"text": "good"}) in api.calls  # through the client
    outcome = board.try_it.outcome.value
    assert "completed" in outcome and "&quot;echo&quot;" in outcome and "good" in outcome
    assert not board.try_it.submit.disabled
    assert api.last_payload_json == '{"text": "good"}'

    board.try_it.payload.value = '{"fail": true}'
    board.try_it.submit.click()
    outcome = board.try_it.outcome.value
    assert "failed" in outcome and "Traceback (most recent call last)" in outcome

    calls = len(api.calls)
    board.try_it.payload.value = "{not json"
    board.try_it.submit.click()
    assert "not valid JSON" in board.try_it.outcome.value and len(api.calls) == calls


# on a running event loop, as in a kernel -------------------------------------------------------
async def until(probe: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def test_the_watch_loop_drives_it_and_clicks_run_as_tasks_on_the_loop() -> None:
    async def scenario() -> None:
        slow = record("in_progress")
        api = FakeAPI([slow])
        api.snapshots = [
            APISnapshot(status=api_record(completed=50), workloads=[slow]),
            APISnapshot(error=GatewayUnreachable("down")),
            APISnapshot(status=api_record(completed=51, queue_depth=0), workloads=[slow]),
        ]
        board = dashboard(api)
        assert board.running  # one task on the running loop: the view of `watch`
        await until(lambda: board.completed == 51)
        assert [v["queued"] for v in spec_of(board)["data"]["values"]] == [3, 3, 0]
        board.table.click(slow["id"])
        await until(lambda: ("info", slow["id"]) in api.calls)  # a task: the loop stays free
        board.details.cancel.click()
        await until(lambda: "cancelled" in board.details.body.value)
        board.try_it.payload.value = "[1, 2]"
        board.try_it.submit.click()
        await until(lambda: "completed" in board.try_it.outcome.value)
        board.close()
        await asyncio.sleep(0)
        assert not board.running

    asyncio.run(scenario())


def test_the_real_handle_serves_the_dashboard_it_caches() -> None:
    pytest.importorskip("ipywidgets")
    import asyncnb.ipython  # noqa: F401  (plugs the dashboard into the client)
    from asyncnb.client import AsyncAPI, Client

    client = Client("http://gw.invalid", token="t")
    api = AsyncAPI(client, "demo")
    api.status = lambda: api_record()  # type: ignore[method-assign]
    api.workloads = lambda status=None, limit=100: []  # type: ignore[method-assign]
    board = api.dashboard()
    assert isinstance(board, APIDashboard) and api.dashboard() is board  # one per handle
    assert "$ASYNCNB_TOKEN" in board.curl  # the client has a token
    board.close()
    assert api.dashboard() is not board  # a closed one is replaced
    client.close()


def test_who_submits_is_shown_once_anyone_but_the_owner_does() -> None:
    board = dashboard(FakeAPI())
    only_owner = [{"submitted_by": "owner", "submitted": 4, "completed": 4, "failed": 0,
                   "cancelled": 0, "unfinished": 0}]  # fmt: skip
    board.show(APISnapshot(status=api_record(submitters=only_owner), workloads=[]))
    assert "asyncnb-submitters" not in board.counts.value
    shared = [
        {"submitted_by": "bob", "submitted": 9, "completed": 2, "failed": 0, "cancelled": 0,
         "unfinished": 7},
        *only_owner,
    ]  # fmt: skip
    rows = [record("in_queue", submitted_by="bob"), record(submitted_by="owner")]
    board.show(APISnapshot(status=api_record(submitters=shared), workloads=rows))
    assert "submitted by: <b>bob</b> 9 (7 unfinished) · <b>owner</b> 4" in board.counts.value
    assert ">bob<" in board.table.cells[0].value and ">owner<" in board.table.cells[1].value
    board.table.click(rows[0]["id"])
    assert "submitted by bob" in board.details.body.value
