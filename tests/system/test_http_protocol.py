"""The coalescing HTTP protocol under a real `asyncnb serve`: keep-alive and pipelining."""

from __future__ import annotations

import socket

import httpx

from ..support.processes import Gateway


def test_keep_alive_and_pipelined_requests_through_the_gateway(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        for _ in range(20):  # one connection, reused
            assert http.get("/healthz").json()["status"] == "ok"
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        sock.sendall(request * 3)
        received = b""
        while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 3
