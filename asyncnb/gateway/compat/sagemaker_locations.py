"""Where SageMaker's objects live: the input a caller names, the output and failure written.

All three lie in the gateway's own storage, under `<storage>/sagemaker/`:

    sagemaker/inputs/{api}/...           what callers upload and name as InputLocation
    sagemaker/outputs/{api}/{id}.out     the result's bytes (OutputLocation)
    sagemaker/failures/{api}/{id}.error  the error record as JSON (FailureLocation)

An InputLocation anywhere else is refused: another bucket (403), so the gateway never reads
arbitrary buckets with its credentials; the rest of its own storage (403: its queue, key
hashes and API specs are not inputs); and another API's inputs (403: a key for one API must not
have a second API's input objects read and answered back to it).
"""

from __future__ import annotations

import re

from ...engine.result_copies import CopyTarget
from ...storage import Storage
from .common import HTTPError

AREA = "sagemaker"
_S3 = ("s3", "s3a")
_UNSAFE = re.compile(r"[\x00-\x20\x7f?#\\]")


def _scheme(storage: Storage) -> str:
    return "s3" if storage.protocol in _S3 else storage.protocol


def url_of(storage: Storage, path: str) -> str:
    """The URL a caller reads `path` at (s3://bucket/key on S3)."""
    if storage.is_local:
        return f"file://{path}"
    return f"{_scheme(storage)}://{path.lstrip('/')}"


def inputs_dir(storage: Storage, api: str) -> str:
    return storage.path(AREA, "inputs", api)


def inputs_url(storage: Storage, api: str) -> str:
    return url_of(storage, inputs_dir(storage, api)) + "/"


def copy_target(storage: Storage, api: str, workload_id: str) -> CopyTarget:
    return CopyTarget(
        output=storage.path(AREA, "outputs", api, f"{workload_id}.out"),
        failure=storage.path(AREA, "failures", api, f"{workload_id}.error"),
    )


def input_path(storage: Storage, location: str, api: str) -> str:
    """The storage path of an InputLocation of `api`; HTTPError 400 (malformed) or 403
    (elsewhere)."""
    scheme = _scheme(storage)
    shown = location[:200]
    given, sep, rest = location.partition("://")
    if not sep or given.lower() not in ((scheme, *_S3) if scheme == "s3" else (scheme,)):
        raise HTTPError(400, f"InputLocation must be an {scheme}:// URL, got {shown!r}")
    if _UNSAFE.search(rest) or len(location) > 1024:
        raise HTTPError(400, f"InputLocation {shown!r} is malformed: no spaces, '?', '#' or '\\\\'")
    if scheme == "s3":
        bucket, _, key = rest.partition("/")
        if not bucket or not key:
            raise HTTPError(400, f"InputLocation must read s3://<bucket>/<key>, got {shown!r}")
        own = storage.root.split("/", 1)[0]
        if bucket != own:
            raise HTTPError(
                403,
                f"InputLocation names bucket {bucket[:63]!r}: the gateway reads inputs from "
                f"its own storage only, under {inputs_url(storage, api)}",
            )
        path = rest
    else:
        path = rest if storage.is_local else "/" + rest
    segments = path.strip("/").split("/")
    if any(s in ("", ".", "..") for s in segments) or path.endswith("/"):
        raise HTTPError(400, f"InputLocation {shown!r} must name an object, without . or ..")
    if not path.startswith(inputs_dir(storage, api) + "/"):
        raise HTTPError(
            403,
            f"InputLocation {shown!r} lies outside the inputs area of API {api!r}: upload its "
            f"inputs under {inputs_url(storage, api)}",
        )
    return path
