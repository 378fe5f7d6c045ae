"""`/keys`: create, list and revoke API keys (admin token only; docs/http-api.md)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..contract.keys import ALL_APIS, Scope, is_key_id, key_name_problem
from ..contract.names import api_name_problem
from ..engine import Engine, NotFound
from .routes import require_admin
from .schemas import CreatedKey, KeyList, KeyRecord, errors, ok

TEN_YEARS_S = 10 * 365 * 86400


class KeyRequest(BaseModel):
    """What `POST /keys` takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="who it is for; its workloads show it as `submitted_by`")
    apis: list[str] = Field(
        min_length=1, max_length=100, description="API names it may call, or ['*'] for all"
    )
    scopes: list[Scope] = Field(
        default_factory=lambda: [Scope.INVOKE],
        min_length=1,
        description="invoke: submit, and the status, result and cancel of its own workloads; "
        "read: the API's status and recent workloads",
    )
    expires_in_s: float | None = Field(None, gt=0, le=TEN_YEARS_S)
    rate_limit: float | None = Field(None, gt=0, le=100_000, description="requests/s")
    burst: int | None = Field(
        None, ge=1, le=100_000, description="requests at once; default: the rate, at least 1"
    )
    max_queued: int | None = Field(None, ge=1, le=10_000_000, description="unfinished workloads")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        problem = key_name_problem(name)
        if problem:
            raise ValueError(problem)
        return name

    @field_validator("apis")
    @classmethod
    def _valid_apis(cls, apis: list[str]) -> list[str]:
        for api in apis:
            if api != ALL_APIS and (problem := api_name_problem(api)):
                raise ValueError(problem)
        return apis

    @model_validator(mode="after")
    def _burst_needs_rate(self) -> KeyRequest:
        if self.burst is not None and self.rate_limit is None:
            raise ValueError("burst needs a rate_limit")
        return self


def add_key_routes(app: FastAPI) -> None:
    def engine_of(request: Request) -> Engine:
        engine: Engine = request.app.state.engine
        return engine

    @app.post(
        "/keys",
        tags=["keys"],
        status_code=201,
        dependencies=[Depends(require_admin)],
        responses={
            **ok(CreatedKey, "Created: the key's text is in `key`, shown this once", 201),
            **errors(401, 403, 422, 503),
        },
    )
    async def create_key(body: KeyRequest, request: Request) -> JSONResponse:
        key, text = await engine_of(request).create_key(
            body.name,
            body.apis,
            body.scopes,
            expires_in_s=body.expires_in_s,
            rate_limit=body.rate_limit,
            burst=body.burst,
            max_queued=body.max_queued,
        )
        return JSONResponse(
            {**key.public(), "key": text},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @app.get(
        "/keys",
        tags=["keys"],
        dependencies=[Depends(require_admin)],
        response_model=None,
        responses={**ok(KeyList, "Every key, without secrets"), **errors(401, 403, 422)},
    )
    async def list_keys(request: Request, api: str | None = None) -> dict[str, Any]:
        """`api` keeps the keys that may call that API (its own and the `*` ones)."""
        keys = list(engine_of(request).keys)
        if api is not None:
            keys = [k for k in keys if k.allows_api(api)]
        return {"keys": [k.public() for k in keys]}

    @app.delete(
        "/keys/{key_id}",
        tags=["keys"],
        dependencies=[Depends(require_admin)],
        response_model=None,
        responses={
            **ok(KeyRecord, "Revoked: it gets 401 from now on"),
            **errors(401, 403, 404, 422),
        },
    )
    async def revoke_key(key_id: str, request: Request) -> dict[str, Any]:
        if not is_key_id(key_id):
            raise NotFound(f"no API key {key_id[:40]!r}: key ids are 16 hex digits")
        key = await engine_of(request).revoke_key(key_id)
        return key.public()
