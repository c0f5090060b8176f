"""``sqlite:///PATH``: the default store, one file, no server, WAL mode.

Why threads: sqlite3 calls block (disk I/O, fsync, waiting on another process's lock), and
the event loop must never block. All work runs on two dedicated threads with their own
connections: a writer and a reader (WAL lets readers proceed while a write commits, so a
``GET`` never queues behind an fsync).

Why group commit: a commit costs an fsync, which would cap a one-write-per-transaction
design at the disk's fsync rate. The writer thread takes every job that queued up while the
previous commit ran and executes them all in one ``BEGIN IMMEDIATE ... COMMIT``. Each
caller's future is resolved only after that COMMIT returns, so "committed before the
response" still holds for every write, while the fsync is paid once per batch. A job that
fails with a domain error (unknown id, stale revision, duplicate id) has written nothing,
so the others in its batch commit normally; a database error fails the whole batch, none
of which is committed.

``BEGIN IMMEDIATE`` takes SQLite's write lock for the whole batch, so read-modify-write of
``revision`` is atomic against other processes too; they wait up to ``busy_timeout``.

URL: ``sqlite:///PATH`` where PATH is everything after the third slash (``sqlite:///a.db`` is
relative to the working directory, ``sqlite:////var/lib/algoroom/a.db`` absolute), optional
``?synchronous=full`` (default: each commit is fsynced, surviving power loss) or ``normal``
(survives a crashed or killed process, not a power cut; faster), and
``&busy_timeout=5000`` (milliseconds to wait for another process's write lock).
Missing parent directories are created.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from queue import SimpleQueue
from typing import Any
from urllib.parse import parse_qsl, unquote

from algoroom.errors import RevisionConflict, SessionNotFound
from algoroom.sessions import Session, utcnow
from algoroom.store.base import (
    SessionAlreadyExists,
    SessionStore,
    as_utc,
    check_new_session,
    check_text,
    from_micros,
    storable_id,
    to_micros,
)
from algoroom.store.migrations import migrate_sqlite

#: Upper bound on one group commit: keeps the write lock (and the latency of the first job
#: in the batch) bounded under a flood.
MAX_BATCH = 256
_SELECT_SESSION = "SELECT code, language, created_at, updated_at, revision FROM sessions WHERE id = ?"


class _Job:
    __slots__ = ("fn", "args", "future", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop) -> None:
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


class _Worker(threading.Thread):
    """Owns one connection; runs jobs from its queue, batched, in one transaction if ``writer``."""

    def __init__(self, name: str, path: str, *, writer: bool, synchronous: str, busy_timeout_ms: int) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: SimpleQueue[_Job | None] = SimpleQueue()
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
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise sqlite3.OperationalError(f"could not enable WAL mode on {self._path} (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

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

    def _execute(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        if not self._writer:
            return self._run_plain(conn, batch)
        # Jobs that manage their own transaction (the migration) run alone, first.
        plain = [job for job in batch if not getattr(job.fn, "transactional", True)]
        results = self._run_plain(conn, plain) if plain else []
        batch = [job for job in batch if getattr(job.fn, "transactional", True)] if plain else batch
        if not batch:
            return results
        done: list[tuple[_Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                try:
                    done.append((job, True, job.fn(conn, *job.args)))
                except sqlite3.Error:
                    raise
                except Exception as exc:  # a domain error: the job wrote nothing
                    done.append((job, False, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # nothing of this batch is committed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return results + [(job, False, exc) for job in batch]
        return results + done

    @staticmethod
    def _run_plain(conn: sqlite3.Connection, batch: list[_Job]) -> list[tuple[_Job, bool, Any]]:
        results = []
        for job in batch:
            try:
                results.append((job, True, job.fn(conn, *job.args)))
            except Exception as exc:
                results.append((job, False, exc))
        return results

    @staticmethod
    def _deliver(results: list[tuple[_Job, bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in results:
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _own_transaction(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn.transactional = False  # type: ignore[attr-defined]
    return fn


def parse_sqlite_url(url: str) -> tuple[str, str, int]:
    """``(path, synchronous, busy_timeout_ms)`` from a ``sqlite:///PATH?...`` URL."""
    if not url.lower().startswith("sqlite:///"):
        raise ValueError(f"SQLite URL must look like sqlite:///PATH, got {url!r}")
    rest, _, query = url[len("sqlite:///"):].partition("?")
    path = unquote(rest)
    if not path or path == ":memory:":
        raise ValueError(f"SQLite URL {url!r} names no file (use memory:// for a throwaway store)")
    options = dict(parse_qsl(query, keep_blank_values=True))
    synchronous = options.pop("synchronous", "full").upper()
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"synchronous must be full, normal or extra, got {synchronous.lower()!r}")
    try:
        busy_timeout_ms = int(options.pop("busy_timeout", "5000"))
    except ValueError:
        raise ValueError("busy_timeout must be an integer number of milliseconds") from None
    if options:
        raise ValueError(f"unknown SQLite URL option(s): {', '.join(sorted(options))}")
    return path, synchronous, busy_timeout_ms


class SQLiteStore(SessionStore):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path, self._synchronous, self._busy_timeout_ms = parse_sqlite_url(url)
        self._writer: _Worker | None = None
        self._reader: _Worker | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        options = dict(synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms)
        self._writer = _Worker(f"sqlite-writer {self.path}", self.path, writer=True, **options)
        self._writer.start()
        try:
            await self._write(_own_transaction(migrate_sqlite))
        except BaseException:
            await self.close()
            raise
        # The reader connects after the writer has switched the file to WAL.
        self._reader = _Worker(f"sqlite-reader {self.path}", self.path, writer=False, **options)
        self._reader.start()

    async def close(self) -> None:
        workers = [w for w in (self._writer, self._reader) if w is not None]
        self._writer = self._reader = None
        for worker in workers:
            worker.jobs.put(None)
        for worker in workers:
            await asyncio.to_thread(worker.join)

    def _submit(self, worker: _Worker | None, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if worker is None:
            raise RuntimeError(f"{self!r} is not open")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        worker.jobs.put(_Job(fn, args, future, loop))
        return future

    def _write(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return self._submit(self._writer, fn, *args)

    def _read(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return self._submit(self._reader, fn, *args)

    async def ping(self) -> None:
        await self._read(_ping)

    async def create(self, session: Session) -> None:
        check_new_session(session)
        await self._write(_create, session)

    async def get(self, session_id: str) -> Session | None:
        if not storable_id(session_id):
            return None
        return await self._read(_get, session_id)

    async def update_code(
        self,
        session_id: str,
        code: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
        now: datetime | None = None,
    ) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        check_text(code, "code")
        if language:
            check_text(language, "language")
        now = utcnow() if now is None else as_utc(now)
        return await self._write(_update_code, session_id, code, language or None, expected_revision, now)

    async def delete(self, session_id: str) -> bool:
        if not storable_id(session_id):
            return False
        return await self._write(_delete, session_id)

    async def touch(self, session_id: str, now: datetime) -> None:
        micros = to_micros(now)
        if storable_id(session_id):
            await self._write(_touch, session_id, micros)

    async def delete_idle(self, idle_before: datetime, keep: Collection[str] = ()) -> list[str]:
        return await self._write(_delete_idle, to_micros(idle_before), frozenset(keep))

    async def load_document(self, session_id: str) -> bytes | None:
        if not storable_id(session_id):
            return None
        return await self._read(_load_document, session_id)

    async def save_document(
        self, session_id: str, state: bytes, code: str, *, now: datetime | None = None
    ) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        check_text(code, "code")
        now = utcnow() if now is None else as_utc(now)
        return await self._write(_save_document, session_id, bytes(state), code, now)


# --- jobs: run on a worker thread, inside the batch transaction for writes ---------------


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


def _row_to_session(session_id: str, row: tuple[Any, ...]) -> Session:
    code, language, created_at, updated_at, revision = row
    return Session(session_id, code, language, from_micros(created_at), from_micros(updated_at), revision)


def _get(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
    return None if row is None else _row_to_session(session_id, row)


def _create(conn: sqlite3.Connection, session: Session) -> None:
    updated = to_micros(session.updated_at)
    try:
        conn.execute(
            "INSERT INTO sessions (id, code, language, created_at, updated_at, revision, active_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session.id, session.code, session.language, to_micros(session.created_at), updated, session.revision, updated),
        )
    except sqlite3.IntegrityError:
        raise SessionAlreadyExists(session.id) from None


def _update_code(
    conn: sqlite3.Connection, session_id: str, code: str, language: str | None, expected: int | None, now: datetime
) -> Session:
    row = conn.execute(
        "SELECT revision, language, created_at, active_at FROM sessions WHERE id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    revision, old_language, created_at, active_at = row
    if expected is not None and expected != revision:
        raise RevisionConflict(session_id, expected, revision)
    revision += 1
    language = language or old_language
    micros = to_micros(now)
    conn.execute(
        "UPDATE sessions SET code = ?, language = ?, updated_at = ?, revision = ?, active_at = ? WHERE id = ?",
        (code, language, micros, revision, max(active_at, micros), session_id),
    )
    return Session(session_id, code, language, from_micros(created_at), now, revision)


def _delete(conn: sqlite3.Connection, session_id: str) -> bool:
    conn.execute("DELETE FROM documents WHERE session_id = ?", (session_id,))
    return conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount > 0


def _touch(conn: sqlite3.Connection, session_id: str, micros: int) -> None:
    conn.execute("UPDATE sessions SET active_at = ? WHERE id = ? AND active_at < ?", (micros, session_id, micros))


def _delete_idle(conn: sqlite3.Connection, idle_before: int, keep: frozenset[str]) -> list[str]:
    rows = conn.execute("SELECT id FROM sessions WHERE active_at < ?", (idle_before,)).fetchall()
    idle = [session_id for (session_id,) in rows if session_id not in keep]
    for start in range(0, len(idle), 500):  # stay under SQLite's bound-parameter limit
        chunk = idle[start : start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM documents WHERE session_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM sessions WHERE id IN ({marks})", chunk)
    return idle


def _load_document(conn: sqlite3.Connection, session_id: str) -> bytes | None:
    row = conn.execute("SELECT state FROM documents WHERE session_id = ?", (session_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _save_document(conn: sqlite3.Connection, session_id: str, state: bytes, code: str, now: datetime) -> Session:
    row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    session = _row_to_session(session_id, row)
    micros = to_micros(now)
    if code != session.code:
        session = session.with_code(code, now=now)
        conn.execute(
            "UPDATE sessions SET code = ?, updated_at = ?, revision = ?, active_at = max(active_at, ?) WHERE id = ?",
            (code, micros, session.revision, micros, session_id),
        )
    else:
        conn.execute("UPDATE sessions SET active_at = ? WHERE id = ? AND active_at < ?", (micros, session_id, micros))
    conn.execute("INSERT OR REPLACE INTO documents (session_id, state) VALUES (?, ?)", (session_id, state))
    return session

