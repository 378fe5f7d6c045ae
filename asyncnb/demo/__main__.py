"""`make demo`: the local gateway, the example predictor, a few workloads, then keep serving.

The demo starts the local gateway of its storage unless one runs already (then it uses it and
leaves it running); a gateway it started, it stops again when it ends (Ctrl-C, SIGTERM, or after
`--once`).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from typing import Any

from ..client import Client
from ..contract.settings import default_storage_url
from ..errors import AsyncNBError
from ..server.embedded import start_gateway, stop_embedded_gateway
from ..server.local import stop_local_gateway
from .textstats import TextStats

DOCUMENTS = [
    "asyncnb is great: I love how fast the results come back",
    "the old batch system was slow and the logs were awful",
    "queue, dispatch, predict, store the result, call the webhook",
    "notebooks become endpoints; colleagues poll them over HTTP",
]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--storage", default=None, help="fsspec URL; default ~/.asyncnb/storage")
    parser.add_argument("--once", action="store_true", help="exit after the workloads finish")
    args = parser.parse_args(argv)
    # Ctrl-C ends the demo, even when it was started with SIGINT ignored (as a shell does for
    # a background job), and SIGTERM the same way: it stops the gateway it started, in order.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        _demo(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except AsyncNBError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _demo(args: argparse.Namespace) -> None:
    port = args.port if args.port == 0 or _port_free(args.port) else 0
    storage = args.storage or default_storage_url()
    print("finding (or starting) the local gateway and its Dask cluster...", flush=True)
    gateway = start_gateway(storage=storage, port=port)
    try:
        _run_example(Client(gateway.url, gateway.token), gateway.token)
        if not args.once:
            print("\nserving until Ctrl-C", flush=True)
            while True:
                time.sleep(3600)
    finally:
        if gateway.started and gateway.pid is not None:
            stop_local_gateway(storage, timeout=20)
            print("stopped the local gateway the demo had started", flush=True)
        elif gateway.pid is not None:
            print(
                f"the local gateway keeps serving at {gateway.url} (pid {gateway.pid}); "
                "`asyncnb local stop` stops it",
                flush=True,
            )
        else:
            stop_embedded_gateway()


def _run_example(client: Client, token: str | None) -> None:
    api = client.deploy(TextStats, "textstats", config={"top": 3})
    print(f"deployed {api.name}; submitting {len(DOCUMENTS)} workloads", flush=True)
    started = time.perf_counter()
    workloads = api.submit_many({"text": d} for d in DOCUMENTS)
    for document, workload in zip(DOCUMENTS, workloads, strict=True):
        result = workload.result(timeout=120)
        print(f"  {workload.id}  completed  {result}  <- {document[:40]!r}", flush=True)
    print(f"all {len(workloads)} completed in {time.perf_counter() - started:.2f} s\n")
    print(api.summary())
    auth = f" -H 'Authorization: Bearer {token}'" if token else ""
    print(f"\nendpoint: {api.url}")
    print(
        f"try:  curl -s -X POST {api.url}{auth} -H 'Content-Type: application/json' "
        """-d '{"text": "what a great demo"}'"""
    )
    docs = f"{client.url}/docs" + (f"?token={token}" if token else "")
    print(f"then: curl -s{auth} {api.url}/<id>     (docs: {docs})", flush=True)


if __name__ == "__main__":
    main()
