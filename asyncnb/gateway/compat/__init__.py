"""The peers' wire contracts, each a thin adapter over the engine under `/compat/<name>`.

An adapter is a module here with `add_routes(router)`: it adds the contract's routes to an
`APIRouter` whose prefix is `/compat/<name>`, and keeps no queue or storage of its own (it
submits and reads workloads through `common`). `ADAPTERS` is the registry: a contract listed
in `--compat` (all by default) is mounted; an API's `compat` option narrows it further
(`common.served_api`). Modules are imported only when mounted.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter, FastAPI

from ...contract.compat import COMPAT_CONTRACTS, COMPAT_PREFIX, enabled_contracts
from ...contract.settings import GatewaySettings

ADAPTERS: dict[str, str] = {name: f"{__name__}.{name}" for name in COMPAT_CONTRACTS}


def add_compat_routes(app: FastAPI, settings: GatewaySettings) -> None:
    for name in enabled_contracts(settings.compat):
        module = importlib.import_module(ADAPTERS[name])
        router = APIRouter(prefix=f"{COMPAT_PREFIX}/{name}", tags=[f"compat: {name}"])
        module.add_routes(router)
        app.include_router(router)
