"""The HTTP gateway (FastAPI): the AsyncAPI contract over the engine."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .cluster import start_dask, stop_dask, worker_bounds
from .engine import Conflict, Engine, EngineError, EngineSettings, NotFound, Unavailable
from .fastpath import StatusFastPath
from .limits import DeployBodyLimit
from .names import is_workload_id
from .options import APIOptions
from .schemas import (
    NOTEBOOK_MEDIA,
    RESULT_MEDIA,
    Accepted,
    APIList,
    APIRecord,
    DeployedAPI,
    Health,
    Undeployed,
    WorkloadList,
    WorkloadRecord,
    content,
    errors,
    ok,
)
from .settings import GatewaySettings
from .storage import Storage
from .submission import (
    HTTPError,
    prefer_wait,
    submit_workload,
    valid_api,
    webhook_policy,
)
from .workload import Status, Workload

logger = logging.getLogger("asyncnb.gateway")


class DeployRequest(BaseModel):
    predictor: str = Field(description="base64 of cloudpickle.dumps(PredictorClass)")
    config: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _check_token(request: Request, expected: str | None) -> None:
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise HTTPError(
            401,
            "missing token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not given:
        raise HTTPError(
            401,
            "malformed Authorization header: use 'Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPError(403, "invalid token")


def bearer_matches(header: str, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        given.strip().encode(), token.encode()
    )


async def require_user(request: Request) -> None:
    settings: GatewaySettings = request.app.state.settings
    if settings.token is None:
        return
    admin = settings.effective_admin_token
    if admin and bearer_matches(request.headers.get("authorization", ""), admin):
        return
    _check_token(request, settings.token)


async def _require_user_or_query_token(request: Request) -> None:
    """The docs page is opened in a browser, which cannot send a bearer header."""
    token = request.query_params.get("token")
    expected = request.app.state.settings.token
    if token and expected and secrets.compare_digest(token.encode(), expected.encode()):
        return
    await require_user(request)


async def require_admin(request: Request) -> None:
    _check_token(request, request.app.state.settings.effective_admin_token)


def _valid_id(workload_id: str) -> str:
    if not is_workload_id(workload_id):
        raise HTTPError(400, f"invalid workload id {workload_id[:80]!r}: expected 32 hex digits")
    return workload_id


def _base_url(request: Request) -> str:
    settings: GatewaySettings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


def _workload_response(workload: Workload, code: int, **headers: str) -> JSONResponse:
    return JSONResponse(workload.public(), status_code=code, headers=headers or None)


def create_asgi_app(settings: GatewaySettings) -> StatusFastPath:
    """What uvicorn serves: the FastAPI app behind the fast path for submits and polls."""
    return StatusFastPath(create_app(settings))


def create_app(settings: GatewaySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = Storage(settings.storage, settings.storage_options)
        client, cluster = await start_dask(settings, storage)
        engine = Engine(
            storage,
            client,
            EngineSettings(
                inline_payload_bytes=settings.inline_payload_bytes,
                inline_result_bytes=settings.inline_result_bytes,
                max_chunk=settings.max_chunk,
                prefetch=settings.prefetch,
                webhook_attempts=settings.webhook_attempts,
                webhook_backoff_s=settings.webhook_backoff_s,
                sweep_interval_s=settings.sweep_interval_s,
                autoscale_interval_s=settings.autoscale_interval_s,
                webhook_policy=webhook_policy(settings),
                storage_timeout_s=settings.storage_timeout_s,
                **worker_bounds(settings, cluster),
            ),
            cluster=cluster,
        )
        await engine.start()
        app.state.engine = engine
        app.state.cluster = cluster
        try:
            yield
        finally:
            await engine.close()
            await stop_dask(engine.dask_client, cluster)

    app = FastAPI(
        title="asyncnb gateway",
        version=__version__,
        description="Asynchronous inference APIs: submit now, fetch the result later.",
        lifespan=lifespan,
        docs_url=None,
        openapi_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(DeployBodyLimit, max_bytes=settings.max_deploy_bytes)
    _install_error_handlers(app)
    _add_admin_routes(app)
    _add_workload_routes(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if isinstance(exc, Unavailable):
            headers = {**(headers or {}), "Retry-After": "5"}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _clean_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the gateway log"}, status_code=500)


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]


def _add_admin_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["gateway"], response_model=None, responses=ok(Health, "Alive"))
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await _require_user_or_query_token(request)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        await _require_user_or_query_token(request)
        token = request.query_params.get("token")
        url = "/openapi.json" + (f"?token={quote(token)}" if token else "")
        return get_swagger_ui_html(openapi_url=url, title="asyncnb gateway")

    @app.get(
        "/metrics",
        tags=["gateway"],
        dependencies=[Depends(require_user)],
        response_class=Response,
        responses={
            **content("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}}),
            **errors(401, 403),
        },
    )
    async def metrics(request: Request) -> Response:
        return Response(_engine(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/apis",
        tags=["apis"],
        dependencies=[Depends(require_user)],
        response_model=None,
        responses={**ok(APIList, "Every deployed API"), **errors(401, 403)},
    )
    async def list_apis(request: Request) -> dict[str, Any]:
        base = _base_url(request)
        return {"apis": [s.public(base) for s in _engine(request).apis.values()]}

    @app.put(
        "/apis/{api}",
        tags=["apis"],
        dependencies=[Depends(require_admin)],
        responses={
            **ok(DeployedAPI, "Redeployed: version n+1"),
            **ok(DeployedAPI, "Deployed: version 1", 201),
            **errors(400, 401, 403, 413, 422, 503),
        },
    )
    async def deploy(api: str, body: DeployRequest, request: Request) -> JSONResponse:
        valid_api(api, deploying=True)
        try:
            options = APIOptions.model_validate(body.options)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", "options", *e["loc"])} for e in exc.errors()]
            ) from None
        policy = webhook_policy(request.app.state.settings)
        if options.webhook_url and (problem := policy.problem(options.webhook_url)):
            raise HTTPError(422, f"options.webhook_url: {problem}")
        try:
            blob = base64.b64decode(body.predictor, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(422, "predictor must be base64 of a cloudpickled class") from None
        if not blob:
            raise HTTPError(422, "predictor is empty")
        state, secret = await _engine(request).deploy(api, blob, body.config, options)
        view = state.public(_base_url(request))
        view["webhook_secret"] = secret
        return JSONResponse(view, status_code=201 if state.version == 1 else 200)

    @app.delete(
        "/apis/{api}",
        tags=["apis"],
        dependencies=[Depends(require_admin)],
        response_model=None,
        responses={**ok(Undeployed, "Undeployed"), **errors(401, 403, 404, 422, 503)},
    )
    async def undeploy(api: str, request: Request) -> dict[str, Any]:
        valid_api(api)
        await _engine(request).undeploy(api)
        return {"name": api, "deleted": True}


def _add_workload_routes(app: FastAPI) -> None:
    auth = [Depends(require_user)]

    @app.post(
        "/{api}",
        tags=["workloads"],
        status_code=202,
        dependencies=auth,
        responses={
            **ok(Accepted, "Accepted: the queue entry is persisted", 202),
            **ok(WorkloadRecord, "Finished within `Prefer: wait`, or a finished replay"),
            **errors(400, 401, 403, 404, 408, 413, 422, 503),
        },
    )
    async def submit(api: str, request: Request) -> JSONResponse:
        answer = await submit_workload(
            _engine(request), request.app.state.settings, api, request.headers, request.stream()
        )
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @app.get(
        "/{api}",
        tags=["apis"],
        dependencies=auth,
        response_model=None,
        responses={**ok(APIRecord, "The API's status"), **errors(401, 403, 404, 422)},
    )
    async def api_status(api: str, request: Request) -> dict[str, Any]:
        return _engine(request).api(valid_api(api)).public(_base_url(request))

    @app.get(
        "/{api}/workloads",
        tags=["workloads"],
        dependencies=auth,
        response_model=None,
        responses={**ok(WorkloadList, "Recent workloads"), **errors(401, 403, 404, 422)},
    )
    async def list_workloads(
        api: str, request: Request, status: Status | None = None, limit: int = 100
    ) -> dict[str, Any]:
        engine = _engine(request)
        engine.api(valid_api(api))
        limit = max(1, min(limit, 1000))
        return {"workloads": [w.public() for w in engine.recent(api, status, limit)]}

    async def _find(request: Request, api: str, workload_id: str) -> Workload:
        valid_api(api)
        _valid_id(workload_id)
        workload = await _engine(request).get(api, workload_id)
        if workload is None:
            raise NotFound(f"workload {workload_id} of API {api!r} not found")
        return workload

    @app.get(
        "/{api}/{workload_id}",
        tags=["workloads"],
        dependencies=auth,
        responses={**ok(WorkloadRecord, "The status record"), **errors(400, 401, 403, 404, 422)},
    )
    async def workload_status(api: str, workload_id: str, request: Request) -> JSONResponse:
        workload = await _find(request, api, workload_id)
        wait = prefer_wait(request.headers)
        if wait:
            await _engine(request).wait(workload, wait)
        return _workload_response(workload, 200)

    @app.get(
        "/{api}/{workload_id}/result",
        tags=["workloads"],
        dependencies=auth,
        response_class=Response,
        responses={
            **content("The result bytes, typed `result_content_type`", RESULT_MEDIA),
            **errors(400, 401, 403, 404, 409, 422),
        },
    )
    async def workload_result(api: str, workload_id: str, request: Request) -> Response:
        workload = await _find(request, api, workload_id)
        if workload.status is not Status.COMPLETED:
            raise Conflict(f"workload {workload_id} is {workload.status.value}, not completed")
        media = workload.result_content_type or "application/octet-stream"
        if workload.result_data is not None:
            return Response(workload.result_data, media_type=media)
        storage = _engine(request).storage
        path = storage.result_path(api, workload_id)
        if not await _engine(request).io(storage.exists, path):
            raise NotFound(f"result of workload {workload_id} has expired")
        return StreamingResponse(
            _stream_file(storage, path),
            media_type=media,
            headers={"Content-Length": str(workload.result_size)},
        )

    @app.get(
        "/{api}/{workload_id}/notebook",
        tags=["workloads"],
        dependencies=auth,
        response_class=Response,
        responses={
            **content("The executed notebook, or its HTML rendering", NOTEBOOK_MEDIA),
            **errors(400, 401, 403, 404, 422),
        },
    )
    async def workload_notebook(
        api: str, workload_id: str, request: Request, format: str = "ipynb"
    ) -> Response:
        """The executed notebook of a notebook API's workload (`?format=html` renders it)."""
        await _find(request, api, workload_id)
        if format not in ("ipynb", "html"):
            raise HTTPError(422, "format must be 'ipynb' or 'html'")
        engine = _engine(request)
        path = engine.storage.path("workloads", api, workload_id, "notebook.ipynb")
        data = await asyncio.to_thread(engine.storage.read_bytes, path)
        if data is None:
            raise NotFound(f"workload {workload_id} has no executed notebook (yet)")
        if format == "ipynb":
            return Response(data, media_type="application/x-ipynb+json")
        return HTMLResponse(await asyncio.to_thread(_notebook_html, data))

    @app.delete(
        "/{api}/{workload_id}",
        tags=["workloads"],
        dependencies=auth,
        responses={
            **ok(WorkloadRecord, "Cancelled: the status record"),
            **errors(400, 401, 403, 404, 409, 422, 503),
        },
    )
    async def cancel(api: str, workload_id: str, request: Request) -> JSONResponse:
        valid_api(api)
        _valid_id(workload_id)
        workload = await _engine(request).cancel(api, workload_id)
        return _workload_response(workload, 200)


def _notebook_html(data: bytes) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.reads(data.decode(), as_version=4))
    return str(body)


async def _stream_file(storage: Storage, path: str, chunk_size: int = 1024 * 1024) -> Any:
    source = await asyncio.to_thread(storage.open_read, path)
    try:
        while True:
            chunk = await asyncio.to_thread(source.read, chunk_size)
            if not chunk:
                break
            yield chunk
    finally:
        source.close()
