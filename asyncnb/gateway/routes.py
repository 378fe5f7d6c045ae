"""The FastAPI routes: the documented HTTP API (docs/http-api.md), over the engine."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError

from ..contract.notebooks import NOTEBOOK_ARTIFACT
from ..contract.options import APIOptions
from ..contract.settings import GatewaySettings
from ..contract.status import Status
from ..contract.version import __version__
from ..engine import Conflict, Engine, NotFound
from ..engine.workload import WorkloadState
from ..storage import Storage
from .auth import Access, Caller, authorize
from .errors import HTTPError
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
from .submission import prefer_wait, submit_workload, valid_api, valid_id


class _DocsAssets:
    """The Swagger UI files of the docs page, from the swagger-ui-bundle package, read once."""

    MEDIA = {
        "swagger-ui-bundle.js": "text/javascript",
        "swagger-ui.css": "text/css",
        "favicon-32x32.png": "image/png",
    }

    def __init__(self) -> None:
        self._read: dict[str, bytes] = {}

    def get(self, name: str) -> tuple[str, bytes] | None:
        media = self.MEDIA.get(name)
        if media is None:
            return None
        if name not in self._read:
            from swagger_ui_bundle import swagger_ui_path

            self._read[name] = (swagger_ui_path / name).read_bytes()
        return media, self._read[name]


docs_assets = _DocsAssets()


class DeployRequest(BaseModel):
    predictor: str = Field(description="base64 of cloudpickle.dumps(PredictorClass)")
    config: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def settings_of(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def caller(request: Request, access: Access, api: str | None = None) -> Caller:
    """Who the request acts for, if it may; raises the 401, 403 or 429 otherwise."""
    engine = getattr(request.app.state, "engine", None)
    return authorize(
        settings_of(request),
        engine.keys if engine is not None else None,
        request.headers.get("authorization", ""),
        access,
        api,
        query_token=request.query_params.get("token") if access is Access.GATEWAY else None,
    )


async def require_gateway_read(request: Request) -> None:
    caller(request, Access.GATEWAY)


async def require_admin(request: Request) -> None:
    caller(request, Access.ADMIN)


def _base_url(request: Request) -> str:
    """Where clients reach the gateway: `--public-url`, else the address it serves on. Never
    the request's `Host`, which any client may set."""
    configured = settings_of(request).public_url or getattr(request.app.state, "base_url", None)
    return (configured or str(request.base_url)).rstrip("/")


def _workload_response(workload: WorkloadState, code: int) -> JSONResponse:
    return JSONResponse(workload.public(), status_code=code)


async def find_workload(
    request: Request, api: str, workload_id: str
) -> tuple[Caller, WorkloadState]:
    """Who asks (a caller of the workload routes of `api`) and the workload they name;
    NotFound when there is none. What they may do with it is theirs to check."""
    who = caller(request, Access.WORKLOAD, api)
    valid_api(api)
    valid_id(workload_id)
    workload = await engine_of(request).get(api, workload_id)
    if workload is None:
        raise NotFound(f"workload {workload_id} of API {api!r} not found")
    return who, workload


def add_admin_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["gateway"], response_model=None, responses=ok(Health, "Alive"))
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        caller(request, Access.GATEWAY)
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        caller(request, Access.GATEWAY)
        token = request.query_params.get("token")
        url = "/openapi.json" + (f"?token={quote(token)}" if token else "")
        return get_swagger_ui_html(
            openapi_url=url,
            title="asyncnb gateway",
            # served by the gateway itself: the machines may have no internet, and a CDN's
            # script would run with the page's access to the token
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        found = docs_assets.get(name)
        if found is None:
            raise NotFound(f"no docs asset {name[:80]!r}")
        media, data = found
        return Response(data, media_type=media, headers={"Cache-Control": "max-age=86400"})

    @app.get(
        "/metrics",
        tags=["gateway"],
        dependencies=[Depends(require_gateway_read)],
        response_class=Response,
        responses={
            **content("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}}),
            **errors(401, 403),
        },
    )
    async def metrics(request: Request) -> Response:
        return Response(engine_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/apis",
        tags=["apis"],
        dependencies=[Depends(require_gateway_read)],
        response_model=None,
        responses={**ok(APIList, "Every deployed API"), **errors(401, 403)},
    )
    async def list_apis(request: Request) -> dict[str, Any]:
        base = _base_url(request)
        return {"apis": [s.public(base) for s in engine_of(request).apis.values()]}

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
        policy = engine_of(request).settings.webhook_policy
        if options.webhook_url and (problem := policy.problem(options.webhook_url)):
            raise HTTPError(422, f"options.webhook_url: {problem}")
        try:
            blob = base64.b64decode(body.predictor, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(422, "predictor must be base64 of a cloudpickled class") from None
        if not blob:
            raise HTTPError(422, "predictor is empty")
        state, secret = await engine_of(request).deploy(api, blob, body.config, options)
        view = state.public(_base_url(request))
        view["webhook_secret"] = secret
        return JSONResponse(view, status_code=201 if state.version == 1 else 200)

    @app.patch(
        "/apis/{api}",
        tags=["apis"],
        dependencies=[Depends(require_admin)],
        response_model=None,
        responses={
            **ok(APIRecord, "Changed: the API record, with its new options"),
            **errors(401, 403, 404, 422, 503),
        },
    )
    async def reconfigure(
        api: str,
        request: Request,
        changes: Annotated[dict[str, Any], Body(examples=[{"min_replicas": 0, "max_replicas": 4}])],
    ) -> dict[str, Any]:
        """Change scaling options (`min_replicas`, `max_replicas`, ...) of a running API,
        without a new version."""
        valid_api(api)
        try:
            state = await engine_of(request).reconfigure(api, changes)
        except ValidationError as exc:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
            ) from None
        except ValueError as exc:  # an option that only a deploy may change
            raise HTTPError(422, str(exc)) from None
        return state.public(_base_url(request))

    @app.delete(
        "/apis/{api}",
        tags=["apis"],
        dependencies=[Depends(require_admin)],
        response_model=None,
        responses={**ok(Undeployed, "Undeployed"), **errors(401, 403, 404, 422, 503)},
    )
    async def undeploy(api: str, request: Request) -> dict[str, Any]:
        valid_api(api)
        await engine_of(request).undeploy(api)
        return {"name": api, "deleted": True}


def add_workload_routes(app: FastAPI) -> None:
    # Access is checked inside each route, where the API (and then the workload) is known.

    @app.post(
        "/{api}",
        tags=["workloads"],
        status_code=202,
        responses={
            **ok(Accepted, "Accepted: the queue entry is persisted", 202),
            **ok(WorkloadRecord, "Finished within `Prefer: wait`, or a finished replay"),
            **errors(400, 401, 403, 404, 408, 413, 422, 429, 503),
        },
    )
    async def submit(api: str, request: Request) -> JSONResponse:
        who = caller(request, Access.INVOKE, api)
        answer = await submit_workload(
            engine_of(request), settings_of(request), api, request.headers, request.stream(), who
        )
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @app.get(
        "/{api}",
        tags=["apis"],
        response_model=None,
        responses={**ok(APIRecord, "The API's status"), **errors(401, 403, 404, 422, 429)},
    )
    async def api_status(api: str, request: Request) -> dict[str, Any]:
        caller(request, Access.READ, api)
        return engine_of(request).api(valid_api(api)).public(_base_url(request))

    @app.get(
        "/{api}/workloads",
        tags=["workloads"],
        response_model=None,
        responses={**ok(WorkloadList, "Recent workloads"), **errors(401, 403, 404, 422, 429)},
    )
    async def list_workloads(
        api: str,
        request: Request,
        status: Status | None = None,
        limit: int = 100,
        submitted_by: str | None = None,
    ) -> dict[str, Any]:
        """Newest first; `submitted_by` keeps one submitter's (a key's name, or `owner`)."""
        who = caller(request, Access.READ, api)
        engine = engine_of(request)
        engine.api(valid_api(api))
        limit = max(1, min(limit, 1000))
        found = engine.recent(api, status, limit, submitted_by)
        return {"workloads": [who.view(w) for w in found]}

    @app.get(
        "/{api}/{workload_id}",
        tags=["workloads"],
        responses={
            **ok(WorkloadRecord, "The status record"),
            **errors(400, 401, 403, 404, 422, 429),
        },
    )
    async def workload_status(api: str, workload_id: str, request: Request) -> JSONResponse:
        who, workload = await find_workload(request, api, workload_id)
        who.may_see(workload)
        wait = prefer_wait(request.headers)
        if wait:
            await engine_of(request).wait(workload, wait)
        return JSONResponse(who.view(workload))

    @app.get(
        "/{api}/{workload_id}/result",
        tags=["workloads"],
        response_class=Response,
        responses={
            **content("The result bytes, typed `result_content_type`", RESULT_MEDIA),
            **errors(400, 401, 403, 404, 409, 422, 429),
        },
    )
    async def workload_result(api: str, workload_id: str, request: Request) -> Response:
        who, workload = await find_workload(request, api, workload_id)
        who.must_own(workload)
        if workload.status is not Status.COMPLETED:
            raise Conflict(f"workload {workload_id} is {workload.status.value}, not completed")
        media = workload.result_content_type or "application/octet-stream"
        if workload.result_data is not None:
            return Response(workload.result_data, media_type=media)
        storage = engine_of(request).storage
        path = storage.result_path(api, workload_id)
        if not await engine_of(request).io(storage.exists, path):
            raise NotFound(f"result of workload {workload_id} has expired")
        return StreamingResponse(
            _stream_file(storage, path),
            media_type=media,
            headers={"Content-Length": str(workload.result_size)},
        )

    @app.get(
        "/{api}/{workload_id}/notebook",
        tags=["workloads"],
        response_class=Response,
        responses={
            **content("The executed notebook, or its HTML rendering", NOTEBOOK_MEDIA),
            **errors(400, 401, 403, 404, 422, 429),
        },
    )
    async def workload_notebook(
        api: str, workload_id: str, request: Request, format: str = "ipynb"
    ) -> Response:
        """The executed notebook of a notebook API's workload (`?format=html` renders it)."""
        who, workload = await find_workload(request, api, workload_id)
        who.must_own(workload)
        if format not in ("ipynb", "html"):
            raise HTTPError(422, "format must be 'ipynb' or 'html'")
        engine = engine_of(request)
        path = engine.storage.artifact_path(api, workload_id, NOTEBOOK_ARTIFACT)
        data = await asyncio.to_thread(engine.storage.read_bytes, path)
        if data is None:
            raise NotFound(f"workload {workload_id} has no executed notebook (yet)")
        if format == "ipynb":
            return Response(data, media_type="application/x-ipynb+json")
        return HTMLResponse(await asyncio.to_thread(_notebook_html, data))

    @app.delete(
        "/{api}/{workload_id}",
        tags=["workloads"],
        responses={
            **ok(WorkloadRecord, "Cancelled: the status record"),
            **errors(400, 401, 403, 404, 409, 422, 429, 503),
        },
    )
    async def cancel(api: str, workload_id: str, request: Request) -> JSONResponse:
        who, workload = await find_workload(request, api, workload_id)
        who.must_own(workload)
        workload = await engine_of(request).cancel(api, workload_id)
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
