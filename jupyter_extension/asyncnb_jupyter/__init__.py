"""Jupyter server extension: one managed asyncnb gateway per Jupyter server, shared under /asyncnb.

Enabled by `jupyter-config/jupyter_server_config.d/asyncnb_jupyter.json` (installed into
`etc/jupyter/`), or with `--ServerApp.jpserver_extensions='{"asyncnb_jupyter": True}'`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import AsyncNBJupyter

    return [{"module": "asyncnb_jupyter", "app": AsyncNBJupyter}]
