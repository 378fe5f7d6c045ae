"""`asyncnb serve`: run a gateway. Its options are the serve flags of `GatewaySettings`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from ..contract.settings import ServeFlag, serve_flags, settings_from_flags
from ..errors import UsageError
from .group import fail_cleanly, main

_CLICK_TYPES: dict[str, Any] = {"int": int, "float": float}


def _option(spec: ServeFlag) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    if spec.kind == "switch":
        return click.option(spec.flag, spec.setting, is_flag=True, envvar=spec.env, help=spec.help)
    kind: Any = _CLICK_TYPES.get(spec.kind)
    if spec.minimum is not None:
        kind = click.FloatRange(min=spec.minimum)
    if spec.choices is not None:
        kind = click.Choice(spec.choices)
    return click.option(
        spec.flag,
        spec.setting,
        type=kind,
        default=spec.default,
        show_default=spec.show_default,
        envvar=spec.env,
        help=spec.help,
    )


def _serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for spec in reversed(serve_flags()):
        func = _option(spec)(func)
    return func


@main.command()
@_serve_options
@fail_cleanly
def serve(**flags: Any) -> None:
    """Run a gateway (and a LocalCluster unless --scheduler or --cluster is given)."""
    from ..server.cluster import check_storage_reachable
    from ..server.serve import serve as run
    from ..storage import Storage

    settings = settings_from_flags(flags)
    problem = settings.problem()
    if problem:
        raise UsageError(problem)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if settings.admin_token and not settings.token:
        click.echo(
            "warning: --admin-token without --token: deploys need the admin token, but the "
            "workload routes are open to anyone who can reach this gateway",
            err=True,
        )
    check_storage_reachable(settings, Storage(settings.storage, settings.storage_options))

    def ready(url: str) -> None:
        click.echo(f"asyncnb gateway ready at {url} (storage {settings.storage})", err=False)
        sys.stdout.flush()

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    try:
        stopped_by = asyncio.run(run(settings, ready))
    except KeyboardInterrupt:  # Ctrl-C before the gateway was ready
        click.echo("asyncnb gateway stopped (SIGINT while starting)", err=True)
        sys.exit(130)
    click.echo(f"asyncnb gateway stopped ({stopped_by or 'stop requested'})", err=True)
    sys.exit(130 if stopped_by == "SIGINT" else 0)
