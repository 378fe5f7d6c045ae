"""The dashboard's interactive parts, as plain ipywidgets (a click works without custom JS).

Each panel is a view with callbacks: it knows nothing of the API or the gateway. The
dashboard (`dashboard.py`) feeds them records and acts on their callbacks through the client.
Every panel updates its widgets inside `hold_sync`, one message per widget per refresh.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as widgets

from . import templates


@contextlib.contextmanager
def holding(*shown: widgets.Widget) -> Iterator[None]:
    """Batch the trait changes of several widgets: one message per widget when it ends."""
    with contextlib.ExitStack() as stack:
        for widget in shown:
            stack.enter_context(widget.hold_sync())
        yield


class WorkloadTable(widgets.VBox):
    """The newest workloads, one row each, from a fixed pool of rows (no widget churn);
    a click on a row's id button selects that workload (`on_select(id)`)."""

    def __init__(self, size: int, on_select: Callable[[str], None]) -> None:
        self._on_select = on_select
        self._records: list[dict[str, Any]] = []
        self.head = widgets.HTML(templates.table_head())
        self.empty = widgets.HTML("<i>no workloads yet</i>")
        self.buttons: list[widgets.Button] = []
        self.cells: list[widgets.HTML] = []
        self.rows: list[widgets.HBox] = []
        for index in range(size):
            button = widgets.Button(
                tooltip="show this workload's details",
                layout=widgets.Layout(width="120px", height="26px", margin="1px 4px 1px 0"),
            )
            button.style.font_family = "monospace"
            button.add_class("asyncnb-row-select")
            button.on_click(lambda _button, index=index: self._clicked(index))
            cell = widgets.HTML()
            line = widgets.HBox([button, cell], layout=widgets.Layout(display="none"))
            line.add_class("asyncnb-row")
            self.buttons.append(button)
            self.cells.append(cell)
            self.rows.append(line)
        super().__init__([self.head, *self.rows, self.empty])
        self.add_class("asyncnb-workloads")

    @property
    def records(self) -> list[dict[str, Any]]:
        """The workload records shown, newest first."""
        return list(self._records)

    def _clicked(self, index: int) -> None:
        if index < len(self._records):
            self._on_select(str(self._records[index]["id"]))

    def click(self, workload_id: str) -> None:
        """What a click on the row of `workload_id` does (for tests and scripts)."""
        for index, record in enumerate(self._records):
            if record["id"] == workload_id:
                self.buttons[index].click()
                return
        raise KeyError(f"workload {workload_id} is not in the table")

    def show(self, records: list[dict[str, Any]], selected: str | None, now: float) -> None:
        self._records = list(records[: len(self.rows)])
        with holding(self.empty, *self.rows, *self.buttons, *self.cells):
            for index, line in enumerate(self.rows):
                if index >= len(self._records):
                    line.layout.display = "none"
                    continue
                record = self._records[index]
                workload_id = str(record["id"])
                self.buttons[index].description = workload_id[:12] + "…"
                self.buttons[index].button_style = "info" if workload_id == selected else ""
                self.cells[index].value = templates.row(record, now)
                line.layout.display = "flex"
            self.empty.layout.display = "none" if self._records else "block"


class DetailsPanel(widgets.VBox):
    """The selected workload in full: result, error with its traceback, timings, and its last
    outputs and log lines while they come (`add_output`, `add_log`); cancel."""

    def __init__(self, on_cancel: Callable[[], None], on_close: Callable[[], None]) -> None:
        self.body = widgets.HTML()
        self.cancel = widgets.Button(
            description="cancel", icon="stop", button_style="danger", disabled=True
        )
        self.cancel.add_class("asyncnb-cancel")
        self.cancel.on_click(lambda _button: on_cancel())
        self.hide = widgets.Button(description="close", icon="times")
        self.hide.on_click(lambda _button: on_close())
        self.record: dict[str, Any] | None = None
        self.message = ""
        self.outputs: deque[str] = deque(maxlen=templates.OUTPUTS_SHOWN)
        self.log_lines: deque[str] = deque(maxlen=templates.LOG_LINES_SHOWN)
        self.output_count = self.log_count = 0
        self.stream_note = ""  # why the event stream stopped early
        super().__init__(
            [widgets.HBox([self.cancel, self.hide]), self.body],
            layout=widgets.Layout(
                display="none",
                flex="1 1 0%",
                min_width="0",
                border="1px solid #d0d7de",
                padding="4px 8px",
                margin="4px 8px 4px 0",
            ),
        )
        self.add_class("asyncnb-details")

    def show(self, record: dict[str, Any] | None, now: float, message: str | None = None) -> None:
        """Show `record`, with `message` under it (None: the last one, for the same record)."""
        if message is None:
            same = (record or {}).get("id") == (self.record or {}).get("id")
            message = self.message if same else ""
        self.record, self.message = record, message
        outputs, logs = list(self.outputs), list(self.log_lines)
        stream = templates.stream_block(
            outputs, self.output_count, logs, self.log_count, self.stream_note
        )
        with holding(self.body, self.cancel):
            self.body.value = templates.details(record, now, message, stream)
            cancellable = record is not None and record.get("status") in templates.CANCELLABLE
            self.cancel.disabled = not cancellable
            self.layout.display = "flex" if record is not None or message else "none"

    def add_output(self, text: str) -> None:
        self.outputs.append(text)
        self.output_count += 1

    def add_log(self, line: str) -> None:
        self.log_lines.append(line)
        self.log_count += 1

    def clear_stream(self) -> None:
        """Forget the outputs and log lines shown (another workload is selected)."""
        self.outputs.clear()
        self.log_lines.clear()
        self.output_count = self.log_count = 0
        self.stream_note = ""


class ScalingControls(widgets.HBox):
    """min_replicas and max_replicas of the API, and a button that applies them."""

    def __init__(self, on_apply: Callable[[int, int], None]) -> None:
        style = {"description_width": "initial"}
        small = widgets.Layout(width="150px")
        self.min_replicas = widgets.BoundedIntText(
            value=1, min=0, max=10_000, description="min replicas", style=style, layout=small
        )
        self.max_replicas = widgets.BoundedIntText(
            value=100, min=1, max=10_000, description="max replicas", style=style, layout=small
        )
        self.apply = widgets.Button(description="apply", icon="check")
        self.apply.add_class("asyncnb-scaling-apply")
        self.apply.on_click(
            lambda _button: on_apply(self.min_replicas.value, self.max_replicas.value)
        )
        self.message = widgets.HTML()
        self._shown: tuple[int, int] | None = None  # what the gateway said last
        super().__init__([self.min_replicas, self.max_replicas, self.apply, self.message])
        self.add_class("asyncnb-scaling-controls")

    def show(self, options: dict[str, Any]) -> None:
        """The API's bounds, unless the user is editing them (they differ from the last)."""
        bounds = (int(options.get("min_replicas", 1)), int(options.get("max_replicas", 100)))
        current = (self.min_replicas.value, self.max_replicas.value)
        if self._shown is None or current == self._shown or current == bounds:
            with holding(self.min_replicas, self.max_replicas):
                self.min_replicas.value, self.max_replicas.value = bounds
        self._shown = bounds

    def say(self, text: str) -> None:
        self.message.value = text


class TryIt(widgets.VBox):
    """A JSON payload to submit (prefilled with the API's example) and what became of it."""

    def __init__(self, on_submit: Callable[[str], None]) -> None:
        self.title = widgets.HTML("<b>try it</b>: submit a JSON payload")
        self.payload = widgets.Textarea(
            value="{}", rows=5, layout=widgets.Layout(width="98%"), placeholder="a JSON payload"
        )
        self.payload.add_class("asyncnb-try-payload")
        self.submit = widgets.Button(description="submit", icon="play", button_style="primary")
        self.submit.add_class("asyncnb-try-submit")
        self.submit.on_click(lambda _button: on_submit(self.payload.value))
        self.outcome = widgets.HTML()
        self.outcome.add_class("asyncnb-try-outcome")
        self._prefilled = "{}"
        super().__init__(
            [self.title, self.payload, self.submit, self.outcome],
            layout=widgets.Layout(width="400px", flex="0 0 400px", margin="4px 0"),
        )
        self.add_class("asyncnb-try")

    def prefill(self, text: str) -> None:
        """Offer `text` as the payload, unless the user has written one of their own."""
        if self.payload.value == self._prefilled and text != self._prefilled:
            self.payload.value = text
        self._prefilled = text

    def busy(self, busy: bool) -> None:
        self.submit.disabled = busy

    def show(self, html: str) -> None:
        self.outcome.value = html
