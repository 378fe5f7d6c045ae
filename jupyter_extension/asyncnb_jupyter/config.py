"""`c.AsyncNB.*`: how the Jupyter server runs (or reaches) its asyncnb gateway."""

from __future__ import annotations

import os

from jupyter_core.paths import jupyter_data_dir
from traitlets import Dict, Float, Integer, List, Unicode
from traitlets.config import Configurable

from asyncnb.contract.settings import serve_argv


class AsyncNB(Configurable):
    """Settings of the gateway that the `asyncnb_jupyter` server extension manages."""

    storage = Unicode(
        "",
        help="""fsspec URL or path of the gateway's storage (APIs, queues, results).
        Default: $ASYNCNB_STORAGE, else <jupyter data dir>/asyncnb/storage. One gateway owns a
        storage at a time, so two Jupyter servers of one user need two storages.""",
    ).tag(config=True)

    storage_options = Dict(help="fsspec storage options (e.g. S3 credentials)").tag(config=True)

    scheduler_address = Unicode(
        "", help="address of an existing Dask scheduler (instead of a LocalCluster)"
    ).tag(config=True)

    cluster = Unicode(
        "", help="'module:callable' returning a Dask cluster (instead of a LocalCluster)"
    ).tag(config=True)

    n_workers = Integer(
        None, allow_none=True, help="LocalCluster worker processes (default: asyncnb's)"
    ).tag(config=True)

    threads_per_worker = Integer(None, allow_none=True, help="LocalCluster threads per worker").tag(
        config=True
    )

    worker_resources = Dict(
        value_trait=Float(),
        help="resources of each LocalCluster worker, e.g. {'GPU': 1}",
    ).tag(config=True)

    public_url = Unicode(
        "",
        help="""URL of this server's asyncnb routes as colleagues reach it, shown as the APIs'
        endpoint in notebooks (e.g. https://hub.example.org/user/alice/asyncnb). Default: the
        server's own URL + 'asyncnb'.""",
    ).tag(config=True)

    gateway_url = Unicode(
        "",
        help="""Use this already running gateway instead of starting one. The routes under
        /asyncnb then proxy to it, and kernels deploy to it. Default: $ASYNCNB_GATEWAY (with
        $ASYNCNB_TOKEN) when the server starts with it set, else a managed gateway.""",
    ).tag(config=True)

    gateway_token = Unicode(
        "", help="admin token of gateway_url (a managed gateway gets a generated one)"
    ).tag(config=True)

    serve_args = List(
        Unicode(), help="extra `asyncnb serve` arguments, e.g. ['--max-chunk', '32']"
    ).tag(config=True)

    log_level = Unicode("warning", help="log level of the managed gateway").tag(config=True)

    check_interval = Float(1.0, help="seconds between liveness checks of the gateway").tag(
        config=True
    )

    start_timeout = Float(
        120.0, help="seconds a gateway may take to become ready before it is restarted"
    ).tag(config=True)

    stop_timeout = Float(
        10.0, help="seconds a gateway may take to stop gracefully before it is killed"
    ).tag(config=True)

    max_start_failures = Integer(
        5, help="consecutive failed starts after which the gateway is left stopped"
    ).tag(config=True)

    request_timeout = Float(
        120.0,
        help="seconds to wait for the gateway's answer (above the 60 s of Prefer: wait)",
    ).tag(config=True)

    def storage_url(self) -> str:
        """The storage the managed gateway serves."""
        if self.storage:
            return str(self.storage)
        from_env = os.environ.get("ASYNCNB_STORAGE")
        if from_env:
            return from_env
        return os.path.join(jupyter_data_dir(), "asyncnb", "storage")

    def problems(self) -> list[str]:
        """Settings that `asyncnb serve` would refuse, worded for the server log."""
        found = []
        if self.scheduler_address and (self.n_workers or self.cluster or self.worker_resources):
            found.append(
                "c.AsyncNB.scheduler_address excludes n_workers, cluster and worker_resources"
            )
        if self.cluster and ":" not in self.cluster:
            found.append(f"c.AsyncNB.cluster {self.cluster!r} must be 'module:callable'")
        if self.gateway_token and not self.gateway_url:
            found.append("c.AsyncNB.gateway_token is set without c.AsyncNB.gateway_url")
        return found

    def serve_arguments(self, port: int, public_url: str) -> list[str]:
        """`asyncnb serve` arguments (the token goes in the environment, not on argv)."""
        args = serve_argv(
            {
                "host": "127.0.0.1",
                "port": port,
                "storage": self.storage_url(),
                "storage_options": self.storage_options,
                "scheduler": self.scheduler_address or None,
                "cluster": self.cluster or None,
                "n_workers": self.n_workers,
                "threads_per_worker": self.threads_per_worker,
                "worker_resources": self.worker_resources,
                "public_url": public_url or None,
                "log_level": self.log_level,
            }
        )
        return [*args, *self.serve_args]
