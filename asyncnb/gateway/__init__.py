"""The HTTP gateway: the AsyncAPI contract over the engine (FastAPI, plus an ASGI fast path
for the two most frequent requests)."""

from .app import create_app, create_asgi_app

__all__ = ["create_app", "create_asgi_app"]
