"""The engine: queue, dispatch, store, autoscaling, webhook delivery and metrics. No HTTP.

The gateway builds on `Engine`; the cluster is reached only through a `Backend`
(backends/dask.py is the one module here that imports distributed).
"""

from .engine import Engine
from .errors import Conflict, EngineError, NotFound, StorageTimeout, Unavailable
from .settings import EngineSettings

__all__ = [
    "Conflict",
    "Engine",
    "EngineError",
    "EngineSettings",
    "NotFound",
    "StorageTimeout",
    "Unavailable",
]
