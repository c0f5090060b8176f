"""``sqlite:///PATH``: the default store, one file, no server, WAL mode.

Why threads: sqlite3 calls block (disk I/O, fsync, waiting on another process's lock), and
the event loop must never block. All work runs on two dedicated threads with their own
connections: a writer and a reader (WAL lets readers proceed while a write commits, so a
``GET`` never queues behind an fsync).

Why group commit: a commit costs an fsync, which would cap a one-write-per-transaction
design at the disk's fsync rate. The writer thread takes every job that queued up while the
previous commit ran and executes them all in one ``BEGIN IMMEDIATE ... COMMIT``. Each
caller's future is resolved only after that COMMIT returns, so "committed before the
response" still holds for every write, while the fsync is paid once per batch. Each job runs
in its own savepoint: one that fails (unknown id, stale revision, duplicate id) is rolled
back alone and the others commit normally; a database error (disk full, I/O) fails the
whole batch, none of which is committed.

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
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
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
from algoroom.store.sqlite_thread import Job, SQLiteThread, own_transaction

_SELECT_SESSION = "SELECT code, language, created_at, updated_at, revision FROM sessions WHERE id = ?"


def parse_sqlite_url(url: str) -> tuple[str, str, int]:
    """``(path, synchronous, busy_timeout_ms)`` from a ``sqlite:///PATH?...`` URL."""
    if not url.lower().startswith("sqlite:///"):
        raise ValueError(f"SQLite URL must look like sqlite:///PATH, got {url!r}")
    rest, _, query = url[len("sqlite:///") :].partition("?")
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
        self._writer: SQLiteThread | None = None
        self._reader: SQLiteThread | None = None

    async def open(self) -> None:
        if self._writer is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        options = dict(synchronous=self._synchronous, busy_timeout_ms=self._busy_timeout_ms)
        self._writer = SQLiteThread(f"sqlite-writer {self.path}", self.path, writer=True, **options)
        self._writer.start()
        try:
            await self._write(own_transaction(migrate_sqlite))
        except BaseException:
            await self.close()
            raise
        # The reader connects after the writer has switched the file to WAL.
        self._reader = SQLiteThread(f"sqlite-reader {self.path}", self.path, writer=False, **options)
        self._reader.start()

    async def close(self) -> None:
        workers = [w for w in (self._writer, self._reader) if w is not None]
        self._writer = self._reader = None
        for worker in workers:
            worker.jobs.put(None)
        for worker in workers:
            await asyncio.to_thread(worker.join)

    def _submit(self, worker: SQLiteThread | None, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        if worker is None:
            raise RuntimeError(f"{self!r} is not open")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        worker.jobs.put(Job(fn, args, future, loop))
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
        self,
        session_id: str,
        state: bytes,
        code: str,
        *,
        now: datetime | None = None,
        expected_revision: int | None = None,
    ) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        check_text(code, "code")
        now = utcnow() if now is None else as_utc(now)
        return await self._write(_save_document, session_id, bytes(state), code, expected_revision, now)


# --- jobs: run on a worker thread, inside the batch transaction for writes ---------------


def _one(conn: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> Any:
    """The first row, with the statement run to completion.

    ``fetchone()`` would leave the statement open, and with it the reader's snapshot: a later
    read on this connection could miss a commit (and the WAL could not be checkpointed).
    """
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


def _ping(conn: sqlite3.Connection) -> None:
    _one(conn, "SELECT 1", ())


def _row_to_session(session_id: str, row: tuple[Any, ...]) -> Session:
    code, language, created_at, updated_at, revision = row
    return Session(session_id, code, language, from_micros(created_at), from_micros(updated_at), revision)


def _get(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = _one(conn, _SELECT_SESSION, (session_id,))
    return None if row is None else _row_to_session(session_id, row)


def _create(conn: sqlite3.Connection, session: Session) -> None:
    updated = to_micros(session.updated_at)
    try:
        conn.execute(
            "INSERT INTO sessions (id, code, language, created_at, updated_at, revision, active_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                session.id,
                session.code,
                session.language,
                to_micros(session.created_at),
                updated,
                session.revision,
                updated,
            ),
        )
    except sqlite3.IntegrityError:
        raise SessionAlreadyExists(session.id) from None


def _update_code(
    conn: sqlite3.Connection, session_id: str, code: str, language: str | None, expected: int | None, now: datetime
) -> Session:
    row = _one(conn, "SELECT revision, language, created_at, active_at FROM sessions WHERE id = ?", (session_id,))
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
    row = _one(conn, "SELECT state FROM documents WHERE session_id = ?", (session_id,))
    return None if row is None else bytes(row[0])


def _save_document(
    conn: sqlite3.Connection, session_id: str, state: bytes, code: str, expected: int | None, now: datetime
) -> Session:
    row = _one(conn, _SELECT_SESSION, (session_id,))
    if row is None:
        raise SessionNotFound(session_id)
    session = _row_to_session(session_id, row)
    if expected is not None and expected != session.revision:
        raise RevisionConflict(session_id, expected, session.revision)
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
