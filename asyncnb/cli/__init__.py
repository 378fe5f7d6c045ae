"""`asyncnb` command line: serve a gateway, deploy predictors, submit and inspect workloads."""

from . import deploy, keys, local, serve, workloads  # noqa: F401  (each registers its commands on `main`)
from .group import main

__all__ = ["main"]
