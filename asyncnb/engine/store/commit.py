"""Group commit for the journal (`--durability fsync`): one fsync covers every write before it.

The journal writes on the event loop as in `buffered` mode (one `os.write`, microseconds) and
tells the committer which file it wrote (`wrote`). The committer thread fsyncs the files
written since its last round (and the folders that got a new segment file), then wakes every
coroutine waiting on a write it covered (`synced`). While one fsync runs, the next writes
pile up and share the next one, so 64 concurrent submits cost a handful of fsyncs, not 64.

After an fsync fails the page cache can no longer be trusted to hold what was written (the
kernel may have dropped the dirty pages), so every later `synced` raises: the gateway answers
`503` until it is restarted and replays the journal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def fsync_folder(folder: str) -> None:
    """Make a new file's name durable: fsync the folder that holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str, folders: int = 3) -> None:
    """A file written beside the journal (a streamed payload) and the folders above it that a
    write may have just created, fsynced: its bytes and its name survive power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    folder = os.path.dirname(path)
    for _ in range(folders):
        fsync_folder(folder)
        folder = os.path.dirname(folder)


class GroupCommit:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._written = 0  # writes noted so far; a write's ticket is the count after it
        self._synced = 0  # every write up to this ticket is on disk
        self._files: dict[int, None] = {}  # fds written since the last round, in order
        self._folders: dict[str, None] = {}  # folders with a new entry since the last round
        self._retired: list[int] = []  # fds to close once a round has synced them
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._error: OSError | None = None
        self._closed = False
        self.fsyncs = 0  # rounds, each covering every write before it
        # called with each round's seconds, from the committer thread (the gateway's metrics)
        self.observe: Callable[[float], None] | None = None
        self._thread = threading.Thread(target=self._run, name="asyncnb-journal-fsync", daemon=True)
        self._thread.start()

    # the journal's side (event loop) ------------------------------------------------------
    def wrote(self, fd: int) -> None:
        with self._cond:
            self._written += 1
            self._files[fd] = None
            self._cond.notify()

    def created(self, folder: str) -> None:
        """A new file in `folder`: the next round fsyncs the folder too."""
        with self._cond:
            self._folders[folder] = None

    def retire(self, fd: int) -> None:
        """A writer the journal is done with: closed once what was written to it is synced."""
        with self._cond:
            self._retired.append(fd)
            self._cond.notify()

    async def synced(self) -> None:
        """Until every write noted so far is on disk."""
        with self._cond:
            if self._error is not None:
                raise OSError(f"the journal could not fsync: {self._error}") from self._error
            ticket = self._written
            if self._synced >= ticket:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append((ticket, waiter))
        await waiter

    def close(self) -> None:
        """Sync what is left, close the retired writers and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # the committer thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and self._synced == self._written and not self._retired:
                    self._cond.wait()
                if self._closed and self._synced == self._written and not self._retired:
                    return
                target = self._written
                files, self._files = list(self._files), {}
                folders, self._folders = list(self._folders), {}
                retired, self._retired = self._retired, []
            started = time.perf_counter()
            error: OSError | None = None
            if files or folders:
                try:
                    for fd in files:
                        os.fsync(fd)
                    for folder in folders:
                        fsync_folder(folder)
                except OSError as exc:
                    logger.error("journal fsync failed: %s; refusing work until a restart", exc)
                    error = exc
                self.fsyncs += 1
                if self.observe is not None:
                    try:
                        self.observe(time.perf_counter() - started)
                    except Exception:  # a metric must never stop the commits
                        logger.exception("could not record a journal fsync")
            for fd in retired:
                os.close(fd)
            with self._cond:
                self._synced = target
                if error is not None and self._error is None:
                    self._error = error
                failure = self._error
                ready = [waiter for ticket, waiter in self._waiters if ticket <= target]
                self._waiters = [(t, w) for t, w in self._waiters if t > target]
            _settle(ready, failure)


def _settle(waiters: list[asyncio.Future[None]], error: OSError | None) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for waiter in waiters:
        by_loop.setdefault(waiter.get_loop(), []).append(waiter)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_wake, group, error)
        except RuntimeError:  # the loop closed: nobody waits any more
            pass


def _wake(waiters: list[asyncio.Future[None]], error: OSError | None) -> None:
    for waiter in waiters:
        if waiter.done():  # its request was cancelled
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(OSError(f"the journal could not fsync: {error}"))
