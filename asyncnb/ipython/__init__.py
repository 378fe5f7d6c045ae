"""The notebook side: the `%%async_api` magics, and the live dashboard an API handle shows.

Importing this package plugs the dashboard into the client (`set_dashboard_factory`), so a
handle displayed in a notebook is its dashboard; asyncnb imports it by itself inside IPython.
"""

from __future__ import annotations

from typing import Any

from ..client import AsyncAPI, set_dashboard_factory


def _dashboard(api: AsyncAPI, interval: float) -> Any:
    from .dashboard import APIDashboard

    return APIDashboard(api, interval=interval)


set_dashboard_factory(_dashboard)
