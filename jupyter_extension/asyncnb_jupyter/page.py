"""The owner's page at <base_url>/asyncnb/: the APIs, their keys, and what a colleague needs.

Rendered on the server with every value HTML-escaped; the small script (no external one: the
page's Content-Security-Policy admits only its own nonce) creates and revokes keys through
/asyncnb/_keys with Jupyter's XSRF token, and renders what comes back with textContent only.
"""

from __future__ import annotations

import html
import json
from typing import Any

from asyncnb.contract.keys import ALL_APIS, curl_lines

KEY_VARIABLE = "ASYNCNB_KEY"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin-bottom: 1rem; }
th, td { border-bottom: 1px solid #ddd; padding: .35rem .7rem; text-align: left; }
th { background: #f4f4f4; }
.state-ready, .state-active { color: #1a7f37; }
.state-error, .state-revoked, .state-expired { color: #cf222e; }
pre { background: #f6f8fa; padding: .6rem; margin: .2rem 0; white-space: pre-wrap;
      word-break: break-all; display: inline-block; min-width: 60%; }
button { vertical-align: top; margin-left: .4rem; }
.problem, .asyncnb-key-error { color: #cf222e; font-weight: bold; }
.warning { background: #fff8c5; padding: .5rem .8rem; border-left: 4px solid #d4a72c; }
form.asyncnb-key-form { margin: .5rem 0 1rem; padding: .6rem .8rem; background: #fafafa;
      border: 1px solid #e5e5e5; display: inline-block; }
form.asyncnb-key-form label { margin-right: .9rem; white-space: nowrap; }
form.asyncnb-key-form input[type=number] { width: 6rem; }
.asyncnb-new-key { border: 2px solid #1a7f37; padding: .5rem .8rem; margin: .5rem 0 1rem; }
.muted { color: #666; }
"""

# Copy buttons, the key form and the revoke buttons; values are set with textContent only.
_SCRIPT = """
(function () {
  'use strict';
  const page = document.body.dataset;

  function xsrfToken() {
    // Jupyter's XSRF token: the one the server rendered into this page, else its _xsrf cookie
    // (as Jupyter's front-ends send it). Token-less cookie requests are refused by the server.
    if (page.xsrf) return page.xsrf;
    const found = document.cookie.match(/(?:^|;\\s*)_xsrf=([^;]*)/);
    return found ? decodeURIComponent(found[1]) : '';
  }

  async function call(method, url, body) {
    const headers = {'X-XSRFToken': xsrfToken(), 'Accept': 'application/json'};
    const init = {method: method, headers: headers, credentials: 'same-origin', cache: 'no-store'};
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      // No answer at all (server gone, connection dropped): an answer like the others, so
      // every caller says why and gives its button back.
      return {ok: false, status: 0, data: {detail: 'the Jupyter server did not answer'}};
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return {ok: response.ok, status: response.status, data: data};
  }

  function problem(answer) {
    const data = answer.data || {};
    let detail = data.detail !== undefined ? data.detail : (data.message || data.reason || '');
    if (Array.isArray(detail)) {
      detail = detail.map(function (d) {
        return (d.loc ? d.loc.filter(function (l) { return l !== 'body'; }).join('.') + ': ' : '')
          + (d.msg || JSON.stringify(d));
      }).join('; ');
    } else if (typeof detail !== 'string') {
      detail = JSON.stringify(detail);
    }
    if (!answer.status) return detail;
    return answer.status + (detail ? ': ' + detail : '');
  }

  function copyButton(pre) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'asyncnb-copy';
    button.textContent = 'copy';
    pre.after(button);
  }

  document.addEventListener('click', function (event) {
    const button = event.target.closest('button.asyncnb-copy');
    if (!button) return;
    const text = button.previousElementSibling.textContent;
    const done = function () { button.textContent = 'copied'; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {
      const range = document.createRange();
      range.selectNodeContents(button.previousElementSibling);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { document.execCommand('copy'); done(); } catch (e) { /* selected: copy by hand */ }
    }
  });

  function cell(row, text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function limits(key) {
    const parts = [];
    if (key.rate_limit !== null && key.rate_limit !== undefined) {
      parts.push(key.rate_limit + '/s (burst ' + key.burst + ')');
    }
    if (key.max_queued !== null && key.max_queued !== undefined) {
      parts.push('max ' + key.max_queued + ' queued');
    }
    return parts.join(', ') || '-';
  }

  function renderKeys(section, keys) {
    const body = section.querySelector('tbody.asyncnb-keys');
    const none = section.querySelector('.asyncnb-no-keys');
    body.replaceChildren();
    keys.forEach(function (key) {
      const row = document.createElement('tr');
      row.className = 'asyncnb-key';
      row.dataset.keyId = key.id;
      row.dataset.keyName = key.name;
      const apis = key.apis.indexOf('*') >= 0 ? ' (all APIs)' : '';
      cell(row, key.name + apis, 'asyncnb-key-name');
      cell(row, key.prefix + '\u2026', 'asyncnb-key-prefix');
      cell(row, key.scopes.join(', '), 'asyncnb-key-scopes');
      cell(row, key.state, 'asyncnb-key-state state-' + key.state);
      cell(row, key.last_used_at || 'never', 'asyncnb-key-last-used');
      cell(row, key.expires_at || 'never', 'asyncnb-key-expires');
      cell(row, limits(key), 'asyncnb-key-limits');
      const action = cell(row, '');
      if (key.state === 'active') {
        const revoke = document.createElement('button');
        revoke.type = 'button';
        revoke.className = 'asyncnb-revoke';
        revoke.textContent = 'Revoke';
        action.appendChild(revoke);
      }
      body.appendChild(row);
    });
    if (none) none.hidden = keys.length > 0;
  }

  async function refresh(section) {
    const api = section.dataset.api;
    const url = page.keysUrl + (api ? '?api=' + encodeURIComponent(api) : '');
    const answer = await call('GET', url);
    if (answer.ok) {
      let keys = answer.data.keys;
      if (!api) {  // the section of keys for no deployed API
        const deployed = JSON.parse(page.apis || '[]');
        keys = keys.filter(function (k) {
          return k.apis.indexOf('*') < 0 && !k.apis.some(function (a) {
            return deployed.indexOf(a) >= 0;
          });
        });
      }
      renderKeys(section, keys);
    }
    return answer;
  }

  function sectionOf(element) { return element.closest('section.asyncnb-api'); }

  document.addEventListener('click', async function (event) {
    const button = event.target.closest('button.asyncnb-revoke');
    if (!button) return;
    const row = button.closest('tr.asyncnb-key');
    const section = sectionOf(button);
    const status = section.querySelector('.asyncnb-key-status');
    const question = 'Revoke the key of ' + row.dataset.keyName + '? It stops working at once.';
    if (!window.confirm(question)) return;
    button.disabled = true;
    const answer = await call('DELETE', page.keysUrl + '/' + encodeURIComponent(row.dataset.keyId));
    status.textContent = answer.ok
      ? 'Revoked ' + row.dataset.keyName + ': it gets 401 from now on.'
      : 'Could not revoke ' + row.dataset.keyName + ': ' + problem(answer);
    status.className = 'asyncnb-key-status' + (answer.ok ? '' : ' asyncnb-key-error');
    button.disabled = false;
    document.querySelectorAll('section.asyncnb-api').forEach(refresh);
  });

  function number(form, name) {
    const value = form.elements[name].value.trim();
    return value === '' ? null : Number(value);
  }

  document.addEventListener('submit', async function (event) {
    const form = event.target.closest('form.asyncnb-key-form');
    if (!form) return;
    event.preventDefault();
    const section = sectionOf(form);
    const status = section.querySelector('.asyncnb-key-status');
    const shown = section.querySelector('.asyncnb-new-key');
    const body = {
      name: form.elements.name.value.trim(),
      apis: [section.dataset.api],
      scopes: ['invoke', 'read'].filter(function (s) { return form.elements[s].checked; }),
    };
    const expires = number(form, 'expires');
    if (expires !== null) {
      body.expires_in_s = expires * (form.elements.expires_unit.value === 'days' ? 86400 : 3600);
    }
    const rate = number(form, 'rate_limit');
    if (rate !== null) body.rate_limit = rate;
    const queued = number(form, 'max_queued');
    if (queued !== null) body.max_queued = queued;
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    shown.hidden = true;
    const answer = await call('POST', page.keysUrl, body);
    submit.disabled = false;
    if (!answer.ok) {
      status.textContent = 'Could not create the key: ' + problem(answer);
      status.className = 'asyncnb-key-status asyncnb-key-error';
      return;
    }
    const key = answer.data;
    status.textContent = '';
    status.className = 'asyncnb-key-status';
    shown.querySelector('.asyncnb-new-key-name').textContent = key.name;
    shown.querySelector('pre.asyncnb-new-key-text').textContent = key.key;
    const lines = Array.from(section.querySelectorAll('pre.asyncnb-curl'), function (p) {
      return p.textContent;
    });
    const quoted = "'" + key.key.replace(/'/g, "'\\\\''") + "'";
    shown.querySelector('pre.asyncnb-new-key-curl').textContent =
      ['export ' + page.keyVariable + '=' + quoted].concat(lines).join('\\n');
    shown.hidden = false;
    form.reset();
    await refresh(section);
  });

  document.querySelectorAll('pre.asyncnb-copyable').forEach(copyButton);
})();
"""


def _copyable(text: str, kind: str = "") -> str:
    classes = " ".join(filter(None, ["asyncnb-copyable", kind]))
    return f"<div><pre class='{classes}'>{html.escape(text)}</pre></div>"


def _limits(key: dict[str, Any]) -> str:
    parts = []
    if key.get("rate_limit") is not None:
        parts.append(f"{key['rate_limit']}/s (burst {key.get('burst')})")
    if key.get("max_queued") is not None:
        parts.append(f"max {key['max_queued']} queued")
    return ", ".join(parts) or "-"


def _key_rows(keys: list[dict[str, Any]]) -> str:
    esc = html.escape
    rows = []
    for key in keys:
        state = str(key.get("state", ""))
        apis = [str(a) for a in key.get("apis", [])]
        name = str(key.get("name", "")) + (" (all APIs)" if ALL_APIS in apis else "")
        cells = [
            f"<td class='asyncnb-key-name'>{esc(name)}</td>",
            f"<td class='asyncnb-key-prefix'>{esc(str(key.get('prefix', '')))}\u2026</td>",
            f"<td class='asyncnb-key-scopes'>{esc(', '.join(map(str, key.get('scopes', []))))}"
            "</td>",
            f"<td class='asyncnb-key-state state-{esc(state)}'>{esc(state)}</td>",
            f"<td class='asyncnb-key-last-used'>{esc(str(key.get('last_used_at') or 'never'))}"
            "</td>",
            f"<td class='asyncnb-key-expires'>{esc(str(key.get('expires_at') or 'never'))}</td>",
            f"<td class='asyncnb-key-limits'>{esc(_limits(key))}</td>",
            "<td><button type='button' class='asyncnb-revoke'>Revoke</button></td>"
            if state == "active"
            else "<td></td>",
        ]
        rows.append(
            f"<tr class='asyncnb-key' data-key-id='{esc(str(key.get('id', '')))}' "
            f"data-key-name='{esc(str(key.get('name', '')))}'>" + "".join(cells) + "</tr>"
        )
    return "".join(rows)


def _keys_table(keys: list[dict[str, Any]]) -> str:
    return (
        f"<p class='asyncnb-no-keys muted'{'' if not keys else ' hidden'}>No key yet.</p>"
        "<table class='asyncnb-key-table'><thead><tr><th>key for</th><th>prefix</th>"
        "<th>scopes</th><th>state</th><th>last used</th><th>expires</th><th>limits</th>"
        f"<th></th></tr></thead><tbody class='asyncnb-keys'>{_key_rows(keys)}</tbody></table>"
    )


_KEY_FORM = """
<form class='asyncnb-key-form'>
<strong>New key</strong>
<label>for <input name='name' required maxlength='64' placeholder='bob'
  title='1-64 letters, digits and . _ @ + -'></label>
<label><input type='checkbox' name='invoke' checked> invoke</label>
<label><input type='checkbox' name='read'> read</label>
<label>expires in <input type='number' name='expires' min='1' step='any' placeholder='never'>
  <select name='expires_unit'><option value='hours'>hours</option>
  <option value='days' selected>days</option></select></label>
<label>rate limit <input type='number' name='rate_limit' min='0.001' step='any'
  placeholder='none'> /s</label>
<label>max queued <input type='number' name='max_queued' min='1' step='1'
  placeholder='none'></label>
<button type='submit'>Create key</button>
</form>
<p class='asyncnb-key-status' role='status'></p>
<div class='asyncnb-new-key' hidden>
<p><strong>New key for <span class='asyncnb-new-key-name'></span></strong>: copy it now, it is
shown only this once (the gateway keeps only its hash). Hand it to that person only.</p>
<div><pre class='asyncnb-copyable asyncnb-new-key-text'></pre></div>
<p>Ready to run:</p>
<div><pre class='asyncnb-copyable asyncnb-new-key-curl'></pre></div>
</div>
"""


def keys_for(api: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The keys that may call `api` (its own and the `*` ones), as the gateway's ?api= does."""
    return [k for k in keys if api in k.get("apis", []) or ALL_APIS in k.get("apis", [])]


def render_page(
    apis: list[dict[str, Any]],
    root: str,
    problem: str | None,
    *,
    keys: list[dict[str, Any]] | None = None,
    keys_problem: str | None = None,
    keys_url: str = "",
    xsrf: str = "",
    nonce: str = "",
) -> str:
    """The page: one row per API, then per API its curl lines, its keys and a key form."""
    esc = html.escape
    keys = keys or []
    names = [str(info.get("name", "")) for info in apis]
    data = {
        "root": root,
        "keys-url": keys_url,
        "xsrf": xsrf,
        "apis": json.dumps(names),
        "key-variable": KEY_VARIABLE,
    }
    attributes = " ".join(f"data-{name}='{esc(value)}'" for name, value in data.items())
    nonce_attr = f" nonce='{esc(nonce)}'" if nonce else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>asyncnb APIs</title>",
        f"<style{nonce_attr}>{_STYLE}</style></head><body {attributes}><h1>asyncnb APIs</h1>",
        "<p>Asynchronous inference APIs deployed from notebooks on this Jupyter server. "
        "Colleagues call them with an <strong>API key</strong> that you create below, one "
        f"per person: <code>Authorization: Bearer ${KEY_VARIABLE}</code>. A key reaches only "
        "the workload routes of its APIs (submit, status, result, cancel of its own "
        "workloads; with <em>read</em>, the API's status and recent workloads), never this "
        "server's notebooks, kernels, terminals or files, and you can revoke it at once. "
        f"JSON list: <a href='{esc(root)}/apis'>{esc(root)}/apis</a>.</p>",
        "<p class='warning'>Never hand out your Jupyter token or login: whoever holds it can "
        "run code as you on this server.</p>",
    ]
    if problem:
        parts.append(f"<p class='problem'>{esc(problem)}</p>")
    if keys_problem:
        parts.append(f"<p class='problem asyncnb-keys-problem'>{esc(keys_problem)}</p>")
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
            endpoint = f"{root}/{name}"
            parts.append(
                f"<section class='asyncnb-api' data-api='{esc(name)}' "
                f"data-endpoint='{esc(endpoint)}'><h2>{esc(name)}</h2>"
            )
            parts.append(
                f"<p>With the key in <code>${KEY_VARIABLE}</code>: submit (answers "
                "<code>202</code> with the workload's id), then wait up to 30 s for its "
                "status record and result:</p>"
            )
            parts.extend(
                _copyable(line, "asyncnb-curl") for line in curl_lines(endpoint, KEY_VARIABLE)
            )
            if not keys_problem:
                parts.append("<h3>Keys</h3>")
                parts.append(_keys_table(keys_for(name, keys)))
                parts.append(_KEY_FORM)
            parts.append("</section>")
    orphans = [k for k in keys if not any(keys_for(name, [k]) for name in names)]
    if orphans and not keys_problem:
        parts.append(
            "<section class='asyncnb-api' data-api=''><h2>Keys for no deployed API</h2>"
            f"{_keys_table(orphans)}<p class='asyncnb-key-status' role='status'></p></section>"
        )
    parts.append(f"<script{nonce_attr}>{_SCRIPT}</script></body></html>")
    return "".join(parts)
