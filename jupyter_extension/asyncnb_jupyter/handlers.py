"""Routes under <base_url>/asyncnb: the owner's page, key management, and the workload API.

Two kinds of caller:

- the owner, with Jupyter credentials (token header, `?token=`, login cookie), through Jupyter's
  authentication and its authorizer (resource "asyncnb": GET is "read", POST and DELETE are
  "write"). Their requests go upstream with this server's admin token, attributed "owner".
- a colleague with an asyncnb API key (`Authorization: Bearer ank_...`), on the workload routes
  only (KeyOrJupyterHandler): no Jupyter authentication, authorizer or XSRF check (no browser
  sends an Authorization header cross-site without a CORS preflight, which Jupyter grants only
  where allow_origin is configured), and the key, not the admin token, goes upstream, so the
  gateway decides what it may do (API, scope, ownership, quotas) and its 401/403/429 come back
  as they are. A key on any other route is refused before Jupyter's authentication
  (keys.refuse_keys_elsewhere).

The proxied routes forward only the gateway's own headers; Jupyter credentials never go
upstream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import httpx
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.call_context import CallContext
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.iostream import StreamClosedError

from asyncnb.contract.keys import KEY_ID_PATTERN
from asyncnb.contract.names import ROUTABLE_API_NAME_PATTERN, WORKLOAD_ID_PATTERN

from .keys import header_key
from .page import render_page
from .upstream import Upstream

AUTH_RESOURCE = "asyncnb"
SETTINGS_KEY = "asyncnb_upstream"

# The gateway's rules: an API name is a DNS label, and never a reserved name (so `/apis/...`,
# `/metrics`, `/docs` never reach the gateway with this server's admin token); a workload id
# is 32 hex digits.
API = rf"(?P<api>{ROUTABLE_API_NAME_PATTERN})"
WORKLOAD = rf"(?P<workload_id>{WORKLOAD_ID_PATTERN})"
KEY_ID = rf"(?P<key_id>{KEY_ID_PATTERN})"

FORWARDED_REQUEST_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Idempotency-Key",
    "X-Webhook-URL",
    "X-Webhook-Events",
    "X-Priority",
    "Last-Event-ID",
    "Prefer",
    "Accept",
)
RETURNED_HEADERS = (
    "Idempotent-Replayed",
    "Preference-Applied",
    "Retry-After",
    "Content-Disposition",
)
# What a key's refusal carries (the gateway's challenge), relayed only to key requests.
RETURNED_TO_KEYS = ("WWW-Authenticate",)
FLUSH_BYTES = 64 * 1024
BODY_QUEUE_CHUNKS = 16


class AsyncNBHandler(APIHandler):
    """JSON routes of the extension."""

    auth_resource = AUTH_RESOURCE

    @property
    def upstream(self) -> Upstream:
        upstream: Upstream = self.settings[SETTINGS_KEY]
        return upstream

    def compute_etag(self) -> None:
        # Statuses change from one poll to the next; never answer 304 from a stale hash.
        return None

    def jupyter_path(self, *parts: str) -> str:
        return url_path_join(self.base_url, "asyncnb", *parts)

    def jupyter_url(self, *parts: str) -> str:
        return f"{self.request.protocol}://{self.request.host}{self.jupyter_path(*parts)}"

    def fail(self, status: int, detail: str, retry_after: int | None = None) -> None:
        self.set_status(status)
        if retry_after is not None:
            self.set_header("Retry-After", str(retry_after))
        self.finish(json.dumps({"detail": detail}))


class ProxyHandler(AsyncNBHandler):
    """Relays one request to the gateway and its answer back, streaming both bodies."""

    # The asyncnb key this request came with (KeyOrJupyterHandler); None: the owner's request.
    api_key: str | None = None

    def upstream_auth_headers(self) -> dict[str, str]:
        """The key for a key request, else this server's admin token."""
        if self.api_key is not None:
            return {"Authorization": f"Bearer {self.api_key}"}
        return self.upstream.auth_headers()

    @property
    def content_security_policy(self) -> str:
        # Results and rendered notebooks carry content chosen by whoever submitted the payload;
        # served from Jupyter's origin, they must never run script or reach its cookies.
        return f"{super().content_security_policy}; sandbox"

    def build_upstream_request(
        self, method: str, path: str, content: AsyncIterator[bytes] | None = None
    ) -> httpx.Request:
        headers = {
            name: self.request.headers[name]
            for name in FORWARDED_REQUEST_HEADERS
            if name in self.request.headers
        }
        if content is None:
            # Only a streamed POST relays a body; a stray length would stall the gateway.
            headers.pop("Content-Length", None)
        # Bodies are relayed byte for byte: ask for them uncompressed.
        headers["Accept-Encoding"] = "identity"
        headers.update(self.upstream_auth_headers())
        params = httpx.QueryParams(
            [
                (name, value.decode("utf-8", "replace"))
                for name, values in self.request.query_arguments.items()
                if name != "token"  # Jupyter's token, not the gateway's
                for value in values
            ]
        )
        return self.upstream.client.build_request(
            method, self.upstream.url + path, headers=headers, params=params, content=content
        )

    def answer_transport_error(self, exc: httpx.HTTPError) -> None:
        if isinstance(exc, httpx.TimeoutException):
            self.fail(504, f"the asyncnb gateway did not answer in time ({type(exc).__name__})")
        else:
            self.log.warning("asyncnb gateway unreachable: %r", exc)
            self.fail(503, self.upstream.down_detail(), retry_after=2)

    async def exchange(
        self, method: str, path: str, rewrite: Callable[[Any], None] | None = None
    ) -> None:
        try:
            response = await self.upstream.client.send(
                self.build_upstream_request(method, path), stream=True
            )
        except httpx.HTTPError as exc:
            self.answer_transport_error(exc)
            return
        await self.relay(response, rewrite)

    async def relay(
        self, response: httpx.Response, rewrite: Callable[[Any], None] | None = None
    ) -> None:
        try:
            await self._relay(response, rewrite)
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, rewrite: Callable[[Any], None] | None) -> None:
        status = response.status_code
        if status in (401, 403) and self.api_key is None:
            # The owner passed Jupyter's auth; a refusal here is this server's own token.
            self.log.error("the asyncnb gateway refused the server's token (%d)", status)
            self.fail(502, "the asyncnb gateway refused this Jupyter server's token")
            return
        # A key's 401/403/429 are the gateway's decision about that key: relayed as they are.
        self.set_status(status, reason=response.reason_phrase or None)
        returned = RETURNED_HEADERS + (RETURNED_TO_KEYS if self.api_key is not None else ())
        for name in returned:
            if name in response.headers:
                self.set_header(name, response.headers[name])
        if self.api_key is not None and status < 400:
            # A colleague's call is activity of this server (JupyterHub's culler sees it).
            self.settings["api_last_activity"] = datetime.now(timezone.utc)
        location = response.headers.get("Location")
        if location is not None:
            self.set_header(
                "Location", self.jupyter_path(location[1:]) if location[:1] == "/" else location
            )
        content_type = response.headers.get("Content-Type", "application/octet-stream")
        if rewrite is not None and status == 200 and content_type.startswith("application/json"):
            data = json.loads(await response.aread())
            rewrite(data)
            self.finish(json.dumps(data), set_content_type=content_type)
            return
        self.set_header("Content-Type", content_type)
        if status in (204, 304):
            self.finish(set_content_type=content_type)
            return
        if "Content-Length" in response.headers:
            self.set_header("Content-Length", response.headers["Content-Length"])
        streaming = content_type.startswith("text/event-stream")
        if streaming:
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Accel-Buffering", "no")
            await self.flush()  # the headers now: a client knows the stream is open
        pending = 0
        try:
            async for chunk in response.aiter_raw():
                self.write(chunk)
                pending += len(chunk)
                # An event stream goes out event by event, never held back in a buffer.
                if pending >= FLUSH_BYTES or streaming:
                    await self.flush()
                    pending = 0
        except StreamClosedError:
            return  # the client went away
        except httpx.HTTPError as exc:
            if self._headers_written:
                raise  # too late for an error answer: tornado drops the connection
            self.clear()
            self.answer_transport_error(exc)
            return
        self.finish(set_content_type=content_type)

    def endpoint_rewriter(self, data: Any) -> None:
        """Point `endpoint` of API records at this Jupyter server instead of the gateway."""
        records = data.get("apis", []) if isinstance(data, dict) and "apis" in data else [data]
        for record in records:
            if isinstance(record, dict) and isinstance(record.get("name"), str):
                record["endpoint"] = self.jupyter_url(record["name"])


KEYS_NEED_ADMIN = (
    "the asyncnb gateway at {url} refused this Jupyter server's token on /keys ({status}): "
    "managing API keys needs the gateway's admin token. Set c.AsyncNB.gateway_token (or "
    "$ASYNCNB_TOKEN when the server starts) to the admin token of that gateway, or let the "
    "extension start its own gateway; a user token may call APIs but not manage keys"
)


def key_or_jupyter(method: Callable[..., Any]) -> Callable[..., Any]:
    """For a key request, the method runs at once (the gateway checks the key); for anyone
    else, behind Jupyter's @web.authenticated and @authorized, as on every other route."""
    guarded = web.authenticated(authorized(method))

    @functools.wraps(method)
    def wrapper(self: ProxyHandler, *args: Any, **kwargs: Any) -> Any:
        if self.api_key is not None:
            return method(self, *args, **kwargs)
        return guarded(self, *args, **kwargs)

    # It authenticates by itself (a key, else Jupyter's login): Jupyter's own gate, under
    # ServerApp.allow_unauthenticated_access=False, would refuse every key request.
    return allow_unauthenticated(wrapper)


class KeyOrJupyterHandler(ProxyHandler):
    """A workload route: an asyncnb API key in `Authorization`, else Jupyter credentials."""

    async def prepare(self) -> None:  # type: ignore[override]
        key = header_key(self.request)
        if key is None:
            await super().prepare()
            return
        # What JupyterHandler.prepare does, less asking the identity provider who this is,
        # the authorizer and the XSRF and origin checks: the caller is nobody to Jupyter, and
        # the key goes upstream instead of this server's token.
        CallContext.set(CallContext.JUPYTER_HANDLER, self)
        self.api_key = key
        self.current_user = None
        self._jupyter_current_user = None
        if not self.check_host():
            raise web.HTTPError(403)
        self.set_cors_headers()


class PageHandler(JupyterHandler):
    """`/asyncnb/`: the owner's page: the APIs, their keys (create, revoke), curl lines."""

    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        upstream: Upstream = self.settings[SETTINGS_KEY]
        apis: list[dict[str, Any]] = []
        keys: list[dict[str, Any]] = []
        problem = keys_problem = None

        async def fetch(path: str) -> httpx.Response:
            return await upstream.client.get(
                upstream.url + path, headers=upstream.auth_headers(), timeout=10.0
            )

        try:
            apis_answer, keys_answer = await asyncio.gather(fetch("/apis"), fetch("/keys"))
            if apis_answer.status_code == 200:
                apis = list(apis_answer.json().get("apis", []))
            else:
                problem = f"the asyncnb gateway answered {apis_answer.status_code}"
            if keys_answer.status_code == 200:
                keys = list(keys_answer.json().get("keys", []))
            elif keys_answer.status_code in (401, 403):
                keys_problem = KEYS_NEED_ADMIN.format(
                    url=upstream.url, status=keys_answer.status_code
                )
            else:
                keys_problem = f"the asyncnb gateway answered {keys_answer.status_code} on /keys"
        except (httpx.HTTPError, ValueError):
            problem = upstream.down_detail()
        if problem and not keys_problem:
            keys_problem = "keys are managed here once the gateway answers"
        nonce = secrets.token_urlsafe(18)
        root = f"{self.request.protocol}://{self.request.host}"
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # Only this page's own script and style run: no external or injected script.
        self.set_header(
            "Content-Security-Policy",
            f"{self.content_security_policy}; default-src 'none'; script-src 'nonce-{nonce}'; "
            f"style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; form-action 'none'",
        )
        self.finish(
            render_page(
                apis,
                root + url_path_join(self.base_url, "asyncnb"),
                problem,
                keys=keys,
                keys_problem=keys_problem,
                keys_url=url_path_join(self.base_url, "asyncnb", "_keys"),
                xsrf=self.xsrf_token.decode("ascii"),
                nonce=nonce,
            )
        )


class APIsHandler(ProxyHandler):
    """`/asyncnb/apis`: every API with its state and counts (the gateway's `GET /apis`)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.exchange("GET", "/apis", self.endpoint_rewriter)


class GatewayStatusHandler(AsyncNBHandler):
    """`/asyncnb/_gateway`: the managed gateway's state, pid, port and restarts."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(json.dumps(await self.upstream.info()))


class KeysBaseHandler(AsyncNBHandler):
    """The owner's key management: the gateway's /keys, with this server's admin token.

    Answers are never cached (one of them holds a key), and no key is ever logged: the
    bodies pass through untouched, and only statuses are.
    """

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    async def keys_call(
        self, method: str, path: str, content: bytes | None = None, api: str | None = None
    ) -> None:
        headers = {**self.upstream.auth_headers(), "Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            response = await self.upstream.client.request(
                method,
                self.upstream.url + path,
                headers=headers,
                params={"api": api} if api is not None else None,
                content=content,
                timeout=30.0,
            )
        except httpx.TimeoutException as exc:
            self.fail(504, f"the asyncnb gateway did not answer in time ({type(exc).__name__})")
            return
        except httpx.HTTPError as exc:
            self.log.warning("asyncnb gateway unreachable: %s", type(exc).__name__)
            self.fail(503, self.upstream.down_detail(), retry_after=2)
            return
        status = response.status_code
        if status in (401, 403):
            # The owner passed Jupyter's auth: this server's token is not the admin token.
            self.log.error("the asyncnb gateway refused the server's token on /keys (%d)", status)
            self.fail(502, KEYS_NEED_ADMIN.format(url=self.upstream.url, status=status))
            return
        self.set_status(status, reason=response.reason_phrase or None)
        content_type = response.headers.get("Content-Type", "application/json")
        self.finish(response.content, set_content_type=content_type)


class KeysHandler(KeysBaseHandler):
    """`/asyncnb/_keys`: list the keys (`?api=NAME`: those that may call it), create one."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.keys_call("GET", "/keys", api=self.get_query_argument("api", None))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.keys_call("POST", "/keys", content=self.request.body)


class KeyHandler(KeysBaseHandler):
    """`/asyncnb/_keys/{id}`: revoke a key (it gets 401 from then on)."""

    @web.authenticated
    @authorized
    async def delete(self, key_id: str) -> None:
        await self.keys_call("DELETE", f"/keys/{key_id}")


@web.stream_request_body
class APIRouteHandler(KeyOrJupyterHandler):
    """`/asyncnb/{api}`: GET the API's status, POST a workload (the body streams through)."""

    _chunks: asyncio.Queue[bytes | None] | None = None
    _upstream_task: asyncio.Future[httpx.Response] | None = None

    _refusal: web.HTTPError | None = None

    async def prepare(self) -> None:  # type: ignore[override]
        try:
            await super().prepare()
        except web.HTTPError as exc:
            if self.request.method != "POST":
                raise
            # Refused once the body is read (and dropped): tornado resets a connection that
            # is closed with a body unread, and the client would never see the 403.
            self._refusal = exc
            return
        if self.request.method != "POST":
            return
        # The body goes upstream as it arrives, so who may send it is settled first: a key
        # request goes with its key (the gateway decides), Jupyter users through the
        # authorizer; a refused request's body is dropped and post() answers 403.
        if self.api_key is None:
            user = self.current_user
            if not user or not await ensure_async(
                self.authorizer.is_authorized(self, user, "write", AUTH_RESOURCE)
            ):
                return
        self._chunks = asyncio.Queue(maxsize=BODY_QUEUE_CHUNKS)
        request = self.build_upstream_request(
            "POST", "/" + self.path_kwargs["api"], content=self._body()
        )
        self._upstream_task = asyncio.ensure_future(self.upstream.client.send(request, stream=True))

    async def _body(self) -> AsyncIterator[bytes]:
        assert self._chunks is not None
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def _feed(self, item: bytes | None) -> None:
        task, chunks = self._upstream_task, self._chunks
        if task is None or chunks is None or task.done():
            return  # the gateway already answered or is unreachable: the rest is dropped
        put = asyncio.ensure_future(chunks.put(item))
        racing: set[asyncio.Future[Any]] = {put, task}
        await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()

    async def data_received(self, chunk: bytes) -> None:
        await self._feed(chunk)

    def on_connection_close(self) -> None:
        if self._upstream_task is not None and not self._upstream_task.done():
            self._upstream_task.cancel()
        super().on_connection_close()

    @key_or_jupyter
    async def get(self, api: str) -> None:
        await self.exchange("GET", f"/{api}", self.endpoint_rewriter)

    async def post(self, api: str) -> None:
        if self._refusal is not None:
            raise self._refusal  # a refusal of prepare's, with its own reason
        await self._post(api)

    @key_or_jupyter
    async def _post(self, api: str) -> None:
        await self._feed(None)
        if self._upstream_task is None:
            raise web.HTTPError(403)
        try:
            response = await self._upstream_task
        except asyncio.CancelledError:
            if self._upstream_task.cancelled():
                return  # the client went away (on_connection_close)
            raise
        except httpx.HTTPError as exc:
            self.answer_transport_error(exc)
            return
        await self.relay(response)


class WorkloadListHandler(KeyOrJupyterHandler):
    """`/asyncnb/{api}/workloads`: recent workloads (`?status=`, `?limit=`, `?submitted_by=`)."""

    @key_or_jupyter
    async def get(self, api: str) -> None:
        await self.exchange("GET", f"/{api}/workloads")


class WorkloadHandler(KeyOrJupyterHandler):
    """`/asyncnb/{api}/{id}`: GET the status record (`Prefer: wait=N` too), DELETE cancels."""

    @key_or_jupyter
    async def get(self, api: str, workload_id: str) -> None:
        await self.exchange("GET", f"/{api}/{workload_id}")

    @key_or_jupyter
    async def delete(self, api: str, workload_id: str) -> None:
        await self.exchange("DELETE", f"/{api}/{workload_id}")


class ResultHandler(KeyOrJupyterHandler):
    """`/asyncnb/{api}/{id}/result`: the raw result, streamed; `.../notebook` likewise the
    executed notebook of a notebook API (`?format=html`); `.../events` the workload's
    Server-Sent Events, relayed event by event; `.../logs` its log."""

    @key_or_jupyter
    async def get(self, api: str, workload_id: str, view: str) -> None:
        await self.exchange("GET", f"/{api}/{workload_id}/{view}")


class NotFoundHandler(AsyncNBHandler):
    """Anything else under /asyncnb: a JSON 404, and only after authentication."""

    def _not_found(self) -> None:
        self.fail(404, f"no asyncnb route {self.request.path}")

    @web.authenticated
    @authorized
    def get(self, *args: str) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    def post(self, *args: str) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    def put(self, *args: str) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    def patch(self, *args: str) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    def delete(self, *args: str) -> None:
        self._not_found()


# Relative to the server's base URL (ExtensionApp joins them with url_path_join); first match
# wins, so the fixed names come before the {api} patterns. Only the {api} routes take keys.
default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/asyncnb/?", PageHandler),
    (r"/asyncnb/apis", APIsHandler),
    (r"/asyncnb/_gateway", GatewayStatusHandler),
    (r"/asyncnb/_keys", KeysHandler),
    (rf"/asyncnb/_keys/{KEY_ID}", KeyHandler),
    (rf"/asyncnb/{API}", APIRouteHandler),
    (rf"/asyncnb/{API}/workloads", WorkloadListHandler),
    (rf"/asyncnb/{API}/{WORKLOAD}", WorkloadHandler),
    (rf"/asyncnb/{API}/{WORKLOAD}/(?P<view>result|notebook|events|logs)", ResultHandler),
    (r"/asyncnb/(.*)", NotFoundHandler),
]
