"""`asyncnb local status|stop`: the local gateway of a storage (server/local.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click
import httpx

from ..contract.settings import default_storage_url
from ..server.local import find_local_gateway, stop_local_gateway
from ..storage import Storage
from .group import fail_cleanly, main


@main.group()
def local() -> None:
    """The local gateway: one per storage, started on demand by whoever needs it."""


def _storage_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--storage",
        envvar="ASYNCNB_STORAGE",
        default=None,
        help="the storage it serves ($ASYNCNB_STORAGE; default ~/.asyncnb/storage)",
    )(func)


def _storage_url(storage: str | None) -> str:
    return Storage(storage or default_storage_url()).url


@local.command()
@_storage_option
@click.option("--show-token", is_flag=True, help="print its token too")
@fail_cleanly
def status(storage: str | None, show_token: bool) -> None:
    """Where the local gateway listens, since when, and what it serves (exit 1: none runs)."""
    url = _storage_url(storage)
    found = find_local_gateway(url)
    if found is None:
        click.echo(f"no gateway serves {url}")
        sys.exit(1)
    up = time.time() - found.started_at
    idle = (
        f"stops after {found.idle_timeout_s:g} s idle" if found.idle_timeout_s else "no idle stop"
    )
    headers = {"Authorization": f"Bearer {found.client_token}"} if found.client_token else {}
    try:
        apis = httpx.get(f"{found.url}/apis", headers=headers, timeout=5).json()["apis"]
        served = f"{len(apis)} APIs ({', '.join(a['name'] for a in apis) or 'none'})"
    except (httpx.HTTPError, ValueError, KeyError):
        served = "APIs unknown"
    click.echo(
        f"gateway of {url}: {found.url} (pid {found.pid}), up {_duration(up)}, {idle}, {served}"
    )
    if show_token and found.client_token:
        click.echo(f"token: {found.client_token}")


@local.command()
@_storage_option
@click.option("--timeout", type=float, default=30.0, show_default=True, help="seconds")
@fail_cleanly
def stop(storage: str | None, timeout: float) -> None:
    """Stop the local gateway (SIGTERM: it finishes what it writes, its workers stop)."""
    url = _storage_url(storage)
    stopped = stop_local_gateway(url, timeout=timeout)
    if stopped is None:
        click.echo(f"no gateway serves {url}")
        return
    click.echo(f"stopped the gateway of {url} (pid {stopped.pid}, {stopped.url})")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
