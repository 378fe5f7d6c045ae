"""`asyncnb` command line: serve a gateway, deploy predictors, submit and inspect workloads."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from .errors import AsyncNBError, GatewayError, UsageError

DEFAULT_GATEWAY = "http://127.0.0.1:8765"


class CLIError(click.ClickException):
    def format_message(self) -> str:
        return self.message.splitlines()[0] if self.message else "failed"

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every expected failure becomes one line on stderr and exit code 1, never a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GatewayError as exc:
            detail = exc.detail
            if isinstance(detail, list):
                from .client import _explain

                detail = _explain(detail)
            raise CLIError(f"gateway answered {exc.status_code}: {detail}") from None
        except (AsyncNBError, ValueError, OSError) as exc:
            raise CLIError(str(exc) or type(exc).__name__) from None

    return wrapper


def _client(ctx: click.Context) -> Any:
    from .client import Client

    return Client(ctx.obj["gateway"], ctx.obj["token"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncnb")
def main() -> None:
    """asyncnb: asynchronous inference APIs from notebook predictors, on Dask."""


def _client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--token", envvar="ASYNCNB_TOKEN", default=None, help="bearer token ($ASYNCNB_TOKEN)"
    )(func)
    func = click.option(
        "--gateway",
        envvar="ASYNCNB_GATEWAY",
        default=DEFAULT_GATEWAY,
        show_default=True,
        help="gateway URL ($ASYNCNB_GATEWAY)",
    )(func)
    return func


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _store_client(ctx: click.Context, gateway: str, token: str | None) -> None:
    ctx.ensure_object(dict)
    ctx.obj["gateway"] = gateway
    ctx.obj["token"] = token


# workloads -----------------------------------------------------------------------------------
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
@_client_options
@click.pass_context
@_fail_cleanly
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
    gateway: str,
    token: str | None,
) -> None:
    """Submit a payload (FILE, - for stdin, or --json) to API NAME; prints the workload id."""
    _store_client(ctx, gateway, token)
    if json_text is not None:
        payload: Any = json.loads(json_text)
    elif source is not None:
        payload = source.read()
        content_type = content_type or _guess_type(getattr(source, "name", ""))
    else:
        raise UsageError("give a payload: FILE, - for stdin, or --json")
    api = _client(ctx).api(name)
    workload = api.submit(
        payload,
        content_type=content_type,
        priority=priority,
        webhook_url=webhook_url,
        idempotency_key=idempotency_key,
    )
    if not wait:
        click.echo(workload.id)
        return
    _print_result(workload.result(timeout=timeout))


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
@_client_options
@click.pass_context
@_fail_cleanly
def status(
    ctx: click.Context, name: str, workload_id: str, gateway: str, token: str | None
) -> None:
    """Print the status record of a workload as JSON."""
    _store_client(ctx, gateway, token)
    info = _client(ctx).get_json(f"/{name}/{workload_id}")
    click.echo(json.dumps(info, indent=2))


@main.command()
@click.argument("name")
@click.argument("workload_id")
@_client_options
@click.pass_context
@_fail_cleanly
def result(
    ctx: click.Context, name: str, workload_id: str, gateway: str, token: str | None
) -> None:
    """Print the result of a finished workload (raises its error if it failed)."""
    _store_client(ctx, gateway, token)
    from .client import AsyncAPI, Workload

    _print_result(Workload(AsyncAPI(_client(ctx), name), workload_id).result(timeout=0))


@main.command()
@click.argument("name")
@click.argument("workload_id")
@_client_options
@click.pass_context
@_fail_cleanly
def cancel(
    ctx: click.Context, name: str, workload_id: str, gateway: str, token: str | None
) -> None:
    """Cancel a queued or running workload."""
    _store_client(ctx, gateway, token)
    info = _client(ctx).request("DELETE", f"/{name}/{workload_id}").json()
    click.echo(f"{workload_id} {info['status']}")


@main.command()
@click.argument("name")
@_client_options
@click.pass_context
@_fail_cleanly
def undeploy(ctx: click.Context, name: str, gateway: str, token: str | None) -> None:
    """Remove API NAME (queued workloads are cancelled)."""
    _store_client(ctx, gateway, token)
    _client(ctx).undeploy(name)
    click.echo(f"undeployed {name}")


@main.command()
@click.argument("name", required=False)
@_client_options
@click.pass_context
@_fail_cleanly
def get(ctx: click.Context, name: str | None, gateway: str, token: str | None) -> None:
    """List APIs, or show one API and its recent workloads, as tables."""
    from rich.console import Console
    from rich.table import Table

    _store_client(ctx, gateway, token)
    client = _client(ctx)
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
    api = client.api(name)
    info = api.status()
    console.print(f"[bold]{name}[/bold] v{info['version']} {info['state']}  {info['endpoint']}")
    console.print(
        f"queued {info['queue_depth']}  in progress {info['in_progress']}  "
        f"completed {info['completed']}  failed {info['failed']}  "
        f"workers {info['workers']}→{info['desired_workers']}"
    )
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


# The commands of the other modules register themselves on `main` when imported.
from . import cli_deploy, cli_serve  # noqa: E402, F401

if __name__ == "__main__":
    # Run as `python -m asyncnb.cli`, this module is `__main__`; the commands registered
    # themselves on the `main` of `asyncnb.cli`, so that is the one to call.
    from asyncnb.cli import main as registered_main

    registered_main()
