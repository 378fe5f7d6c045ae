"""Replicate's HTTP API v1, under `/compat/replicate` (what `replicate.Client(base_url=...)`
points at), so that the `replicate` package works unchanged against an asyncnb gateway.

- `POST /v1/predictions` (`version`: `<api>` or `<api>:<n>`), `POST /v1/models/{owner}/{api}/
  predictions` and `POST /v1/deployments/{owner}/{api}/predictions` (any owner, ignored)
  submit `input` as the workload's JSON payload and answer `201` with the prediction;
  `Prefer: wait[=N]` waits up to N (60) s, and a wait that runs out answers `starting`.
- `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel` (a finished one is answered
  as it is), `GET /v1/predictions` (newest first, `{"next", "previous", "results"}`).
- `GET /v1/webhooks/default/secret` (admin): the webhook secret of the APIs served here.

Ids are `<api>-<workload id>`; statuses and fields are mapped in replicate_prediction.py and
docs/compat.md. Credentials are asyncnb's tokens and keys, as `Authorization:
Bearer` (or Replicate's older `Token`), with their usual scopes.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ...contract.keys import looks_like_key
from ...engine import Conflict
from ...engine.keys import KeyRefused
from ...engine.webhook_formats import register_webhook_format
from ..schemas import errors, ok
from .common import Access, Caller, HTTPError, engine_of, find, served_api, submit_json, who
from .replicate_prediction import (
    CONTRACT,
    parse_create,
    parse_prediction_id,
    parse_version,
    prediction,
    predictions_url,
    preferred_wait,
    valid_owner,
    webhook_format,
    webhook_prediction,
)
from .replicate_schemas import REQUEST_BODY, Prediction, PredictionPage, WebhookSecret

PAGE_SIZE = 100
SCAN_PER_API = 1000  # the newest workloads per API a listing looks at (held in memory)
_CREATE_ERRORS = errors(400, 401, 403, 404, 408, 413, 422, 429, 503)
_READ_ERRORS = errors(400, 401, 403, 404, 422, 429, 503)


def _authorization(request: Request) -> str:
    """The `Authorization` header, with Replicate's older `Token <t>` read as `Bearer <t>`."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return f"Bearer {value.strip()}" if scheme.lower() == "token" and value.strip() else header


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPError(422, "the body must be a JSON object with input")
    return body


async def _create(request: Request, api: str, pinned: int | None, body: dict[str, Any]) -> Any:
    submitter = who(request, Access.INVOKE, api, _authorization(request))
    served_api(request, CONTRACT, api)
    state = engine_of(request).api(api)
    if pinned is not None and pinned != state.version:
        raise HTTPError(
            422,
            f"version {pinned} of API {api!r} is not deployed (it runs version "
            f"{state.version}): asyncnb runs an API's deployed version only",
        )
    create = parse_create(body, request)
    wait = preferred_wait(request.headers)
    answer = await submit_json(
        request,
        api,
        create.input,
        submitter,
        headers=create.headers,
        webhook_format=webhook_format(request),
    )
    _, workload = await find(request, api, answer.body["id"], submitter)
    if wait:
        await engine_of(request).wait(workload, wait)
    view = await prediction(request, submitter, workload, given=create.input, waited_out=bool(wait))
    headers = {"Location": view["urls"]["get"]}
    if wait:
        headers["Preference-Applied"] = f"wait={wait:g}"
    return JSONResponse(view, status_code=201, headers=headers)


def _lister(request: Request) -> Caller:
    """Who lists, checked once (a key's rate limit counts one call): a key is checked against
    one API it may call; what each API shows it is `_sees`'s to say."""
    authorization = _authorization(request)
    engine = engine_of(request)
    scheme, _, credential = authorization.partition(" ")
    if looks_like_key(authorization) and scheme.lower() == "bearer":
        try:
            key = engine.keys.check(credential.strip())
        except KeyRefused as exc:
            raise HTTPError(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        mine = [name for name in sorted(engine.apis) if key.allows_api(name)]
        if not mine:
            return Caller(key)
        return who(request, Access.WORKLOAD, mine[0], authorization)
    return who(request, Access.WORKLOAD, "", authorization)


def _sees(asker: Caller, api: str) -> tuple[bool, bool]:
    """(whether `asker` sees workloads of `api` at all, whether only its own)."""
    key = asker.key
    if key is None:
        return True, False
    if not key.allows_api(api):
        return False, False
    from ...contract.keys import Scope

    if Scope.READ in key.scopes:
        return True, False
    return Scope.INVOKE in key.scopes, True


def _parse_cursor(cursor: str) -> tuple[int, str]:
    stamp, _, pid = cursor.partition(".")
    if not stamp.isdigit() or len(stamp) > 20:
        raise HTTPError(422, "invalid cursor: use the next URL of a listing")
    parse_prediction_id(pid)
    return int(stamp), pid


def add_routes(router: APIRouter) -> None:
    register_webhook_format(CONTRACT, webhook_prediction)
    created = {**ok(Prediction, "Created: the prediction", 201), **_CREATE_ERRORS}

    @router.post("/v1/predictions", responses=created, openapi_extra=REQUEST_BODY)
    async def create_by_version(request: Request) -> JSONResponse:
        """A prediction of the API `version` names (`<api>` or `<api>:<n>`)."""
        body = await _json_body(request)
        api, pinned = parse_version(body.get("version"))
        response: JSONResponse = await _create(request, api, pinned, body)
        return response

    @router.post(
        "/v1/models/{owner}/{api}/predictions", responses=created, openapi_extra=REQUEST_BODY
    )
    async def create_by_model(owner: str, api: str, request: Request) -> JSONResponse:
        """A prediction of the API `api` (any `owner`)."""
        valid_owner(owner)
        response: JSONResponse = await _create(request, api, None, await _json_body(request))
        return response

    @router.post(
        "/v1/deployments/{owner}/{api}/predictions", responses=created, openapi_extra=REQUEST_BODY
    )
    async def create_by_deployment(owner: str, api: str, request: Request) -> JSONResponse:
        """A prediction of the API `api` (any `owner`): a deployment is an API here."""
        valid_owner(owner)
        response: JSONResponse = await _create(request, api, None, await _json_body(request))
        return response

    @router.get(
        "/v1/predictions/{prediction_id}",
        responses={**ok(Prediction, "The prediction"), **_READ_ERRORS},
    )
    async def get_prediction(prediction_id: str, request: Request) -> JSONResponse:
        api, workload_id = parse_prediction_id(prediction_id)
        asker = who(request, Access.WORKLOAD, api, _authorization(request))
        served_api(request, CONTRACT, api)
        _, workload = await find(request, api, workload_id, asker)
        return JSONResponse(await prediction(request, asker, workload))

    @router.post(
        "/v1/predictions/{prediction_id}/cancel",
        responses={**ok(Prediction, "Canceled, or already finished"), **_READ_ERRORS},
    )
    async def cancel_prediction(prediction_id: str, request: Request) -> JSONResponse:
        api, workload_id = parse_prediction_id(prediction_id)
        asker = who(request, Access.WORKLOAD, api, _authorization(request))
        served_api(request, CONTRACT, api)
        _, workload = await find(request, api, workload_id, asker)
        asker.must_own(workload)
        if not workload.status.finished:
            try:
                workload = await engine_of(request).cancel(api, workload_id)
            except Conflict:  # it finished meanwhile: answered as it is, as Replicate does
                pass
        return JSONResponse(await prediction(request, asker, workload))

    @router.get(
        "/v1/predictions",
        responses={**ok(PredictionPage, "Newest first"), **errors(401, 403, 422, 429)},
    )
    async def list_predictions(request: Request, cursor: str | None = None) -> JSONResponse:
        """The predictions of every API served here that the caller may see, newest first
        (of the newest workloads each API holds in memory)."""
        after = _parse_cursor(cursor) if cursor is not None else None
        asker = _lister(request)
        engine = engine_of(request)
        found: list[tuple[int, str, Any]] = []
        for api, state in sorted(engine.apis.items()):
            allowed = state.options.compat
            if allowed is not None and CONTRACT not in allowed:
                continue
            visible, own_only = _sees(asker, api)
            if not visible:
                continue
            for workload in engine.recent(api, None, SCAN_PER_API):
                if own_only and not asker.owns(workload):
                    continue
                entry = (int(workload.created_at * 1e6), f"{api}-{workload.id}", workload)
                if after is None or entry[:2] < after:
                    found.append(entry)
        found.sort(key=lambda e: (e[0], e[1]), reverse=True)
        page = found[:PAGE_SIZE]
        results = [await prediction(request, asker, w, with_logs=False) for _, _, w in page]
        following = None
        if len(found) > PAGE_SIZE:
            stamp, pid, _ = page[-1]
            following = f"{predictions_url(request)}?cursor={stamp}.{pid}"
        return JSONResponse({"next": following, "previous": None, "results": results})

    @router.get(
        "/v1/webhooks/default/secret",
        responses={
            **ok(WebhookSecret, "The webhook secret"),
            **errors(401, 403, 404, 409, 422, 429),
        },
    )
    async def webhook_secret(request: Request, model: str | None = None) -> JSONResponse:
        """The secret webhooks are signed with (admin only): the one every API served here
        shares, or `?model=<api>`'s. Secrets are per API in asyncnb."""
        who(request, Access.ADMIN, "", _authorization(request))
        engine = engine_of(request)
        if model is not None:
            if not model:
                raise HTTPError(422, "model must name an API: ?model=<api>")
            api, _ = parse_version(model)
            served_api(request, CONTRACT, api)
            return JSONResponse({"key": engine.api(api).webhook_secret})
        secrets = {
            state.webhook_secret
            for state in engine.apis.values()
            if state.options.compat is None or CONTRACT in state.options.compat
        }
        if not secrets:
            raise HTTPError(404, "no API is served by the replicate contract")
        if len(secrets) > 1:
            raise HTTPError(
                409,
                "the APIs have different webhook secrets: ask for one with ?model=<api> "
                "(or deploy them with the same webhook_secret option)",
            )
        return JSONResponse({"key": secrets.pop()})
