"""The client proper: `Client` (one gateway) and `AsyncAPI` (one API); `Workload` (one
workload) is workload.py."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..contract.keys import looks_like_key
from ..contract.options import EXAMPLE_MAX_BYTES
from ..contract.predictor import (
    JSON_TYPE,
    check_predictor_class,
    encode_payload,
)
from ..errors import (
    GatewayError,
    GatewayUnreachable,
    UsageError,
)
from .pickling import pickle_predictor
from .retries import RetryPolicy, Sent, send
from .sharing import SharedKey
from .text import checked_api_name, describe_api, explain_detail
from .workload import Workload

# name → handle of every API deployed from this process, so `asyncnb.api(name)` finds it on
# the gateway it was deployed to
handles: dict[str, AsyncAPI] = {}

# How a handle shows itself as a live dashboard in a notebook. asyncnb.ipython plugs its
# widget in here when it is imported (asyncnb imports it inside IPython); the client itself
# never imports widgets, so scripts and workers stay light.
DashboardFactory = Callable[["AsyncAPI", float], Any]
_dashboard_factory: DashboardFactory | None = None


def set_dashboard_factory(factory: DashboardFactory | None) -> None:
    global _dashboard_factory
    _dashboard_factory = factory


def gateway_urls(url: str | Sequence[str]) -> list[str]:
    """`"http://a,http://b"` or `["http://a", "http://b"]`: the gateway URLs, in order."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [part.strip().rstrip("/") for part in parts if part.strip()]
    if not urls:
        raise UsageError(f"no gateway URL in {url!r}")
    return urls


class Client:
    """Talks to a gateway: `url` or `ASYNCNB_GATEWAY`, else the local gateway of the storage
    (`ASYNCNB_STORAGE`, default ~/.asyncnb/storage), which it starts when none runs.

    `url` may list several gateways of one storage (`"http://a,http://b"`, or a list): an
    active one and its standbys. The client uses one at a time and moves to the next when it
    does not answer or answers `503`/`502`/`504`.

    Reads and submits ride out a gateway that is briefly away (a restart, or a standby taking
    over) by retrying for up to `retry_timeout` seconds (0: never); every submit carries an
    `Idempotency-Key` (one is made when the caller gives none), so a retry can never create a
    second workload. See retries.py."""

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        *,
        retry_timeout: float = 60.0,
    ):
        url = url or os.environ.get("ASYNCNB_GATEWAY")
        if not url:
            # No gateway configured: the local gateway of this process's storage, shared with
            # every other process on it (started now if none runs), with its token.
            from ..server.embedded import default_gateway

            local = default_gateway()
            url, token = local.url, token if token is not None else local.token
        elif token is None:
            token = os.environ.get("ASYNCNB_TOKEN") or None
        self.urls = gateway_urls(url)
        self._current = 0
        self._reached = False  # whether any gateway has answered this client
        self.token = token
        self.retry_policy = RetryPolicy(timeout_s=max(0.0, retry_timeout))
        self._http = httpx.Client(
            base_url=self.url,
            headers=self.auth_headers(),
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    @property
    def url(self) -> str:
        """The gateway URL in use now (the first of `urls` until one fails)."""
        return self.urls[self._current]

    @property
    def retry_timeout(self) -> float:
        return self.retry_policy.timeout_s

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def http(self) -> httpx.Client:
        """The connection pool of this client (authenticated, with its base URL)."""
        return self._http

    def async_http(self, timeout: float = 10.0) -> httpx.AsyncClient:
        """An asynchronous HTTP client for this gateway, for the caller's event loop (close it)."""
        return httpx.AsyncClient(base_url=self.url, headers=self.auth_headers(), timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({','.join(self.urls)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # transport ---------------------------------------------------------------------------
    def request(
        self, method: str, path: str, *, repeatable: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One request; `repeatable` (safe to send again: a read, a keyed submit) retries it
        while the gateway is away, within `retry_timeout`. GatewayUnreachable when no
        gateway answered, GatewayError for an error status."""
        sent = send(
            lambda: self._try(method, path, kwargs),
            self.retry_policy,
            repeatable=repeatable,
            urls=len(self.urls),
            reached=lambda: self._reached,
        )
        if sent.response is None:
            where = "the gateway at " if len(self.urls) == 1 else "the gateways at "
            where += ", ".join(self.urls)
            raise GatewayUnreachable(f"cannot reach {where}{sent.note()}: {sent.error}")
        response = sent.response
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            if isinstance(detail, str):
                detail += sent.note()
            raise GatewayError(response.status_code, detail)
        return response

    def _try(self, method: str, path: str, kwargs: dict[str, Any]) -> Sent:
        url = self.url
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            sent = Sent(url, error=exc)
        else:
            self._reached = True
            sent = Sent(url, response=response)
        if len(self.urls) > 1 and sent.fails_over() and self.url == url:
            self._current = (self._current + 1) % len(self.urls)
            self._http.base_url = httpx.URL(self.url)
        return sent

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """GET with retries while the gateway is away (reads are safe to repeat)."""
        return self.request("GET", path, repeatable=True, **kwargs).json()

    # APIs --------------------------------------------------------------------------------
    def deploy(
        self, cls: type, name: str, config: dict[str, Any] | None = None, **options: Any
    ) -> AsyncAPI:
        """Deploy (or redeploy as a new version) `cls` as the API `name`."""
        checked_api_name(name)
        check_predictor_class(cls)
        body = {
            "predictor": base64.b64encode(pickle_predictor(cls)).decode(),
            "config": config,
            "options": options,
        }
        try:
            info = self.request("PUT", f"/apis/{name}", json=body).json()
        except GatewayError as exc:
            if exc.status_code in (400, 404, 422):
                raise UsageError(explain_detail(exc.detail)) from None
            raise
        api = handles.get(name)
        if api is None or api.client.url != self.url:
            api = AsyncAPI(self, name)
        api.webhook_secret = info.get("webhook_secret")
        handles[name] = api
        return api

    def deploy_notebook(
        self, path: str | Path, name: str, *, kernel_name: str | None = None, **options: Any
    ) -> AsyncAPI:
        """Deploy a whole notebook: each workload runs it with papermill (see notebook_api)."""
        from ..runtime.notebook_api import NotebookPredictor, notebook_config

        return self.deploy(NotebookPredictor, name, notebook_config(path, kernel_name), **options)

    def api(self, name: str) -> AsyncAPI:
        """A handle of the deployed API `name` (checked: UsageError when it is not there)."""
        api = AsyncAPI(self, name)
        try:
            api.status()
        except GatewayError as exc:
            # An invoke-only key may not read the API's status, yet may use the handle.
            if not (exc.status_code == 403 and self.token and looks_like_key(self.token)):
                raise
        return api

    def apis(self) -> list[dict[str, Any]]:
        return list(self.get_json("/apis")["apis"])

    def undeploy(self, name: str) -> None:
        self.request("DELETE", f"/apis/{checked_api_name(name)}")

    # keys ----------------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        apis: Iterable[str] = ("*",),
        scopes: Iterable[str] = ("invoke",),
        *,
        expires_in_s: float | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        max_queued: int | None = None,
    ) -> dict[str, Any]:
        """A new API key (`POST /keys`, admin token): its record, with the key's text in
        `key`, shown this once."""
        body: dict[str, Any] = {"name": name, "apis": list(apis), "scopes": list(scopes)}
        limits = {
            "expires_in_s": expires_in_s,
            "rate_limit": rate_limit,
            "burst": burst,
            "max_queued": max_queued,
        }
        body.update({k: v for k, v in limits.items() if v is not None})
        try:
            return dict(self.request("POST", "/keys", json=body).json())
        except GatewayError as exc:
            if exc.status_code == 422:
                raise UsageError(explain_detail(exc.detail)) from None
            raise

    def list_keys(self, api: str | None = None) -> list[dict[str, Any]]:
        """Every key (without secrets), or those that may call `api`."""
        params = {"api": checked_api_name(api)} if api else {}
        return list(self.get_json("/keys", params=params)["keys"])

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key at once: it gets 401 from now on."""
        try:
            return dict(self.request("DELETE", f"/keys/{key_id}").json())
        except GatewayError as exc:
            if exc.status_code == 404:
                raise UsageError(str(exc.detail)) from None
            raise


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where widgets can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


@dataclass
class APISnapshot:
    """One look at an API: its status record and newest workloads, or why there is none."""

    status: dict[str, Any] | None = None
    workloads: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None


async def _get_json(http: httpx.AsyncClient, path: str, **kwargs: Any) -> Any:
    response = await http.get(path, **kwargs)
    response.raise_for_status()
    return response.json()


class AsyncAPI:
    """A deployed API: submit workloads, read its status."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = checked_api_name(name)
        self.webhook_secret: str | None = None
        # The JSON text of the last JSON payload this handle submitted successfully (up to
        # 64 KiB): the dashboard's example payload when the deploy gave none.
        self.last_payload_json: str | None = None
        self._dashboard: Any = None

    def dashboard(self, interval: float = 1.0) -> Any:
        """The live ipywidgets dashboard of this API (cached: one per handle)."""
        if _dashboard_factory is None:
            raise UsageError("the dashboard is a notebook widget: use it inside IPython/Jupyter")
        if self._dashboard is None or self._dashboard.comm is None:
            self._dashboard = _dashboard_factory(self, interval)
        return self._dashboard

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if _dashboard_factory is not None and _in_kernel():
            bundle.update(self.dashboard()._repr_mimebundle_(include=include, exclude=exclude))
        # Displaying is asked for, so it may ask the gateway; `repr` never does.
        try:
            bundle["text/plain"] = f"<AsyncAPI {self.summary()}>"
        except Exception as exc:
            bundle["text/plain"] = f"<AsyncAPI {self.name} at {self.url}: {exc}>"
        return bundle

    @property
    def url(self) -> str:
        return f"{self.client.url}/{self.name}"

    def __repr__(self) -> str:
        return f"<AsyncAPI {self.name} at {self.url}>"

    def summary(self) -> str:
        """One line of the API's state and counts, fetched now."""
        return describe_api(self.status())

    async def watch(self, interval: float = 1.0, recent: int = 8) -> AsyncIterator[APISnapshot]:
        """The API's status and its `recent` newest workloads, every `interval` seconds: the
        data loop of live views (the notebook dashboard), over the same HTTP API as any
        client. While the gateway cannot be reached, the snapshots carry the error and come
        less often (up to 30 intervals apart)."""
        async with self.client.async_http() as http:
            failures = 0
            while True:
                await asyncio.sleep(interval * min(2**failures, 30))
                try:
                    status = await _get_json(http, f"/{self.name}")
                    listed = await _get_json(
                        http, f"/{self.name}/workloads", params={"limit": recent}
                    )
                except Exception as exc:
                    failures += 1
                    yield APISnapshot(error=exc)
                    continue
                failures = 0
                yield APISnapshot(status=status, workloads=list(listed["workloads"]))

    def status(self) -> dict[str, Any]:
        try:
            return dict(self.client.get_json(f"/{self.name}"))
        except GatewayError as exc:
            if exc.status_code in (400, 404):
                raise UsageError(str(exc.detail)) from None
            raise

    def submit(
        self,
        payload: Any,
        *,
        content_type: str | None = None,
        priority: int = 0,
        webhook_url: str | None = None,
        idempotency_key: str | None = None,
        webhook_events: Iterable[str] | None = None,
    ) -> Workload:
        """Queue one workload; `webhook_events` chooses what its webhook gets (default: its
        end; see `asyncnb.contract.events.EVENT_TYPES`). It is sent with `idempotency_key`, or
        a key made for this call, and resent with that same key while the gateway is away
        (within the client's `retry_timeout`), so it makes one workload however often it is
        sent."""
        body, media = encode_payload(payload, content_type)
        headers = {"Content-Type": media}
        if priority:
            headers["X-Priority"] = str(int(priority))
        if webhook_url:
            headers["X-Webhook-URL"] = webhook_url
        if webhook_events is not None:
            headers["X-Webhook-Events"] = ",".join(webhook_events)
        # Always a key, so that a retry after a lost answer gets the workload it created
        # instead of a second one.
        headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        try:
            info = self.client.request(
                "POST", f"/{self.name}", repeatable=True, content=body, headers=headers
            )
        except GatewayError as exc:
            if exc.status_code in (400, 404, 413, 422):
                raise UsageError(explain_detail(exc.detail)) from None
            raise
        if media == JSON_TYPE and len(body) <= EXAMPLE_MAX_BYTES:
            self.last_payload_json = body.decode()
        return Workload(self, info.json()["id"])

    def submit_many(self, payloads: Iterable[Any], *, progress: bool = True) -> list[Workload]:
        """Submit every payload, showing a progress bar (tqdm) while they go out."""
        from tqdm.auto import tqdm

        items = list(payloads)
        with tqdm(total=len(items), desc=f"submit {self.name}", disable=not progress) as bar:
            submitted = []
            for payload in items:
                submitted.append(self.submit(payload))
                bar.update()
        return submitted

    def gather(
        self, workloads: Iterable[Workload], timeout: float | None = None, progress: bool = True
    ) -> list[Any]:
        """Results of `workloads` in order, with a progress bar of finished ones."""
        from tqdm.auto import tqdm

        items = list(workloads)
        results = []
        with tqdm(total=len(items), desc=f"finished {self.name}", disable=not progress) as bar:
            for workload in items:
                results.append(workload.result(timeout=timeout))
                bar.update()
        return results

    def workloads(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return list(self.client.get_json(f"/{self.name}/workloads", params=params)["workloads"])

    def workload(self, workload_id: str) -> Workload:
        return Workload(self, workload_id)

    def share(
        self,
        name: str,
        *,
        scopes: Iterable[str] = ("invoke",),
        expires_in_s: float | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        max_queued: int | None = None,
    ) -> SharedKey:
        """Create an API key for the colleague `name` that calls this API only, and what to
        hand them: the key (shown once), the endpoint, ready curl lines."""
        created = self.client.create_key(
            name,
            [self.name],
            scopes,
            expires_in_s=expires_in_s,
            rate_limit=rate_limit,
            burst=burst,
            max_queued=max_queued,
        )
        try:
            endpoint = str(self.status().get("endpoint") or self.url)
        except (GatewayError, UsageError):
            endpoint = self.url
        return SharedKey(
            key=created["key"],
            id=created["id"],
            name=created["name"],
            api=self.name,
            endpoint=endpoint,
            scopes=list(created["scopes"]),
            record={k: v for k, v in created.items() if k != "key"},
        )

    def set_scaling(
        self, min_replicas: int | None = None, max_replicas: int | None = None, **options: Any
    ) -> dict[str, Any]:
        """Change the API's scaling bounds (and any other autoscaling option, such as
        `target_in_flight`) without a new version; answers the API's status record.
        `PATCH /apis/{api}`: needs the admin token where the gateway has one."""
        changes = dict(options)
        if min_replicas is not None:
            changes["min_replicas"] = min_replicas
        if max_replicas is not None:
            changes["max_replicas"] = max_replicas
        if not changes:
            raise UsageError("nothing to change: give min_replicas and/or max_replicas")
        try:
            answer = self.client.request("PATCH", f"/apis/{self.name}", json=changes)
        except GatewayError as exc:
            if 400 <= exc.status_code < 500:
                raise UsageError(explain_detail(exc.detail)) from None
            raise
        return dict(answer.json())
