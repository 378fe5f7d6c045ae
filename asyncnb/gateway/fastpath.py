"""Shortcuts for the two most frequent requests: `POST /{api}` and polling `GET /{api}/{id}`.

Profiling the gateway under load showed the framework's routing, dependency solving and
response classes costing several times the work itself. This ASGI app wraps the FastAPI
app (outside it, so these requests skip its middleware stack too) and answers the plain
cases directly: a submit runs the same `submit_workload` as the FastAPI route, a poll reads
the workload from memory, and both check access and answer errors with the same functions as
the routes (`auth.authorize`, `errors.answer_for`). Anything else (an unknown id,
`Prefer: wait` on a poll) falls through to the FastAPI routes, which stay the reference
behaviour and the documented API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ..contract.names import api_name_problem, is_workload_id
from ..engine import jsoncodec
from ..engine.errors import EngineError
from .asgi import repeated_header, send_json
from .auth import Access, authorize
from .errors import INTERNAL_ERROR, HTTPError, answer_for, error_answer
from .submission import submit_workload

Scope = dict[str, Any]
logger = logging.getLogger(__name__)


class StatusFastPath:
    """`app` is the gateway's FastAPI app; its `state` holds the engine and settings."""

    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        repeated = repeated_header(scope["headers"])
        if repeated is not None:  # every path reads each header once, and the same way
            answer = error_answer(400, f"the request repeats the {repeated} header")
            await send_json(send, answer.status, answer.body, [(b"connection", b"close")])
            return
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if scope["method"] == "GET":
                if await self._poll(scope, tracked_send):
                    return
            elif scope["method"] == "POST" and self._submits(scope):
                await self._submit(scope, receive, tracked_send)
                return
        except Exception:
            # What FastAPI's error handler does for its routes: no traceback to the client.
            logger.exception("unexpected error on %s %s", scope["method"], scope["path"])
            if not started:
                await send_json(send, INTERNAL_ERROR.status, INTERNAL_ERROR.body)
            return
        await self.app(scope, receive, send)

    def _engine(self) -> Any:
        return getattr(self.app.state, "engine", None)

    def _submits(self, scope: Scope) -> bool:
        parts = scope["path"].split("/")
        return len(parts) == 2 and not api_name_problem(parts[1]) and self._engine() is not None

    async def _refuse(self, send: Any, exc: EngineError | HTTPError) -> None:
        answer = answer_for(exc)
        await send_json(send, answer.status, answer.body, answer.raw_headers())

    async def _submit(self, scope: Scope, receive: Any, send: Any) -> None:
        state: Any = self.app.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        api = scope["path"][1:]
        try:
            caller = authorize(
                state.settings,
                state.engine.keys,
                headers.get("authorization", ""),
                Access.INVOKE,
                api,
            )
            answer = await submit_workload(
                state.engine, state.settings, api, headers, _body(receive), caller
            )
        except (EngineError, HTTPError) as exc:
            await self._refuse(send, exc)
            return
        except _ClientGone:
            return
        await send_json(
            send,
            answer.status,
            jsoncodec.dumps(answer.body),
            [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()],
        )

    async def _poll(self, scope: Scope, send: Any) -> bool:
        """Answer a plain poll of an in-memory workload; False to leave it to the route."""
        parts = scope["path"].split("/")
        if len(parts) != 3 or not is_workload_id(parts[2]) or api_name_problem(parts[1]):
            return False
        engine = self._engine()
        if engine is None:
            return False
        headers = dict(scope["headers"])
        if b"prefer" in headers:
            return False
        workload = engine.peek(parts[1], parts[2])
        if workload is None:
            return False  # the route looks in storage (and checks access once, there)
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        try:
            caller = authorize(
                self.app.state.settings, engine.keys, authorization, Access.WORKLOAD, parts[1]
            )
            caller.may_see(workload)
        except HTTPError as exc:
            await self._refuse(send, exc)
            return True
        await send_json(send, 200, jsoncodec.dumps(caller.view(workload)))
        return True


class _ClientGone(Exception):
    pass


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
