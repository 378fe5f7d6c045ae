"""The selected workload's live outputs and log tail in the dashboard's details: what the
templates render (escaped, bounded) and the one task that reads the selected workload's event
stream on the running loop, stopped when the selection changes or the widget closes."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from asyncnb.client import APISnapshot
from asyncnb.errors import GatewayError
from asyncnb.ipython import templates
from asyncnb.ipython.dashboard import APIDashboard
from asyncnb.ipython.panels import DetailsPanel

from .test_dashboard import FakeAPI, api_record, dashboard, record, until


def event(workload: dict[str, Any], event_id: int, type: str, attempt: int = 1, **fields: Any):
    return {
        "event_id": event_id,
        "type": type,
        "id": workload["id"],
        "api": "demo",
        "attempt": attempt,
        "timestamp": "2026-12-02T10:00:00Z",
        **fields,
    }


def log(workload: dict[str, Any], event_id: int, line: str, attempt: int = 1) -> dict[str, Any]:
    return event(workload, event_id, "log", attempt, line=line, stream="stdout")


def output(workload: dict[str, Any], event_id: int, index: int, value: Any, attempt: int = 1):
    encoding = "text" if isinstance(value, str) else "json"
    return event(workload, event_id, "output", attempt, index=index, value=value, encoding=encoding)


# the templates ------------------------------------------------------------------------------
def test_stream_block_escapes_and_says_how_much_is_shown() -> None:
    assert templates.stream_block([], 0, [], 0) == ""
    html = templates.stream_block(['{"a":"<b>"}', "line\none"], 25, ["<script>x</script>"], 60)
    assert 'class="asyncnb-outputs"' in html and "(the last 2 of 25)" in html
    assert "{&quot;a&quot;:&quot;&lt;b&gt;&quot;}" in html and '<b>"' not in html
    assert '<ol start="23"' in html  # numbered by output index
    assert 'class="asyncnb-logs"' in html and "(the last 1 of 60 lines)" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html
    assert "(3 lines)" in templates.stream_block([], 0, ["a", "b", "c"], 3)
    long = templates.stream_block(["x" * 5000], 1, [], 0)
    assert "x" * templates.OUTPUT_SHOWN_CHARS + "… (3000 more characters)" in long
    noted = templates.stream_block([], 0, [], 0, "stopped: <503>")
    assert "stopped: &lt;503&gt;" in noted


def test_details_keep_the_last_outputs_and_log_lines() -> None:
    panel = DetailsPanel(lambda: None, lambda: None)
    running = record("in_progress")
    for n in range(30):
        panel.add_output(f"out {n}")
    for n in range(70):
        panel.add_log(f"line {n}")
    panel.show(running, time.time())
    body = panel.body.value
    assert "(the last 20 of 30)" in body and "out 10<" in body and "out 9<" not in body
    assert "(the last 50 of 70 lines)" in body and "line 20\n" in body and "line 19\n" not in body
    assert body.index("asyncnb-outputs") < body.index("asyncnb-logs")
    panel.clear_stream()
    panel.show(running, time.time())
    assert "asyncnb-outputs" not in panel.body.value and "asyncnb-logs" not in panel.body.value


# the task that reads the selected workload's events -------------------------------------------
def test_the_selected_workloads_outputs_and_logs_show_as_they_come() -> None:
    async def scenario() -> None:
        running = record("in_progress")
        api = FakeAPI([running])
        picture = base64.b64encode(b"\x89PNG").decode()
        api.events[running["id"]] = [
            event(running, 1, "start"),
            log(running, 2, "loading <model>"),
            output(running, 3, 0, {"n": 0}),
            output(running, 4, 1, "first text"),
            event(running, 5, "start", attempt=2),
            output(running, 6, 0, {"n": 0}, attempt=2),  # already shown: not again
            output(running, 7, 1, "first text", attempt=2),
            event(
                running,
                8,
                "output",
                2,
                index=2,
                value=picture,
                encoding="base64",
                content_type="image/png",
            ),
            log(running, 9, "done", attempt=2),
            "hang",
        ]
        board = dashboard(api)
        board.table.click(running["id"])
        await until(lambda: board.details.log_count == 3)
        board.show(APISnapshot(status=api_record(), workloads=[running]))  # shows what is left
        body = board.details.body.value
        assert list(board.details.outputs) == ['{"n":0}', "first text", "<4 bytes image/png>"]
        assert "(3)" in body and "first text" in body and "&lt;4 bytes image/png&gt;" in body
        assert "loading &lt;model&gt;\n--- attempt 2 ---\ndone" in body
        assert api.calls.count(("astream", running["id"])) == 1
        assert board.running and board._events is not None and not board._events.done()
        board.close()
        await until(lambda: api.closed_streams == [running["id"]])  # its connection closed

    asyncio.run(scenario())


def test_the_terminal_event_shows_the_ended_record_at_once() -> None:
    async def scenario() -> None:
        running = record("in_progress")
        api = FakeAPI([running])
        ended = {**running, "status": "completed", "result": ["a", "b"]}
        api.events[running["id"]] = [
            output(running, 1, 0, "a"),
            output(running, 2, 1, "b"),
            event(running, 3, "completed", **{**ended, "attempt": 1}),
        ]
        board = dashboard(api)
        board.table.click(running["id"])
        await until(lambda: "completed" in board.details.body.value)
        assert board.details.record is not None and "event_id" not in board.details.record
        assert board.details.record["status"] == "completed"
        assert "asyncnb-outputs" in board.details.body.value
        await until(lambda: board._events is not None and board._events.done())
        board.close()

    asyncio.run(scenario())


def test_a_new_selection_stops_the_last_stream_and_starts_its_own() -> None:
    async def scenario() -> None:
        first, second = record("in_progress"), record("in_progress")
        api = FakeAPI([first, second])
        api.events[first["id"]] = [log(first, 1, "from the first"), "hang"]
        api.events[second["id"]] = [log(second, 1, "from the second"), "hang"]
        board = dashboard(api)
        board.table.click(first["id"])
        await until(lambda: "from the first" in board.details.body.value)
        board.table.click(second["id"])
        await until(lambda: "from the second" in board.details.body.value)
        assert "from the first" not in board.details.body.value
        await until(lambda: api.closed_streams == [first["id"]])
        board.table.click(second["id"])  # unselected: no stream at all
        await until(lambda: api.closed_streams == [first["id"], second["id"]])
        assert board._events is None and board.details.log_count == 0
        board.close()

    asyncio.run(scenario())


def test_a_broken_stream_is_said_and_the_details_stay() -> None:
    async def scenario() -> None:
        running = record("in_progress")
        api = FakeAPI([running])
        lost = GatewayError(503, "lost the event stream of <Workload demo/x>")
        api.events[running["id"]] = [log(running, 1, "one line"), lost]
        board = dashboard(api)
        board.table.click(running["id"])
        await until(lambda: "live outputs and logs stopped" in board.details.body.value)
        body = board.details.body.value
        assert "one line" in body and "lost the event stream of &lt;Workload" in body
        assert "in_progress" in body
        board.close()

    asyncio.run(scenario())


def test_without_a_running_loop_no_stream_is_read() -> None:
    running = record("in_progress")
    api = FakeAPI([running])
    board: APIDashboard = dashboard(api)
    board.table.click(running["id"])
    assert ("astream", running["id"]) not in api.calls and board._events is None
    assert "in_progress" in board.details.body.value
