"""`asyncnb keys create|list|revoke`: API keys for colleagues (admin token; through the client)."""

from __future__ import annotations

import json
from typing import Any

import click

from ..contract.keys import parse_duration
from ..errors import UsageError
from .group import client_of, client_options, fail_cleanly, main, store_client


@main.group()
def keys() -> None:
    """API keys: each names its APIs and scopes, and is shown once when created."""


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--expires-in {exc}") from None


@keys.command("create")
@click.argument("name")
@click.option(
    "--api",
    "apis",
    multiple=True,
    required=True,
    help="an API the key may call (repeat for several; '*' for all)",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["invoke", "read"]),
    default=("invoke",),
    show_default=True,
    help="invoke: submit and reach its own workloads; read: the API's status and recent workloads",
)
@click.option("--expires-in", default=None, help="lifetime: seconds, or 30m, 12h, 7d")
@click.option("--rate-limit", type=float, default=None, help="requests per second")
@click.option("--burst", type=int, default=None, help="requests at once (with --rate-limit)")
@click.option("--max-queued", type=int, default=None, help="unfinished workloads at most")
@click.option("--json", "as_json", is_flag=True, help="print the whole record as JSON")
@client_options
@click.pass_context
@fail_cleanly
def create(
    ctx: click.Context,
    name: str,
    apis: tuple[str, ...],
    scopes: tuple[str, ...],
    expires_in: str | None,
    rate_limit: float | None,
    burst: int | None,
    max_queued: int | None,
    as_json: bool,
    gateway: str | None,
    token: str | None,
) -> None:
    """Create a key for NAME (a colleague); prints the key, which is shown only this once."""
    store_client(ctx, gateway, token)
    created = client_of(ctx).create_key(
        name,
        apis,
        scopes,
        expires_in_s=_duration(expires_in),
        rate_limit=rate_limit,
        burst=burst,
        max_queued=max_queued,
    )
    if as_json:
        click.echo(json.dumps(created, indent=2))
        return
    click.echo(created["key"])
    click.echo(
        f"key {created['id']} for {created['name']}: apis {', '.join(created['apis'])}; "
        f"scopes {', '.join(created['scopes'])} (shown once: keep it now)",
        err=True,
    )


def _row(key: dict[str, Any]) -> str:
    limits = []
    if key.get("rate_limit"):
        limits.append(f"{key['rate_limit']:g}/s")
    if key.get("max_queued"):
        limits.append(f"max_queued {key['max_queued']}")
    return "  ".join(
        [
            key["id"],
            f"{key['name']:<16}",
            f"{key['state']:<8}",
            f"apis={','.join(key['apis'])}",
            f"scopes={','.join(key['scopes'])}",
            f"last_used={key.get('last_used_at') or '-'}",
            f"expires={key.get('expires_at') or '-'}",
            *limits,
        ]
    )


@keys.command("list")
@click.option("--api", default=None, help="only the keys that may call this API")
@click.option("--json", "as_json", is_flag=True)
@client_options
@click.pass_context
@fail_cleanly
def list_keys(
    ctx: click.Context, api: str | None, as_json: bool, gateway: str | None, token: str | None
) -> None:
    """List the keys (never their secrets)."""
    store_client(ctx, gateway, token)
    found = client_of(ctx).list_keys(api)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no API keys", err=True)
    for key in found:
        click.echo(_row(key))


@keys.command("revoke")
@click.argument("key_id")
@client_options
@click.pass_context
@fail_cleanly
def revoke(ctx: click.Context, key_id: str, gateway: str | None, token: str | None) -> None:
    """Revoke the key KEY_ID at once: it gets 401 from now on."""
    store_client(ctx, gateway, token)
    revoked = client_of(ctx).revoke_key(key_id)
    click.echo(f"revoked key {revoked['id']} of {revoked['name']}")
