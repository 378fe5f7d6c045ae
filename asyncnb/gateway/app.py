"""The gateway's ASGI app: the FastAPI routes behind the fast path, and how errors are answered.

The app knows nothing of where its engine comes from: the process that serves it passes a
lifespan that builds one and sets `app.state.engine` (server/lifespan.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..contract.settings import GatewaySettings
from ..contract.version import __version__
from ..engine.errors import EngineError
from .asgi import DeployBodyLimit
from .compat import add_compat_routes
from .errors import INTERNAL_ERROR, ErrorAnswer, HTTPError, answer_for, error_answer
from .event_routes import add_event_routes
from .fastpath import StatusFastPath
from .key_routes import add_key_routes
from .routes import add_admin_routes, add_workload_routes

logger = logging.getLogger(__name__)
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_asgi_app(settings: GatewaySettings, lifespan: Lifespan | None = None) -> StatusFastPath:
    """What uvicorn serves: the FastAPI app behind the fast path for submits and polls."""
    return StatusFastPath(create_app(settings, lifespan))


def create_app(settings: GatewaySettings, lifespan: Lifespan | None = None) -> FastAPI:
    app = FastAPI(
        title="asyncnb gateway",
        version=__version__,
        description="Asynchronous inference APIs: submit now, fetch the result later.",
        lifespan=lifespan,
        docs_url=None,
        openapi_url=None,
        redoc_url=None,
        # a redirect to the same path with a slash would build its Location from `Host`
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.engine = None
    app.add_middleware(DeployBodyLimit, max_bytes=settings.max_deploy_bytes)
    _install_error_handlers(app)
    add_admin_routes(app)
    add_key_routes(app)
    add_event_routes(app)
    add_compat_routes(app, settings)  # before /{api}/...: `compat` is a reserved name
    add_workload_routes(app)
    return app


def _response(answer: ErrorAnswer) -> Response:
    return Response(
        answer.body,
        status_code=answer.status,
        headers=answer.headers or None,
        media_type="application/json",
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> Response:
        return _response(answer_for(exc))

    @app.exception_handler(HTTPError)
    async def gateway_error(request: Request, exc: HTTPError) -> Response:
        return _response(answer_for(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _response(error_answer(exc.status_code, exc.detail, dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _response(error_answer(422, _clean_errors(exc.errors())))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _response(INTERNAL_ERROR)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
