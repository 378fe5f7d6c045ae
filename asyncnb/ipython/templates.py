"""Small HTML templates of the notebook dashboard (kept apart from the widget's logic)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

_STATE_COLOURS = {
    "ready": "#1a7f37",
    "deploying": "#9a6700",
    "error": "#cf222e",
}
_STATUS_COLOURS = {
    "in_queue": "#57606a",
    "in_progress": "#0969da",
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#6e7781",
}
_BLOCKS = "▁▂▃▄▅▆▇█"


def badge(text: str, colour: str) -> str:
    return (
        f'<span style="background:{colour};color:white;border-radius:8px;padding:1px 7px;'
        f'font-size:0.85em">{html.escape(text)}</span>'
    )


def sparkline(values: Sequence[int]) -> str:
    if not values:
        return ""
    top = max(values) or 1
    return "".join(
        _BLOCKS[min(len(_BLOCKS) - 1, int(v / top * (len(_BLOCKS) - 1)))] for v in values
    )


def header(status: dict[str, Any], endpoint: str, curl: str) -> str:
    state = str(status.get("state", "?"))
    error = ""
    if status.get("error"):
        detail = status["error"]
        error = (
            f'<details style="color:#cf222e"><summary>{html.escape(detail.get("type", ""))}: '
            f"{html.escape(str(detail.get('message', '')))}</summary><pre>"
            f"{html.escape(str(detail.get('traceback', '')))}</pre></details>"
        )
    return (
        f'<div class="asyncnb-header"><b style="font-size:1.1em">{html.escape(status["name"])}'
        f"</b> v{status.get('version', '?')} "
        f"{badge(state, _STATE_COLOURS.get(state, '#57606a'))}"
        f'<div>endpoint: <a href="{html.escape(endpoint)}" target="_blank"><code>'
        f"{html.escape(endpoint)}</code></a></div>"
        f'<div>try: <code style="user-select:all">{html.escape(curl)}</code></div>{error}</div>'
    )


def counts(status: dict[str, Any], history: Sequence[int]) -> str:
    return (
        f'<div class="asyncnb-counts">queued {status.get("queue_depth", 0)} · '
        f"in progress {status.get('in_progress', 0)} · "
        f"completed {status.get('completed', 0)} · failed {status.get('failed', 0)}"
        f' <span title="queue depth, last {len(history)} updates" '
        f'style="font-family:monospace;color:#0969da">{sparkline(history)}</span></div>'
    )


def scaling(status: dict[str, Any]) -> str:
    events = status.get("scaling_events") or []
    recent = "".join(
        f"<li>{html.escape(str(e.get('time', '')))}: {e.get('from')} → {e.get('to')} "
        f"({html.escape(str(e.get('reason', '')))})</li>"
        for e in list(events)[-3:]
    )
    return (
        f'<div class="asyncnb-scaling">workers {status.get("workers", 0)} → desired '
        f"{status.get('desired_workers', 0)}"
        + (f"<ul style='margin:0'>{recent}</ul>" if recent else " · no scaling events yet")
        + "</div>"
    )


def _age(stamp: str | None, now: float) -> str:
    if not stamp:
        return ""
    seconds = now - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _preview(workload: dict[str, Any]) -> str:
    if workload.get("error"):
        error = workload["error"]
        return (
            f"<span style='color:#cf222e'>{html.escape(error.get('type', ''))}: "
            + html.escape(str(error.get("message", ""))[:80])
            + "</span>"
        )
    if "result" in workload:
        return f"<code>{html.escape(json.dumps(workload['result'])[:80])}</code>"
    if workload.get("result_content_type"):
        return f"<i>{workload.get('result_size', 0)} bytes, {workload['result_content_type']}</i>"
    progress = workload.get("progress")
    if progress:
        percent = int(100 * float(progress.get("fraction") or 0))
        message = html.escape(progress.get("message") or "")
        return f"<progress value='{percent}' max='100'></progress> {percent}% {message}"
    return ""


def workloads(rows: Iterable[dict[str, Any]]) -> str:
    now = time.time()
    body = "".join(
        f"<tr><td><code>{w['id'][:12]}…</code></td>"
        f"<td>{badge(w['status'], _STATUS_COLOURS.get(w['status'], '#57606a'))}</td>"
        f"<td>{_age(w.get('created_at'), now)}</td><td>{_preview(w)}</td></tr>"
        for w in rows
    )
    if not body:
        return '<div class="asyncnb-workloads"><i>no workloads yet</i></div>'
    return (
        '<table class="asyncnb-workloads" style="font-size:0.9em"><tr><th>id</th><th>status'
        f"</th><th>age</th><th>result</th></tr>{body}</table>"
    )
