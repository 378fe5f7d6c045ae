"""`asyncnb serve`: run a gateway (the server side of the command line)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import sys
from typing import Any

import click

from .cli import _fail_cleanly, main
from .errors import UsageError


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
@click.option(
    "--storage-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="seconds a request waits on object storage before it gets 503 + Retry-After",
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
        storage_timeout_s=kw["storage_timeout"],
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
