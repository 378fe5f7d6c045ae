"""`asyncnb` command line: serve a gateway, deploy predictors, submit and inspect workloads."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import AsyncNBError, GatewayError, UsageError
from .options import APIOptions

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


def _store_client(ctx: click.Context, gateway: str, token: str | None) -> None:
    ctx.ensure_object(dict)
    ctx.obj["gateway"] = gateway
    ctx.obj["token"] = token


# serve ---------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int, help="0 picks a free port")
@click.option(
    "--storage",
    envvar="ASYNCNB_STORAGE",
    default=None,
    help="fsspec URL (file://, s3://, memory://); default ~/.asyncnb/storage",
)
@click.option("--storage-options", default=None, help="JSON of fsspec storage options")
@click.option("--scheduler", default=None, help="address of an existing Dask scheduler")
@click.option("--cluster", default=None, help="module:callable returning a Dask Cluster")
@click.option("--workers", "n_workers", type=int, default=None, help="LocalCluster workers")
@click.option("--threads-per-worker", type=int, default=None)
@click.option("--worker-resources", default=None, help="e.g. GPU=1 (LocalCluster workers)")
@click.option("--token", envvar="ASYNCNB_TOKEN", default=None)
@click.option("--admin-token", envvar="ASYNCNB_ADMIN_TOKEN", default=None)
@click.option("--public-url", default=None, help="URL shown to users in endpoints")
@click.option("--insecure", is_flag=True, help="allow a non-loopback --host without a token")
@click.option("--webhook-attempts", type=int, default=6, show_default=True)
@click.option(
    "--webhook-backoff",
    type=float,
    default=1.0,
    show_default=True,
    help="first webhook retry delay in seconds, doubled each time",
)
@click.option(
    "--max-chunk",
    type=int,
    default=64,
    show_default=True,
    help="most queued workloads sent to Dask as one task",
)
@click.option(
    "--prefetch",
    type=int,
    default=1,
    show_default=True,
    help="chunks waiting on each worker slot beyond the running one, under a backlog",
)
@click.option(
    "--max-deploy-bytes",
    type=int,
    default=512 * 1024 * 1024,
    show_default=True,
    help="largest PUT /apis/{api} body",
)
@click.option(
    "--autoscale-interval",
    type=float,
    default=10.0,
    show_default=True,
    help="seconds between autoscaling decisions (>= 1)",
)
@click.option(
    "--min-workers",
    type=int,
    default=None,
    help="fewest workers autoscaling keeps (default: --workers; 0 for --cluster)",
)
@click.option(
    "--max-workers",
    type=int,
    default=None,
    help="most workers autoscaling starts (default: --workers; none for --cluster)",
)
@click.option(
    "--webhook-allow",
    default="",
    help="comma list of hosts, .domains or networks webhooks may reach (default: any not denied)",
)
@click.option(
    "--webhook-deny",
    default="",
    help="comma list of hosts, .domains or networks "
    "webhooks must not reach (link-local and metadata are always denied)",
)
@click.option(
    "--body-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="seconds a client may pause while sending a body (slow clients get 408)",
)
@click.option("--log-level", default="warning", show_default=True)
@_fail_cleanly
def serve(**kw: Any) -> None:
    """Run a gateway (and a LocalCluster unless --scheduler or --cluster is given)."""
    from .serve import serve as run
    from .settings import GatewaySettings, parse_resources
    from .storage import default_storage_url

    if kw["scheduler"] and (kw["n_workers"] or kw["cluster"]):
        raise UsageError("--scheduler excludes --workers and --cluster")
    if kw["autoscale_interval"] < 1:
        raise UsageError("--autoscale-interval must be at least 1 second")
    if not _is_loopback(kw["host"]) and not kw["token"] and not kw["insecure"]:
        raise UsageError(
            f"refusing to listen on {kw['host']} without --token; pass --insecure to insist"
        )
    logging.basicConfig(level=kw["log_level"].upper(), format="%(asctime)s %(name)s %(message)s")
    settings = GatewaySettings(
        host=kw["host"],
        port=kw["port"],
        storage=kw["storage"] or default_storage_url(),
        storage_options=json.loads(kw["storage_options"]) if kw["storage_options"] else {},
        scheduler=kw["scheduler"],
        cluster=kw["cluster"],
        n_workers=kw["n_workers"],
        threads_per_worker=kw["threads_per_worker"],
        worker_resources=parse_resources(kw["worker_resources"]),
        token=kw["token"],
        admin_token=kw["admin_token"],
        public_url=kw["public_url"],
        webhook_attempts=kw["webhook_attempts"],
        webhook_backoff_s=kw["webhook_backoff"],
        max_chunk=kw["max_chunk"],
        prefetch=kw["prefetch"],
        max_deploy_bytes=kw["max_deploy_bytes"],
        autoscale_interval_s=kw["autoscale_interval"],
        webhook_allow=tuple(e for e in kw["webhook_allow"].split(",") if e.strip()),
        webhook_deny=tuple(e for e in kw["webhook_deny"].split(",") if e.strip()),
        body_timeout_s=kw["body_timeout"],
        min_workers=kw["min_workers"],
        max_workers=kw["max_workers"],
    )

    from .cluster import check_storage_reachable
    from .storage import Storage

    check_storage_reachable(settings, Storage(settings.storage, settings.storage_options))

    def ready(url: str) -> None:
        click.echo(f"asyncnb gateway ready at {url} (storage {settings.storage})", err=False)
        sys.stdout.flush()

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(run(settings, ready))


# deploy --------------------------------------------------------------------------------------
def load_class(target: str) -> type:
    """`path/to/file.py:ClassName` → the class, loaded from the file."""
    path_text, sep, class_name = target.rpartition(":")
    if not sep or not path_text or not class_name:
        raise UsageError(f"{target!r} must be FILE.py:ClassName")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    module_name = f"asyncnb_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise UsageError(f"{path} defines no {class_name!r}") from None


def _option_flags(func: Callable[..., Any]) -> Callable[..., Any]:
    """One --flag per deploy option, so the CLI never lags behind APIOptions."""
    for name, field in reversed(list(APIOptions.model_fields.items())):
        func = click.option(
            f"--{name.replace('_', '-')}", name, default=None, help=field.description
        )(func)
    return func


@main.command()
@click.argument("target")
@click.option("--name", default=None, help="API name (DNS label)")
@click.option("--config", default=None, help="JSON object passed to __init__(config)")
@click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="KEY VALUE",
    help="notebook parameter, when running a notebook headless",
)
@click.option("--output", default=None, help="where the headless run writes its notebook")
@_option_flags
@_client_options
@click.pass_context
@_fail_cleanly
def deploy(
    ctx: click.Context,
    target: str,
    name: str | None,
    config: str | None,
    parameters: tuple[tuple[str, str], ...],
    output: str | None,
    gateway: str,
    token: str | None,
    **options: Any,
) -> None:
    """Deploy FILE.py:Class or a notebook as API NAME.

    \b
    asyncnb deploy predictor.py:Class --name N    a predictor class
    asyncnb deploy report.ipynb --name N          the whole notebook, run per workload
    asyncnb deploy setup.ipynb [-p key value]     run the notebook headless: its %%async_api
                                                  cells deploy to --gateway
    """
    _store_client(ctx, gateway, token)
    chosen = {k: _parse_value(v) for k, v in options.items() if v is not None}
    if target.endswith(".ipynb") and name is None:
        _run_notebook(target, dict(parameters), output, gateway, token)
        return
    if name is None:
        raise UsageError("--name is required (except to run a notebook headless)")
    if target.endswith(".ipynb"):
        api = _client(ctx).deploy_notebook(target, name, **chosen)
    else:
        cls = load_class(target)
        parsed_config = json.loads(config) if config else None
        if parsed_config is not None and not isinstance(parsed_config, dict):
            raise UsageError("--config must be a JSON object")
        api = _client(ctx).deploy(cls, name, parsed_config, **chosen)
    info = api.status()
    click.echo(f"deployed {name} v{info['version']} ({info['state']}) at {api.url}")
    if api.webhook_secret:
        click.echo(f"webhook secret: {api.webhook_secret}")


def _run_notebook(
    path: str, parameters: dict[str, str], output: str | None, gateway: str, token: str | None
) -> None:
    """Run a notebook with papermill so that its %%async_api cells deploy to `gateway`."""
    import os
    import tempfile

    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .client import Client

    if not Path(path).is_file():
        raise UsageError(f"no such notebook: {path}")
    before = {a["name"]: a["version"] for a in Client(gateway, token).apis()}
    os.environ["ASYNCNB_GATEWAY"] = gateway  # inherited by the kernel papermill starts
    if token:
        os.environ["ASYNCNB_TOKEN"] = token
    target = output or str(Path(tempfile.mkdtemp(prefix="asyncnb-run-")) / Path(path).name)
    try:
        papermill.execute_notebook(
            path,
            target,
            parameters={k: _parse_value(v) for k, v in parameters.items()},
            progress_bar=False,
            cwd=str(Path(path).resolve().parent),
        )
    except PapermillExecutionError as exc:
        raise UsageError(
            f"{path} failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue} "
            f"(executed notebook: {target})"
        ) from None
    after = Client(gateway, token).apis()
    changed = [
        f"{a['name']} v{a['version']}" for a in after if before.get(a["name"]) != a["version"]
    ]
    click.echo(
        f"ran {path} (executed notebook: {target}); deployed: " + (", ".join(changed) or "nothing")
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


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


if __name__ == "__main__":
    main()
