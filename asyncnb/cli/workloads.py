"""The workload commands: submit, status, result, cancel, undeploy, get (all through the client)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import UsageError
from .group import client_of, client_options, fail_cleanly, main, store_client

if TYPE_CHECKING:
    from ..client import Workload


@main.command()
@click.argument("name")
@click.argument("source", required=False, type=click.File("rb"), default=None)
@click.option(
    "--content-type",
    default=None,
    help="default: application/json for --json, else guessed from the file",
)
@click.option("--json", "json_text", default=None, help="a JSON payload given inline")
@click.option("--priority", type=int, default=0)
@click.option("--webhook-url", default=None)
@click.option("--idempotency-key", default=None)
@click.option("--wait", is_flag=True, help="wait for the result and print it")
@click.option("--timeout", type=float, default=None, help="with --wait: give up after S seconds")
@click.option(
    "--follow",
    is_flag=True,
    help="print outputs (stdout), log lines and progress (stderr) as they come, then the "
    "result as --wait does",
)
@client_options
@click.pass_context
@fail_cleanly
def submit(
    ctx: click.Context,
    name: str,
    source: Any,
    content_type: str | None,
    json_text: str | None,
    priority: int,
    webhook_url: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
    follow: bool,
    gateway: str | None,
    token: str | None,
) -> None:
    """Submit a payload (FILE, - for stdin, or --json) to API NAME; prints the workload id,
    or with --wait its result, or with --follow what it emits, then its result."""
    store_client(ctx, gateway, token)
    if json_text is not None:
        payload: Any = json.loads(json_text)
    elif source is not None:
        payload = source.read()
        content_type = content_type or _guess_type(getattr(source, "name", ""))
    else:
        raise UsageError("give a payload: FILE, - for stdin, or --json")
    if follow and timeout is not None:
        raise UsageError("--timeout goes with --wait, not --follow (Ctrl-C stops following)")
    api = client_of(ctx).api(name)
    workload = api.submit(
        payload,
        content_type=content_type,
        priority=priority,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
    )
    if follow:
        _follow(name, workload)
    elif wait:
        _print_result(workload.result(timeout=timeout))
    else:
        click.echo(workload.id)


def _follow(name: str, workload: Workload) -> None:
    """What the workload emits as it comes, then its result (or its error, as --wait); Ctrl-C
    stops following (exit 130), the workload goes on."""
    from ..client import FreshOutputs, describe_output, describe_progress

    outputs = FreshOutputs()
    try:
        for event in workload.stream():
            kind = event.get("type")
            if outputs.fresh(event):
                _echo_output(describe_output(event))
            elif kind == "log":
                click.echo(str(event.get("line", "")), err=True)
            elif kind == "progress":
                click.echo(describe_progress(event), err=True)
            elif kind == "start" and int(event.get("attempt") or 1) > 1:
                click.echo(f"attempt {event['attempt']} started", err=True)
        _print_result(workload.result(timeout=0))
    except KeyboardInterrupt:
        click.echo(
            f"stopped following {workload.id}; it goes on (asyncnb cancel {name} "
            f"{workload.id} cancels it)",
            err=True,
        )
        raise click.exceptions.Exit(130) from None


def _echo_output(text: str) -> None:
    click.echo(text, nl=not text.endswith("\n"))


def _guess_type(filename: str) -> str:
    import mimetypes

    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def _print_result(result: Any) -> None:
    if isinstance(result, bytes):
        sys.stdout.buffer.write(result)
    elif isinstance(result, str):
        click.echo(result)
    else:
        click.echo(json.dumps(result, indent=2))


@main.command()
@click.argument("name")
@click.argument("workload_id")
@client_options
@click.pass_context
@fail_cleanly
def status(
    ctx: click.Context, name: str, workload_id: str, gateway: str | None, token: str | None
) -> None:
    """Print the status record of a workload as JSON."""
    store_client(ctx, gateway, token)
    info = client_of(ctx).get_json(f"/{name}/{workload_id}")
    click.echo(json.dumps(info, indent=2))


@main.command()
@click.argument("name")
@click.argument("workload_id")
@client_options
@click.pass_context
@fail_cleanly
def result(
    ctx: click.Context, name: str, workload_id: str, gateway: str | None, token: str | None
) -> None:
    """Print the result of a finished workload (raises its error if it failed)."""
    store_client(ctx, gateway, token)
    from ..client import AsyncAPI, Workload

    _print_result(Workload(AsyncAPI(client_of(ctx), name), workload_id).result(timeout=0))


@main.command()
@click.argument("name")
@click.argument("workload_id")
@client_options
@click.pass_context
@fail_cleanly
def cancel(
    ctx: click.Context, name: str, workload_id: str, gateway: str | None, token: str | None
) -> None:
    """Cancel a queued or running workload."""
    store_client(ctx, gateway, token)
    info = client_of(ctx).request("DELETE", f"/{name}/{workload_id}").json()
    click.echo(f"{workload_id} {info['status']}")


@main.command()
@click.argument("name")
@client_options
@click.pass_context
@fail_cleanly
def undeploy(ctx: click.Context, name: str, gateway: str | None, token: str | None) -> None:
    """Remove API NAME (queued workloads are cancelled)."""
    store_client(ctx, gateway, token)
    client_of(ctx).undeploy(name)
    click.echo(f"undeployed {name}")


@main.command()
@click.argument("name", required=False)
@client_options
@click.pass_context
@fail_cleanly
def get(ctx: click.Context, name: str | None, gateway: str | None, token: str | None) -> None:
    """List APIs, or show one API and its recent workloads, as tables."""
    from rich.console import Console
    from rich.table import Table

    store_client(ctx, gateway, token)
    client = client_of(ctx)
    console = Console()
    if not console.is_terminal:  # piped output: never truncate ids or URLs
        console = Console(width=400)
    if name is None:
        table = Table(
            "api",
            "version",
            "state",
            "queued",
            "in progress",
            "completed",
            "failed",
            "workers",
            "endpoint",
        )
        for info in client.apis():
            table.add_row(
                info["name"],
                str(info["version"]),
                info["state"],
                str(info["queue_depth"]),
                str(info["in_progress"]),
                str(info["completed"]),
                str(info["failed"]),
                f"{info['workers']}→{info['desired_workers']}",
                info["endpoint"],
            )
        console.print(table)
        return
    from ..client import describe_api

    api = client.api(name)
    info = api.status()
    console.print(describe_api(info), markup=False, highlight=False)
    if info.get("error"):
        console.print(f"[red]error: {info['error'].get('message')}[/red]")
    table = Table("id", "status", "attempts", "created", "finished")
    for workload in api.workloads(limit=20):
        table.add_row(
            workload["id"],
            workload["status"],
            str(workload["attempts"]),
            workload["created_at"] or "",
            workload["finished_at"] or "",
        )
    console.print(table)
