"""The dashboard's HTML pieces (kept apart from the widget's logic): pure functions of the
records the gateway answers, so they are tested without a browser."""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

FINISHED = ("completed", "failed", "cancelled")
CANCELLABLE = ("in_queue", "in_progress")
RESULT_SHOWN_CHARS = 200_000  # a longer result is cut in the details (the client has it all)
OUTPUTS_SHOWN = 20  # the details show the selected workload's last outputs
LOG_LINES_SHOWN = 50  # and the tail of its log, as they come
OUTPUT_SHOWN_CHARS = 2_000  # of each output
CURL_INLINE_CHARS = 300  # a longer example payload goes to a file in the curl line
NONE = "\u2013"  # an en dash: not known (yet)

_STATE_COLOURS = {
    "ready": "#1a7f37",
    "deploying": "#9a6700",
    "error": "#cf222e",
    "waiting_for_resources": "#9a6700",
}
_STATUS_COLOURS = {
    "in_queue": "#57606a",
    "in_progress": "#0969da",
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#6e7781",
}
_PRE = (
    "margin:2px 0;padding:4px 6px;background:var(--jp-layout-color2,#f6f8fa);"
    "max-height:{height}px;overflow:auto;white-space:pre-wrap;font-size:0.85em"
)


def esc(value: Any) -> str:
    return html.escape(str(value))


def badge(text: str, colour: str) -> str:
    return (
        f'<span style="background:{colour};color:white;border-radius:8px;padding:1px 7px;'
        f'font-size:0.85em">{esc(text)}</span>'
    )


def status_badge(status: str) -> str:
    return badge(status, _STATUS_COLOURS.get(status, "#57606a"))


def problem(text: str) -> str:
    return f"<span style='color:#cf222e'>{esc(text)}</span>"


def pre(text: str, height: int = 240) -> str:
    return f'<pre style="{_PRE.format(height=height)}">{esc(text)}</pre>'


def stamp_seconds(stamp: str | None) -> float | None:
    """An ISO 8601 timestamp of the HTTP API as epoch seconds (None stays None)."""
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def age(stamp: str | None, now: float) -> str:
    start = stamp_seconds(stamp)
    return "" if start is None else duration(max(0.0, now - start))


# the header: name, state, endpoint, curl -------------------------------------------------
def curl_line(endpoint: str, payload_json: str, token: bool) -> str:
    """A curl command that submits `payload_json`; the token stays a shell variable."""
    auth = ' -H "Authorization: Bearer $ASYNCNB_TOKEN"' if token else ""
    if len(payload_json) > CURL_INLINE_CHARS:
        data = "@payload.json"
    else:
        data = "'" + payload_json.replace("'", "'\\''") + "'"
    return f"curl -s -X POST {endpoint} -H 'Content-Type: application/json'{auth} -d {data}"


def header(status: dict[str, Any], endpoint: str, curl: str, token: bool) -> str:
    state = str(status.get("state", "?"))
    error = ""
    if status.get("error"):
        detail = status["error"]
        error = (
            f'<details style="color:#cf222e"><summary>{esc(detail.get("type", ""))}: '
            f"{esc(detail.get('message', ''))}</summary>{pre(detail.get('traceback') or '')}"
            "</details>"
        )
    waiting = status.get("waiting_for")
    notes = []
    if token:
        notes.append(
            "<code>$ASYNCNB_TOKEN</code>: this client's token (<code>api.client.token</code>)"
        )
    if "@payload.json" in curl:
        notes.append("<code>payload.json</code>: the example payload of the box below")
    note = f'<div style="font-size:0.8em;color:#57606a">{"; ".join(notes)}</div>' if notes else ""
    return (
        f'<div class="asyncnb-header"><b style="font-size:1.1em">{esc(status["name"])}</b> '
        f"v{esc(status.get('version', '?'))} {badge(state, _STATE_COLOURS.get(state, '#57606a'))}"
        + (f" <span style='color:#9a6700'>{esc(waiting)}</span>" if waiting else "")
        + f'<div>endpoint: <a href="{esc(endpoint)}" target="_blank"><code>{esc(endpoint)}'
        f"</code></a></div>"
        f'<div>curl: <code class="asyncnb-curl" style="user-select:all">{esc(curl)}</code>'
        f"</div>{note}{error}</div>"
    )


def counts(status: dict[str, Any]) -> str:
    stats = status.get("stats") or {}
    figures = ""
    if stats:
        figures = (
            f" · <b>{stats.get('completed_per_s', 0):g}/s</b> · latency p50 "
            f"{duration(stats.get('latency_p50_s'))}, p95 {duration(stats.get('latency_p95_s'))}"
            f" <span style='color:#57606a'>(last {stats.get('window_s', 0):g} s)</span>"
        )
    return (
        f'<div class="asyncnb-counts">queued {status.get("queue_depth", 0)} · '
        f"in progress {status.get('in_progress', 0)} · "
        f"completed {status.get('completed', 0)} · failed {status.get('failed', 0)} · "
        f"cancelled {status.get('cancelled', 0)}{figures}</div>" + submitters(status)
    )


def submitters(status: dict[str, Any], shown: int = 5) -> str:
    """Who submits (a key's name, or owner), busiest first, once anyone but the owner has."""
    rows = list(status.get("submitters") or [])
    if not rows or [r.get("submitted_by") for r in rows] == ["owner"]:
        return ""
    parts = [
        f"<b>{esc(r.get('submitted_by'))}</b> {esc(r.get('submitted', 0))}"
        + (f" ({esc(r['unfinished'])} unfinished)" if r.get("unfinished") else "")
        for r in rows[:shown]
    ]
    more = f" · {len(rows) - shown} more" if len(rows) > shown else ""
    return (
        '<div class="asyncnb-submitters" style="font-size:0.9em">submitted by: '
        + " · ".join(parts)
        + more
        + "</div>"
    )


def scaling(status: dict[str, Any]) -> str:
    events = status.get("scaling_events") or []
    recent = "".join(
        f"<li>{clock(e.get('time'))[:8]}: {esc(e.get('from'))} → {esc(e.get('to'))} "
        f"({esc(e.get('reason', ''))})</li>"
        for e in reversed(list(events)[-3:])
    )
    options = status.get("options") or {}
    return (
        f'<div class="asyncnb-scaling">workers {status.get("workers", 0)} → desired '
        f"{status.get('desired_workers', 0)}, within [{options.get('min_replicas', '?')}, "
        f"{options.get('max_replicas', '?')}]"
        + (
            f"<ul style='margin:0;font-size:0.85em;color:#57606a'>{recent}</ul>"
            if recent
            else " · no scaling events yet"
        )
        + "</div>"
    )


# the workloads table -------------------------------------------------------------------------
def _cell(width: int, content: str) -> str:
    return (
        f'<span style="display:inline-block;width:{width}px;overflow:hidden;'
        f'text-overflow:ellipsis;white-space:nowrap;vertical-align:middle">{content}</span>'
    )


def progress_bar(workload: dict[str, Any]) -> str:
    progress = workload.get("progress")
    if workload.get("status") == "completed":
        fraction = 1.0
    elif progress and progress.get("fraction") is not None:
        fraction = float(progress["fraction"])
    elif workload.get("status") == "in_progress":  # running, no progress reported: busy
        message = esc((progress or {}).get("message") or "running")
        return f"<progress style='width:60px'></progress> {message}"
    else:
        return ""
    percent = max(0, min(100, int(100 * fraction)))
    message = esc((progress or {}).get("message") or "")
    bar = f"<progress value='{percent}' max='100' style='width:60px'></progress>"
    return f"{bar} {percent}% {message}"


def preview(workload: dict[str, Any]) -> str:
    if workload.get("error"):
        error = workload["error"]
        return problem(f"{error.get('type', '')}: {str(error.get('message', ''))[:80]}")
    if "result" in workload:
        return f"<code>{esc(json.dumps(workload['result'])[:80])}</code>"
    if workload.get("result_content_type"):
        media = esc(workload["result_content_type"])
        return f"<i>{workload.get('result_size', 0)} bytes, {media}</i>"
    return ""


def table_head() -> str:
    return (
        '<div style="font-weight:bold;font-size:0.9em">'
        + _cell(124, "id (click: details)")
        + _cell(100, "status")
        + _cell(90, "by")
        + _cell(190, "progress")
        + _cell(70, "age")
        + _cell(330, "result")
        + "</div>"
    )


def row(workload: dict[str, Any], now: float) -> str:
    """One workload's cells after its id button: status, progress, age, result preview."""
    return (
        '<div style="font-size:0.9em">'
        + _cell(100, status_badge(str(workload.get("status", "?"))))
        + _cell(90, esc(workload.get("submitted_by", "")))
        + _cell(190, progress_bar(workload))
        + _cell(70, age(workload.get("created_at"), now))
        + _cell(330, preview(workload))
        + "</div>"
    )


# the details of one workload ------------------------------------------------------------------
def clock(stamp: str | None) -> str:
    """A timestamp as the local time of day, to the millisecond."""
    seconds = stamp_seconds(stamp)
    if seconds is None:
        return NONE
    return datetime.fromtimestamp(seconds).strftime("%H:%M:%S.%f")[:-3]


def timings(record: dict[str, Any], now: float) -> str:
    created = stamp_seconds(record.get("created_at"))
    started = stamp_seconds(record.get("started_at"))
    finished = stamp_seconds(record.get("finished_at"))
    end = finished if finished is not None else now
    queued = None if created is None else (started if started is not None else end) - created
    ran = None if started is None else end - started
    total = None if created is None else end - created
    so_far = "" if finished is not None else " so far"
    cells = [
        ("created", clock(record.get("created_at")), record.get("created_at")),
        ("queued", duration(queued) + ("" if started is not None else so_far), None),
        ("started", clock(record.get("started_at")), record.get("started_at")),
        ("ran", duration(ran) + (so_far if ran is not None else ""), None),
        ("finished", clock(record.get("finished_at")), record.get("finished_at")),
        ("end to end", duration(total) + so_far, None),
    ]
    return (
        '<div class="asyncnb-timings" style="display:flex;flex-wrap:wrap;gap:2px 14px;'
        'font-size:0.85em;margin:2px 0">'
        + "".join(
            f'<span title="{esc(full or "")}"><span style="color:#57606a">{name}</span> '
            f"{value}</span>"
            for name, value, full in cells
        )
        + "</div>"
    )


def result_block(record: dict[str, Any]) -> str:
    if "result" in record:
        value = record["result"]
        text = value if isinstance(value, str) else json.dumps(value, indent=2)
        cut = ""
        if len(text) > RESULT_SHOWN_CHARS:
            more = len(text) - RESULT_SHOWN_CHARS
            text, cut = text[:RESULT_SHOWN_CHARS], f"<i>… {more} more characters</i>"
        return f"<div><b>result</b>{pre(text)}{cut}</div>"
    if record.get("result_content_type"):
        return (
            f"<div><b>result</b>: {record.get('result_size', 0)} bytes of "
            f"<code>{esc(record['result_content_type'])}</code>, not inline: "
            f"<code>api.workload('{esc(record.get('id', ''))}').result()</code> or "
            f"<code>GET {esc(record.get('result_url', ''))}</code></div>"
        )
    return ""


def error_block(record: dict[str, Any]) -> str:
    error = record.get("error")
    if not error:
        return ""
    return (
        f"<div><b>error</b> {problem(str(error.get('type', '')) + ': ')}"
        f"{esc(error.get('message', ''))}{pre(error.get('traceback') or '(no traceback)', 320)}"
        "</div>"
    )


def stream_block(
    outputs: list[str], total: int, logs: list[str], log_total: int, note: str = ""
) -> str:
    """The last outputs (as text, of `total`) and log lines (of `log_total`) of the selected
    workload, as its event stream brought them, and `note` (why that stream stopped)."""
    parts = []
    if outputs:
        shown = _last(len(outputs), total)
        items = "".join(
            f'<li><code style="white-space:pre-wrap">{esc(_cut(text))}</code></li>'
            for text in outputs
        )
        parts.append(
            f'<div class="asyncnb-outputs"><b>outputs</b> <span style="color:#57606a;'
            f'font-size:0.85em">({shown})</span><ol start="{total - len(outputs)}" '
            f'style="margin:2px 0;padding-left:3em;max-height:200px;overflow:auto">{items}'
            "</ol></div>"
        )
    if logs:
        # column-reverse: the box shows its bottom, the newest lines, without any script
        parts.append(
            f'<div class="asyncnb-logs"><b>log</b> <span style="color:#57606a;font-size:0.85em">'
            f"({_last(len(logs), log_total)} lines)</span>"
            '<div style="display:flex;flex-direction:column-reverse;max-height:200px;'
            f'overflow:auto">{pre(chr(10).join(logs), 10_000)}</div></div>'
        )
    if note:
        parts.append(f'<div style="font-size:0.85em">{problem(note)}</div>')
    return "".join(parts)


def _last(shown: int, total: int) -> str:
    return f"the last {shown} of {total}" if total > shown else str(total)


def _cut(text: str) -> str:
    if len(text) <= OUTPUT_SHOWN_CHARS:
        return text
    return text[:OUTPUT_SHOWN_CHARS] + f"… ({len(text) - OUTPUT_SHOWN_CHARS} more characters)"


def details(record: dict[str, Any] | None, now: float, message: str = "", stream: str = "") -> str:
    """The selected workload in full; `stream`: its `stream_block`."""
    if record is None:
        return f'<div class="asyncnb-details-body">{message}</div>' if message else ""
    status = str(record.get("status", "?"))
    facts = [
        f"attempts {esc(record.get('attempts', 0))}",
        f"priority {esc(record.get('priority', 0))}",
    ]
    if record.get("submitted_by"):
        facts.append(f"submitted by {esc(record['submitted_by'])}")
    if record.get("version") is not None:
        facts.append(f"version {esc(record['version'])}")
    webhook = record.get("webhook")
    if webhook:
        facts.append(f"webhook {esc(webhook.get('status', ''))} ({esc(webhook.get('url', ''))})")
    bar = progress_bar(record) if status not in FINISHED else ""
    return (
        f'<div class="asyncnb-details-body"><b>workload</b> <code>{esc(record.get("id", ""))}'
        f"</code> {status_badge(status)} <span style='color:#57606a;font-size:0.85em'>"
        f"{' · '.join(facts)}</span>"
        + (f"<div>{bar}</div>" if bar else "")
        + timings(record, now)
        + stream
        + result_block(record)
        + error_block(record)
        + (f"<div>{message}</div>" if message else "")
        + "</div>"
    )


def outcome(record: dict[str, Any]) -> str:
    """What the try-it box shows of a workload it submitted."""
    status = str(record.get("status", "?"))
    head = f"<code>{esc(record.get('id', ''))}</code> {status_badge(status)}"
    if status not in FINISHED:
        return f"{head} {progress_bar(record)}"
    return head + result_block(record) + error_block(record)
