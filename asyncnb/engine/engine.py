"""The engine: deployed APIs, the durable per-API queue, cancel, lookup and restart recovery.

It sits under the gateway and knows nothing of HTTP. What runs where is `dispatch.py`, what a
chunk's end means is `outcomes.py`; both reach the engine only through what it hands them (its
APIs and `finish_many`), and the cluster only through a `Backend`.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ..contract.keys import Scope
from ..contract.names import idempotent_workload_id, new_workload_id
from ..contract.options import APIOptions
from ..contract.status import APIPhase, Status
from ..storage import Storage
from ..webhooks import generate_secret
from .api_state import APIState
from .backends.base import Backend
from .background import BackgroundTasks
from .cluster_scaler import ClusterScaler, ScalableCluster
from .delivery import WebhookSender
from .dispatch import Dispatcher
from .errors import Conflict, NotFound, StorageTimeout, Unavailable, storage_unavailable
from .event_store import EventStore
from .event_webhooks import EventWebhooks, chosen_events
from .events import EventHub
from .finished_cache import FinishedCache
from .key_signing import signing_from_env
from .keys import APIKey, KeyRing
from .lease import Lease
from .metrics import GatewayMetrics
from .result_copies import ResultCopies
from .settings import EngineSettings
from .store import JournalStore, WorkloadStore, open_store, sweep_workload_folders
from .store.commit import fsync_file
from .webhook_formats import webhook_body
from .workload import Ending, WorkloadState

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Engine:
    def __init__(
        self,
        storage: Storage,
        backend: Backend,
        settings: EngineSettings | None = None,
        cluster: ScalableCluster | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings or EngineSettings()
        # A gateway builds its engine once it holds the storage's lease (server/serve.py).
        fence = lease.check if lease is not None else None
        self.store: WorkloadStore = open_store(storage, self.settings.durability, fence=fence)
        self.apis: dict[str, APIState] = {}
        self.metrics = GatewayMetrics(lambda: [a.snapshot() for a in self.apis.values()])
        # --durability fsync on a local journal: what was written is awaited onto the disk
        self._commits = self.store.commits if isinstance(self.store, JournalStore) else None
        if self._commits is not None:
            self._commits.observe = self.metrics.journal_fsynced
        self.tasks = BackgroundTasks()
        self.events = EventHub(EventStore(storage), self.io, self.tasks)
        self.dispatcher = Dispatcher(
            backend,
            self.apis,
            finish=self.finish_many,
            storage=storage.describe(),
            metrics=self.metrics,
            tasks=self.tasks,
            max_chunk=self.settings.max_chunk,
            prefetch=self.settings.prefetch,
            inline_result_bytes=self.settings.inline_result_bytes,
            events=self.events,
        )
        self.scaler = ClusterScaler(
            self.apis,
            self.dispatcher.workers,
            cluster,
            interval=self.settings.autoscale_interval_s,
            min_workers=self.settings.min_workers,
            max_workers=self.settings.max_workers,
        )
        self.webhooks = WebhookSender(
            self.settings.webhook_attempts,
            self.settings.webhook_backoff_s,
            policy=self.settings.webhook_policy,
        )
        self.event_webhooks = EventWebhooks(
            self.webhooks, self.tasks, self._webhook_destination, self._api_webhook_events
        )
        self.events.listen(self.event_webhooks.on_event, self.event_webhooks.wants_live)
        self._live: dict[str, WorkloadState] = {}
        self._finished = FinishedCache(
            self.settings.finished_cache, self.settings.finished_cache_bytes
        )
        self._accepting: dict[str, asyncio.Future[WorkloadState]] = {}
        self._specs = asyncio.Lock()  # one spec.json write at a time: deploy, reconfigure
        self.keys = KeyRing(storage, signing_from_env())
        # one key record write at a time, so a usage flush never overwrites a revocation
        self._key_writes = asyncio.Lock()
        self._unfinished_by_key: Counter[str] = Counter()
        self._admitting_by_key: Counter[str] = Counter()  # submits reading their bodies
        # outcomes copied to storage paths named at submit (gateway/compat/sagemaker.py)
        self.copies = ResultCopies(
            storage,
            self.io_unbounded,
            self.tasks,
            self.get,
            interval_s=self.settings.sweep_interval_s,
        )
        self._closed = False

    # lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.io_unbounded(self.keys.load)
        await self._recover()
        await self.copies.reconcile(startup=True)
        await self.dispatcher.start()
        self.tasks.spawn(self._sweep_forever())
        self.tasks.spawn(self.events.flush_forever())
        self.tasks.spawn(self._flush_key_usage_forever())
        self.tasks.spawn(self.scaler.run())
        self.tasks.spawn(self.copies.run_forever())

    async def close(self) -> None:
        self._closed = True
        await self.dispatcher.close()
        try:
            await self.events.flush()
        except Exception:
            logger.warning("could not store the last events on close", exc_info=True)
        await self.tasks.close()
        await self.webhooks.close()
        try:
            await self.flush_key_usage()
        except Exception:
            logger.warning("could not store the keys' last use on close", exc_info=True)
        self.store.close()

    @property
    def unfinished(self) -> int:
        """Accepted workloads that have not finished (queued, running, or waiting to retry)."""
        return len(self._live)

    async def io(self, func: Callable[..., T], *args: Any) -> T:
        """Storage calls: inline for local disk (fast), on a thread for object stores, given
        up after `storage_timeout_s` (the call itself may still land later)."""
        if self.storage.is_local or not self.storage.shared_across_processes:
            return func(*args)
        deadline = self.settings.storage_timeout_s
        try:
            return await asyncio.wait_for(asyncio.to_thread(func, *args), deadline)
        except TimeoutError:
            raise StorageTimeout(f"no answer from storage within {deadline:g} s") from None

    async def io_unbounded(self, func: Callable[..., T], *args: Any) -> T:
        """`io` for the long calls of recovery and sweeps."""
        if self.storage.is_local or not self.storage.shared_across_processes:
            return func(*args)
        return await asyncio.to_thread(func, *args)

    async def _stored(self, func: Callable[..., T], *args: Any) -> T:
        """`io`, where a failure means to the client: nothing changed, retry later (503)."""
        try:
            return await self.io(func, *args)
        except Exception as exc:
            raise storage_unavailable(exc) from exc

    # APIs --------------------------------------------------------------------------------
    def api(self, name: str) -> APIState:
        found = self.apis.get(name)
        if found is None:
            raise NotFound(f"API {name!r} is not deployed")
        return found

    async def deploy(
        self,
        name: str,
        predictor_blob: bytes,
        config: dict[str, Any] | None,
        options: APIOptions,
    ) -> tuple[APIState, str]:
        async with self._specs:
            return await self._deploy(name, predictor_blob, config, options)

    async def _deploy(
        self,
        name: str,
        predictor_blob: bytes,
        config: dict[str, Any] | None,
        options: APIOptions,
    ) -> tuple[APIState, str]:
        existing = self.apis.get(name)
        if existing is not None:
            version = existing.version + 1
        else:
            stored = await self.io(self.storage.read_json, self.storage.spec_path(name))
            version = int(stored["version"]) + 1 if stored else 1
        secret = options.webhook_secret or (existing.webhook_secret if existing else None)
        secret = secret or generate_secret()
        blob = pickle.dumps((predictor_blob, config))
        created_at = existing.created_at if existing else None
        spec = APIState(name, version, options, config, secret, created_at).spec_record()
        await self._stored(
            self.storage.write_bytes, self.storage.predictor_path(name, version), blob
        )
        await self._stored(self.storage.write_json, self.storage.spec_path(name), spec)
        if existing is None:
            state = APIState(
                name, version, options, config, secret, queue_policy=self.settings.queue_policy
            )
            self.apis[name] = state
        else:
            state = existing
            state.version, state.options, state.config = version, options, config
            state.webhook_secret = secret
            state.updated_at = time.time()
            state.reset_autoscaler()
        state.state, state.error = APIPhase.DEPLOYING, None
        self.dispatcher.warm(state)
        return state, secret

    async def undeploy(self, name: str) -> None:
        async with self._specs:
            state = self.api(name)
            # The spec goes first: if it cannot, nothing changed and the API keeps serving.
            await self._stored(self.storage.delete_tree, self.storage.api_dir(name))
            self.apis.pop(name, None)
        # Every live workload of the API: queued, running, and waiting out a retry backoff.
        leftovers = [w for w in self._live.values() if w.api == name]
        state.queue.drain()
        try:
            await self.finish_many(state, [(w, Status.CANCELLED, None) for w in leftovers])
        except Exception as exc:
            # Their queue entries stay durable: a restart of the gateway cancels them for good.
            raise storage_unavailable(exc) from exc
        finally:
            for workload in leftovers:
                self.dispatcher.cancel_if_abandoned(workload)
        await self.io(self.store.drop_queue, name)

    async def reconfigure(self, name: str, changes: Mapping[str, Any]) -> APIState:
        """Change scaling options of a running API without a new version: validated as a
        deploy's are (`ValidationError`, or `ValueError` for an option that needs a deploy),
        persisted in its spec, then applied, with its autoscaler started again and its
        desired workers moved within the new bounds."""
        async with self._specs:
            state = self.api(name)
            options = state.options.with_scaling(changes)
            if options == state.options:
                return state
            spec = {**state.spec_record(), "options": options.model_dump()}
            await self._stored(self.storage.write_json, self.storage.spec_path(name), spec)
            now = time.time()
            before = state.desired_workers
            state.options = options
            state.updated_at = now
            state.reset_autoscaler()
            after = max(options.min_replicas, min(options.max_replicas, before))
            state.desired_workers = after
            if after != before:
                bounds = f"[{options.min_replicas}, {options.max_replicas}]"
                state.record_scaling(now, before, after, f"scaling bounds changed to {bounds}")
            return state

    # submit ------------------------------------------------------------------------------
    def new_id(self, api: str, idempotency_key: str | None, key_id: str | None = None) -> str:
        """A key's idempotency keys live in a namespace of their own: a caller who guesses
        another's Idempotency-Key must not be handed that caller's workload."""
        if idempotency_key:
            scoped = idempotency_key if key_id is None else f"key:{key_id}\x00{idempotency_key}"
            return idempotent_workload_id(api, scoped)
        return new_workload_id()

    async def replay(self, api: str, workload_id: str) -> WorkloadState | None:
        """The workload an idempotency key already created, if any."""
        pending = self._accepting.get(workload_id)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except Exception:
                return None  # that request failed; this one may take the id
        return await self.get(api, workload_id)

    def claim(self, workload_id: str) -> bool:
        """Reserve an id while its request is read; False when another request holds it."""
        if workload_id in self._accepting:
            return False
        self._accepting[workload_id] = asyncio.get_running_loop().create_future()
        return True

    def release(self, workload_id: str, exc: BaseException) -> None:
        """Give up a claim whose request failed; waiting replays then go on without it."""
        claim = self._accepting.pop(workload_id, None)
        if claim is not None and not claim.done():
            claim.set_exception(exc if isinstance(exc, Exception) else Unavailable(str(exc)))
            claim.exception()  # retrieved here, so a claim nobody waited for logs nothing

    async def accept(self, state: APIState, workload: WorkloadState) -> WorkloadState:
        """Persist the queue entry, then queue it. Only after this may the gateway say 202."""
        if workload.id not in self._accepting and not self.claim(workload.id):
            return await self.replay(state.name, workload.id) or workload
        if self._commits is not None and workload.payload_stored:
            # --durability fsync: a streamed payload is on disk before its queue entry
            path = self.storage.payload_path(workload.api, workload.id)
            try:
                await asyncio.to_thread(fsync_file, path)
            except OSError as exc:
                raise storage_unavailable(exc) from exc
        await self._stored(self.store.accept, workload)
        workload.body = workload.body if not workload.payload_stored else None
        self._live[workload.id] = workload
        state.queue.push(workload)
        state.counts["submitted"] += 1
        self._count_submitted(state, [workload])
        self.dispatcher.wake()
        if self._commits is not None:
            # Queued first, so what runs matches the journal even if this request goes away.
            try:
                await self._commits.synced()  # the record is on disk before the 202
            except OSError as exc:
                raise storage_unavailable(exc) from exc
        claim = self._accepting.pop(workload.id)
        claim.set_result(workload)
        return workload

    def _count_submitted(self, state: APIState, workloads: Iterable[WorkloadState]) -> None:
        for workload in workloads:
            state.submitters.submitted(workload.submitted_by)
            if workload.key_id is not None:
                self._unfinished_by_key[workload.key_id] += 1

    # keys --------------------------------------------------------------------------------
    def unfinished_of_key(self, key_id: str) -> int:
        """Accepted workloads of the key that have not finished (its `max_queued` bound)."""
        return self._unfinished_by_key.get(key_id, 0)

    def admit(self, key_id: str, max_queued: int | None) -> bool:
        """Hold a place for a submit of the key while its body is read; False when its
        unfinished workloads (and submits in flight) reach `max_queued`. `admitted` ends it."""
        held = self._unfinished_by_key.get(key_id, 0) + self._admitting_by_key[key_id]
        if max_queued is not None and held >= max_queued:
            if not self._admitting_by_key[key_id]:
                del self._admitting_by_key[key_id]
            return False
        self._admitting_by_key[key_id] += 1
        return True

    def admitted(self, key_id: str | None) -> None:
        if key_id is None or key_id not in self._admitting_by_key:
            return
        self._admitting_by_key[key_id] -= 1
        if self._admitting_by_key[key_id] <= 0:
            del self._admitting_by_key[key_id]

    async def create_key(
        self,
        name: str,
        apis: Iterable[str],
        scopes: Iterable[Scope],
        *,
        expires_in_s: float | None = None,
        rate_limit: float | None = None,
        burst: int | None = None,
        max_queued: int | None = None,
    ) -> tuple[APIKey, str]:
        """A new key, stored (as a hash) before it is returned, with its text shown once."""
        key, text = self.keys.new(
            name,
            apis,
            scopes,
            expires_in_s=expires_in_s,
            rate_limit=rate_limit,
            burst=burst,
            max_queued=max_queued,
        )
        async with self._key_writes:
            await self._stored(self.keys.save, key)
        return key, text

    async def revoke_key(self, key_id: str) -> APIKey:
        async with self._key_writes:
            key = self.keys.revoked(key_id)
            if key is None:
                raise NotFound(f"no API key {key_id[:40]!r}")
            await self._stored(self.keys.save, key)
        return key

    async def flush_key_usage(self) -> int:
        async with self._key_writes:
            return await self.io_unbounded(self.keys.flush_usage)

    # lookup ------------------------------------------------------------------------------
    async def get(self, api: str, workload_id: str) -> WorkloadState | None:
        workload = self._live.get(workload_id) or self._finished.get(workload_id)
        if workload is None:
            record = await self._stored(self.store.final_record, api, workload_id)
            if record is None:
                return None
            workload = WorkloadState.from_final_record(record)
            self._finished.remember(workload)
        if workload.api != api:
            return None
        if workload.expires_at is not None and workload.expires_at < time.time():
            self._finished.pop(workload_id)
            self.tasks.spawn(
                self.io(self.storage.delete_tree, self.storage.workload_dir(api, workload_id))
            )
            return None
        return workload

    def peek(self, api: str, workload_id: str) -> WorkloadState | None:
        """A workload held in memory and not expired, without touching storage."""
        workload = self._live.get(workload_id) or self._finished.get(workload_id)
        if workload is None or workload.api != api:
            return None
        if workload.expires_at is not None and workload.expires_at < time.time():
            return None
        return workload

    async def wait(self, workload: WorkloadState, timeout: float) -> None:
        if workload.status.finished or timeout <= 0:
            return
        if workload.done is None:
            workload.done = asyncio.Event()
        try:
            await asyncio.wait_for(workload.done.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def recent(
        self,
        api: str,
        status: Status | None,
        limit: int,
        submitted_by: str | None = None,
    ) -> list[WorkloadState]:
        """Newest first, from memory: live workloads, then finished ones still cached.

        Both dicts keep arrival order (finish order for the cache), so walking each from its
        end and stopping after `limit` matches stays cheap with 100k workloads queued.
        """
        found: list[WorkloadState] = []
        for source in (self._live, self._finished):
            taken = 0
            for workload_id in reversed(source):
                workload = source[workload_id]
                if (
                    workload.api == api
                    and (status is None or workload.status is status)
                    and (submitted_by is None or workload.submitted_by == submitted_by)
                ):
                    found.append(workload)
                    taken += 1
                    if taken == limit:
                        break
        found.sort(key=lambda w: w.created_at, reverse=True)
        return found[:limit]

    # cancel ------------------------------------------------------------------------------
    async def cancel(self, api: str, workload_id: str) -> WorkloadState:
        workload = await self.get(api, workload_id)
        if workload is None:
            raise NotFound(f"workload {workload_id} of API {api!r} not found")
        if workload.status.finished:
            raise Conflict(f"workload {workload_id} already {workload.status.value}")
        state = self.apis.get(api)
        if state is None:
            raise NotFound(f"API {api!r} is not deployed")
        queued = workload.queued
        if queued:
            state.queue.discard(workload)
        try:
            await self.finish_many(state, [(workload, Status.CANCELLED, None)])
        except Exception as exc:
            if queued:
                state.queue.restore(workload)
            raise storage_unavailable(exc) from exc
        self.dispatcher.cancel_if_abandoned(workload)
        return workload

    # finishing ---------------------------------------------------------------------------
    async def finish_many(self, state: APIState, endings: list[Ending]) -> None:
        """Persist final records, then make them visible: GET never shows an unpersisted end."""
        now = time.time()
        webhook_default = state.options.webhook_url
        writes: list[tuple[WorkloadState, Status, dict[str, Any], str | None]] = []
        before = {w.id: (w.finished_at, w.error, w.expires_at, w.webhook) for w, _, _ in endings}
        for workload, status, error in endings:
            if workload.status.finished:
                continue
            workload.finished_at = (
                now if status is Status.CANCELLED else (workload.finished_at or now)
            )
            workload.error = error
            workload.expires_at = now + state.options.result_ttl
            url = workload.webhook_url or webhook_default
            if url and status.value not in chosen_events(workload, state.options.webhook_events):
                url = None  # its webhook asked for other events only
            if url:
                workload.webhook = {"url": url, "status": "pending", "attempts": 0}
            writes.append((workload, status, workload.final_record(status), url))
        if not writes:
            return
        try:
            # No deadline: a write given up on could still land after its workloads requeue,
            # and their rerun could then end differently than what storage already holds.
            await self.io_unbounded(
                self.store.finish, state.name, [(w, record, url) for w, _, record, url in writes]
            )
            if self._commits is not None:
                await self._commits.synced()
        except Exception:
            logger.exception("could not persist %d final records of %s", len(writes), state.name)
            for workload, _, _, _ in writes:
                (workload.finished_at, workload.error, workload.expires_at, workload.webhook) = (
                    before[workload.id]
                )
            raise
        for workload, status, _, url in writes:
            workload.status = status
            workload.body = None
            workload.retry_at = None
            state.counts[status.value] += 1
            state.submitters.finished(workload.submitted_by, status)
            if workload.key_id is not None:
                self._unfinished_by_key[workload.key_id] -= 1
                if self._unfinished_by_key[workload.key_id] <= 0:
                    del self._unfinished_by_key[workload.key_id]
            state.running.pop(workload.id, None)
            self._live.pop(workload.id, None)
            self._finished.remember(workload)
            latency = (workload.finished_at or now) - workload.created_at
            self.metrics.end_to_end.labels(state.name, status.value).observe(latency)
            if status is not Status.CANCELLED:
                state.finishes.record(now, latency, failed=status is Status.FAILED)
            self.events.finished(workload, status)
            self.copies.finished(workload)
            if workload.done is not None:
                workload.done.set()
            if url:
                self.tasks.spawn(self._deliver(state, workload, url))

    # webhooks ----------------------------------------------------------------------------
    def _webhook_destination(self, workload: WorkloadState) -> tuple[str, str] | None:
        state = self.apis.get(workload.api)
        if state is None:
            return None
        url = workload.webhook_url or state.options.webhook_url
        return (url, state.webhook_secret) if url else None

    def _api_webhook_events(self, workload: WorkloadState) -> list[str] | None:
        state = self.apis.get(workload.api)
        return state.options.webhook_events if state is not None else None

    async def _deliver(self, state: APIState, workload: WorkloadState, url: str) -> None:
        await self.event_webhooks.drain(workload)  # the streamed events go first
        body = await webhook_body(workload, workload.webhook_event())
        outcome = await self.webhooks.deliver(url, state.webhook_secret, f"msg_{workload.id}", body)
        workload.webhook = outcome.public(url)
        try:
            await self.io(
                self.store.record_webhook,
                workload.api,
                workload.id,
                workload.final_record(workload.status),
            )
        except Exception:
            logger.exception("could not record the webhook outcome of %s", workload.id)

    # recovery and expiry -----------------------------------------------------------------
    async def _recover(self) -> None:
        """Bring back deployed APIs and every accepted, unfinished workload after a restart."""
        for name in await self.io_unbounded(self.storage.list_names, self.storage.apis_dir()):
            spec = await self.io(self.storage.read_json, self.storage.spec_path(name))
            if not spec:
                continue
            options = APIOptions.model_validate(spec["options"])
            state = APIState(
                name,
                int(spec["version"]),
                options,
                spec.get("config"),
                spec["webhook_secret"],
                spec.get("created_at"),
                queue_policy=self.settings.queue_policy,
            )
            self.apis[name] = state
            recovered = await self.io_unbounded(self.store.pending, name)
            self.events.recovered(w.id for w in recovered)
            for workload in sorted(recovered, key=lambda w: w.created_at):
                self._live[workload.id] = workload
                state.queue.push(workload)
            state.counts["submitted"] += len(recovered)
            self._count_submitted(state, recovered)
            if recovered:
                logger.info("recovered %d queued workloads of %s", len(recovered), name)
            await self._recover_outbox(state)
            self.dispatcher.warm(state)

    async def _recover_outbox(self, state: APIState) -> None:
        for workload_id, url in await self.io_unbounded(self.store.owed_webhooks, state.name):
            workload = await self.get(state.name, workload_id)
            # An outbox entry of an unfinished workload is left from a crash just before its
            # final record was written; finishing it will owe the webhook again.
            if workload is not None and workload.status.finished:
                self.tasks.spawn(self._deliver(state, workload, url))

    async def _sweep_forever(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep_expired()
            except Exception:
                logger.exception("expiry sweep failed")

    async def _flush_key_usage_forever(self, interval_s: float = 60.0) -> None:
        """`GET /keys` shows last use from memory; storage has it within a minute (and on a
        clean stop), for the next gateway."""
        while not self._closed:
            await asyncio.sleep(interval_s)
            try:
                await self.flush_key_usage()
            except Exception:
                logger.warning("could not store the keys' last use", exc_info=True)

    async def sweep_expired(self) -> int:
        """Delete finished workloads past their result_ttl; returns how many records went."""

        def ttl_of(api: str) -> float:
            state = self.apis.get(api)
            return state.options.result_ttl if state else APIOptions().result_ttl

        self._finished.expire(time.time())
        removed = await self.io_unbounded(self.store.sweep)
        # Listing per-workload folders can take long: off the event loop, whatever the storage.
        live = set(self._live)
        return removed + await asyncio.to_thread(sweep_workload_folders, self.storage, ttl_of, live)
