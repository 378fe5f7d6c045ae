"""The HTML page at <base_url>/asyncnb/: what a colleague needs to call the APIs."""

from __future__ import annotations

import html
import shlex
from typing import Any

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; }
th { background: #f4f4f4; }
.state-ready { color: #1a7f37; } .state-error { color: #cf222e; }
pre { background: #f6f8fa; padding: .6rem; margin: .2rem 0; white-space: pre-wrap;
      word-break: break-all; display: inline-block; min-width: 60%; }
button { vertical-align: top; margin-left: .4rem; }
.problem { color: #cf222e; font-weight: bold; }
"""

_COPY = (
    "navigator.clipboard.writeText(this.previousElementSibling.textContent)"
    ".then(() => { this.textContent = 'copied'; })"
)


def curl_lines(endpoint: str) -> list[str]:
    """Submit, then wait for the status record, with a token from $JUPYTER_TOKEN."""
    auth = '-H "Authorization: token $JUPYTER_TOKEN"'
    target = shlex.quote(endpoint)
    return [
        f"curl -s -X POST {target} {auth} "
        "-H 'Content-Type: application/json' --data-binary @payload.json",
        f"curl -s {shlex.quote(endpoint + '/ID')} {auth} -H 'Prefer: wait=30'",
    ]


def _copyable(text: str) -> str:
    button = f'<button onclick="{html.escape(_COPY)}">copy</button>'
    return f"<div><pre>{html.escape(text)}</pre>{button}</div>"


def render_page(apis: list[dict[str, Any]], root: str, problem: str | None) -> str:
    """The page: one row per API, then the curl lines of each, all values escaped."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>asyncnb APIs</title>",
        f"<style>{_STYLE}</style></head><body><h1>asyncnb APIs</h1>",
        "<p>Asynchronous inference APIs deployed from notebooks on this Jupyter server. "
        "Calls need your Jupyter token (<code>Authorization: token ...</code>) or login. "
        f"JSON list: <a href='{esc(root)}/apis'>{esc(root)}/apis</a>.</p>",
    ]
    if problem:
        parts.append(f"<p class='problem'>{esc(problem)}</p>")
    if not apis and not problem:
        parts.append(
            "<p>No API is deployed yet. In a notebook of this server: "
            "<code>%load_ext asyncnb</code>, then a cell starting with "
            "<code>%%async_api NAME</code> that defines a predictor class.</p>"
        )
    if apis:
        parts.append(
            "<table><tr><th>API</th><th>version</th><th>state</th><th>queued</th>"
            "<th>in progress</th><th>completed</th><th>failed</th><th>endpoint</th></tr>"
        )
        for info in apis:
            name = str(info.get("name", ""))
            state = str(info.get("state", ""))
            endpoint = f"{root}/{name}"
            cells = [
                esc(name),
                esc(str(info.get("version", ""))),
                f"<span class='state-{esc(state)}'>{esc(state)}</span>",
                *(esc(str(info.get(k, ""))) for k in ("queue_depth", "in_progress")),
                *(esc(str(info.get(k, ""))) for k in ("completed", "failed")),
                f"<code>{esc(endpoint)}</code>",
            ]
            parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        for info in apis:
            name = str(info.get("name", ""))
            parts.append(f"<h2>{esc(name)}</h2>")
            parts.extend(_copyable(line) for line in curl_lines(f"{root}/{name}"))
    parts.append("</body></html>")
    return "".join(parts)
