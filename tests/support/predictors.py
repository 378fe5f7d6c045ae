"""Predictors used by the tests; shipped to workers by value like a notebook's classes."""

from __future__ import annotations

import os
import time
from typing import Any

import asyncnb


class Echo:
    def __init__(self, config: dict[str, Any]) -> None:
        self.tag = config.get("tag", "v1")

    def predict(self, payload: Any, request_id: str) -> Any:
        return {"payload": payload, "tag": self.tag, "id": request_id, "pid": os.getpid()}


class NoConfig:
    def predict(self, payload: Any) -> Any:
        return payload


class Raw:
    """Returns bytes for bytes, str for text: results are not only JSON objects."""

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict(self, payload: Any) -> Any:
        if isinstance(payload, dict) and "repeat" in payload:
            return b"x" * int(payload["repeat"])
        if isinstance(payload, bytes):
            return payload[::-1]
        if isinstance(payload, str):
            return payload.upper()
        return payload


class Slow:
    def __init__(self, config: dict[str, Any]) -> None:
        self.seconds = float(config.get("seconds", 0.5))

    def predict(self, payload: Any) -> Any:
        steps = 5
        for step in range(steps):
            time.sleep(self.seconds / steps)
            asyncnb.report_progress((step + 1) / steps, f"step {step + 1}/{steps}")
        return payload


class Sleepy:
    """Sleeps as long as the payload says; the order of finishing shows the order of running."""

    def predict(self, payload: Any) -> Any:
        time.sleep(float(payload.get("sleep", 0)))
        return {"name": payload.get("name"), "t": time.time(), "pid": os.getpid()}


class Failing:
    def predict(self, payload: Any) -> Any:
        raise ValueError(f"bad payload {payload!r}")


class Flaky:
    """Fails until it has been called `fail_times` times for a payload (counted in a file)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.folder = config["folder"]
        self.fail_times = int(config.get("fail_times", 2))

    def predict(self, payload: Any) -> Any:
        marker = os.path.join(self.folder, str(payload["n"]))
        with open(marker, "a") as f:
            f.write("x")
        with open(marker) as f:
            calls = len(f.read())
        if calls <= self.fail_times:
            raise RuntimeError(f"flaky call {calls}")
        return {"calls": calls}


class Hangs:
    def predict(self, payload: Any) -> Any:
        time.sleep(3600)


class Unserializable:
    def predict(self, payload: Any) -> Any:
        return {"value": object()}


class InitFails:
    def __init__(self, config: dict[str, Any]) -> None:
        raise RuntimeError("model weights not found")

    def predict(self, payload: Any) -> Any:
        return payload


class Batched:
    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def predict_batch(self, payloads: list[Any]) -> list[Any]:
        return [{"x": p["x"] * 2, "batch": len(payloads)} for p in payloads]


class CountInits:
    """Each instance records its pid: __init__ runs once per worker process per version."""

    def __init__(self, config: dict[str, Any]) -> None:
        with open(os.path.join(config["folder"], f"init-{os.getpid()}-{time.time_ns()}"), "w"):
            pass

    def predict(self, payload: Any) -> Any:
        return os.getpid()


class WhichGPU:
    def predict(self, payload: Any) -> Any:
        time.sleep(float(payload.get("sleep", 0)))
        return {"device": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


class Marked:
    """Leaves a file named after its worker's pid, so a test knows which process is busy."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.folder = config["folder"]

    def predict(self, payload: Any) -> Any:
        open(os.path.join(self.folder, str(os.getpid())), "w").close()
        time.sleep(float(payload.get("sleep", 0)))
        return {"name": payload.get("name"), "pid": os.getpid()}


class Streamer:
    """A generator predictor: `n` outputs `delay` seconds apart, a log line before each."""

    def predict(self, payload: Any) -> Any:
        for index in range(int(payload.get("n", 5))):
            time.sleep(float(payload.get("delay", 0.3)))
            print(f"making output {index}")
            yield {"index": index, "tag": payload.get("tag")}


class Chatty:
    """Writes `lines` lines tagged with its payload's tag to stdout, stderr and logging."""

    def predict(self, payload: Any) -> Any:
        import logging
        import sys

        tag = payload["tag"]
        for n in range(int(payload.get("lines", 50))):
            print(f"{tag} stdout {n}")
            sys.stderr.write(f"{tag} stderr {n}\n")
            logging.getLogger("chatty").warning("%s logging %s", tag, n)
            time.sleep(0.002)
        return {"tag": tag, "pid": os.getpid()}


class HangsWhenAsked:
    """`{"hang": true}` never returns: `time.sleep(10**6)`, or with config `{"spin": true}`
    a pure-Python busy loop. It first leaves a file named after its pid in config `folder`,
    so a test knows which process a hung predict holds; other payloads return the pid."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.folder = config["folder"]
        self.spin = bool(config.get("spin"))

    def predict(self, payload: Any) -> Any:
        if payload.get("hang"):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()
            if self.spin:
                while True:
                    pass
            time.sleep(10**6)
        time.sleep(float(payload.get("sleep", 0)))
        return {"name": payload.get("name"), "pid": os.getpid()}


class Appending:
    """Appends `name pid` to `config["path"]` each time it runs: a test counts executions."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.path = config["path"]

    def predict(self, payload: Any) -> Any:
        time.sleep(float(payload.get("sleep", 0)))
        with open(self.path, "a") as log:
            log.write(f"{payload['name']} {os.getpid()}\n")
        return {"name": payload["name"]}
