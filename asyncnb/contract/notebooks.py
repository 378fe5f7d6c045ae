"""What a notebook run as an API and the notebook side agree on."""

from __future__ import annotations

import os

# Set for the kernel that runs a notebook as a workload: its `%%async_api` cells define their
# classes and deploy nothing.
IN_WORKLOAD_ENV = "ASYNCNB_NOTEBOOK_WORKLOAD"
RECORD_MIME = "application/vnd.asyncnb.record+json"
NOTEBOOK_ARTIFACT = "notebook.ipynb"


def in_notebook_workload() -> bool:
    """True inside a notebook that runs as a workload of a notebook API."""
    return os.environ.get(IN_WORKLOAD_ENV) == "1"
