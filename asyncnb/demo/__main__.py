"""`make demo`: an embedded gateway, the example predictor, a few workloads, then keep serving."""

from __future__ import annotations

import argparse
import socket
import time

from ..client import Client
from ..contract.settings import GatewaySettings
from ..server.embedded import embedded_gateway, stop_embedded_gateway
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

    port = args.port if args.port == 0 or _port_free(args.port) else 0
    settings = GatewaySettings(port=port, token=None, admin_token=None)
    if args.storage:
        settings.storage = args.storage
    print("starting the embedded gateway and a local Dask cluster...", flush=True)
    gateway = embedded_gateway(settings)
    client = Client(gateway.url)
    api = client.deploy(TextStats, "textstats", config={"top": 3})
    print(f"deployed {api.name}; submitting {len(DOCUMENTS)} workloads", flush=True)
    started = time.perf_counter()
    workloads = api.submit_many({"text": d} for d in DOCUMENTS)
    for document, workload in zip(DOCUMENTS, workloads, strict=True):
        result = workload.result(timeout=120)
        print(f"  {workload.id}  completed  {result}  <- {document[:40]!r}", flush=True)
    print(f"all {len(workloads)} completed in {time.perf_counter() - started:.2f} s\n")
    print(api.summary())
    print(f"\nendpoint: {api.url}")
    print(
        f"try:  curl -s -X POST {api.url} -H 'Content-Type: application/json' "
        """-d '{"text": "what a great demo"}'"""
    )
    print(f"then: curl -s {api.url}/<id>     (docs: {gateway.url}/docs)", flush=True)
    if args.once:
        stop_embedded_gateway()
        return
    print("\nserving until Ctrl-C", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        stop_embedded_gateway()


if __name__ == "__main__":
    main()
