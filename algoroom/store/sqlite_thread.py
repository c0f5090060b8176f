"""The SQLite store's worker thread: one connection, a job queue, group commit.

Why a module of its own: it is the part of the SQLite store that knows nothing about
sessions. It runs plain functions ``fn(conn, *args)`` on its own thread and resolves the
caller's asyncio future on the caller's loop. A writer thread runs everything that queued up
while it was busy in one ``BEGIN IMMEDIATE ... COMMIT`` (group commit, see
``algoroom.store.sqlite``), each job in its own savepoint; a reader thread just runs them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

#: Upper bound on one group commit: keeps the write lock (and the latency of the first job
#: in the batch) bounded under a flood.
MAX_BATCH = 256


class Job:
    __slots__ = ("fn", "args", "future", "loop")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.loop = loop


def _settle(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the event loop: resolve the futures of one batch (one loop wake-up per batch)."""
    for future, ok, value in results:
        if future.done():  # the caller was cancelled; the job ran anyway
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SQLiteThread(threading.Thread):
    """Owns one connection; runs jobs from its queue, batched, in one transaction if ``writer``."""

    def __init__(self, name: str, path: str, *, writer: bool, synchronous: str, busy_timeout_ms: int) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: SimpleQueue[Job | None] = SimpleQueue()
        self._path = path
        self._writer = writer
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, timeout=self._busy_timeout_ms / 1000, cached_statements=64
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if self._writer:
                self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL (persistent), retrying while another process does the same.

        Changing the journal mode of a new file can answer "database is locked" at once,
        without the busy handler, when two connections race to do it.
        """
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        delay = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)  # on this store's own thread, never the event loop
                delay = min(delay * 2, 0.05)
        if mode.lower() != "wal":
            raise sqlite3.OperationalError(f"could not enable WAL mode on {self._path} (got {mode})")

    def run(self) -> None:
        try:
            conn: sqlite3.Connection | None = self._connect()
            failure: BaseException | None = None
        except Exception as exc:  # reported to every job, starting with open()'s migration
            conn, failure = None, exc
        try:
            while True:
                job = self.jobs.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < MAX_BATCH and not self.jobs.empty():
                    more = self.jobs.get_nowait()
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                if conn is None:
                    self._deliver([(job, False, failure) for job in batch])
                else:
                    self._deliver(self._execute(conn, batch))
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _execute(self, conn: sqlite3.Connection, batch: list[Job]) -> list[tuple[Job, bool, Any]]:
        if not self._writer:
            return self._run_plain(conn, batch)
        # Jobs that manage their own transaction (the migration) run alone, first.
        plain = [job for job in batch if not getattr(job.fn, "transactional", True)]
        results = self._run_plain(conn, plain) if plain else []
        batch = [job for job in batch if getattr(job.fn, "transactional", True)] if plain else batch
        if not batch:
            return results
        done: list[tuple[Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                # A savepoint per job: a job that fails (unknown id, stale revision, or a bug)
                # leaves no half-write behind, and the rest of the batch still commits.
                conn.execute("SAVEPOINT job")
                try:
                    done.append((job, True, job.fn(conn, *job.args)))
                except sqlite3.Error:
                    raise
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    done.append((job, False, exc))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except Exception as exc:  # nothing of this batch is committed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return results + [(job, False, exc) for job in batch]
        return results + done

    @staticmethod
    def _run_plain(conn: sqlite3.Connection, batch: list[Job]) -> list[tuple[Job, bool, Any]]:
        results = []
        for job in batch:
            try:
                results.append((job, True, job.fn(conn, *job.args)))
            except Exception as exc:
                results.append((job, False, exc))
        return results

    @staticmethod
    def _deliver(results: list[tuple[Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def own_transaction(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a job that manages its own transaction (a migration): it runs outside any batch."""
    fn.transactional = False  # type: ignore[attr-defined]
    return fn
