"""The chaos soak's predictor: a known answer per payload, and a line per execution.

Every execution appends `start N TIME PID` and `end N TIME PID` to the file `config["log"]`
(one `write` of a short line with O_APPEND, so lines from many processes never interleave):
the soak counts executions per workload from it, and tells a rerun at a kill from any other.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any


def expected_value(n: int) -> str:
    return hashlib.sha256(f"soak-{n}".encode()).hexdigest()[:16]


class Soak:
    def __init__(self, config: dict[str, Any]) -> None:
        self.log = str(config["log"])

    def _note(self, what: str, n: int) -> None:
        line = f"{what} {n} {time.time():.3f} {os.getpid()}\n".encode()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def predict(self, payload: dict[str, Any]) -> dict[str, Any]:
        n = int(payload["n"])
        self._note("start", n)
        time.sleep(float(payload.get("sleep", 0.1)))
        self._note("end", n)
        return {"n": n, "value": expected_value(n)}
