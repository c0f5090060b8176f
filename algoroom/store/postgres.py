"""``postgresql://``: sessions in PostgreSQL through an asyncpg connection pool.

Why single statements: every write is one SQL statement (``UPDATE ... RETURNING``, a
data-modifying CTE for ``save_document``), so it is atomic under any number of writer
processes without explicit locks, costs one round trip, and is committed (with the server's
default ``synchronous_commit = on``, flushed to the WAL) when it returns. PostgreSQL
batches the WAL flushes of concurrent commits itself, so there is no group commit here.

URL: any asyncpg DSN (``postgresql://user:password@host:port/db``, ``?sslmode=...``,
``?host=/run/postgresql`` for a socket); extra query options read by this module:
``pool_min_size`` (default 1), ``pool_max_size`` (default 10) and
``statement_cache_size`` (default 100; set 0 behind PgBouncer in transaction mode).
Other unknown query options are passed to the server as settings (asyncpg's rule).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from algoroom.errors import RevisionConflict, SessionNotFound
from algoroom.sessions import Session, utcnow
from algoroom.store.base import (
    SessionAlreadyExists,
    SessionStore,
    as_utc,
    check_new_session,
    check_text,
    redact_url,
    storable_id,
)
from algoroom.store.migrations import migrate_postgres

_OPTIONS = {"pool_min_size": 1, "pool_max_size": 10, "statement_cache_size": 100}

_GET = "SELECT code, language, created_at, updated_at, revision FROM sessions WHERE id = $1"
_UPDATE_CODE = """
UPDATE sessions
SET code = $2, language = COALESCE($3, language), updated_at = $4,
    revision = revision + 1, active_at = GREATEST(active_at, $4)
WHERE id = $1 AND ($5::bigint IS NULL OR revision = $5)
RETURNING revision, language, created_at
"""
# SET expressions see the row as it was, so "code = $2" compares with the old code.
_SAVE_DOCUMENT = """
WITH updated AS (
    UPDATE sessions
    SET revision = CASE WHEN code = $2 THEN revision ELSE revision + 1 END,
        updated_at = CASE WHEN code = $2 THEN updated_at ELSE $3 END,
        code = $2,
        active_at = GREATEST(active_at, $3)
    WHERE id = $1 AND ($5::bigint IS NULL OR revision = $5)
    RETURNING language, created_at, updated_at, revision
), saved AS (
    INSERT INTO documents (session_id, state) SELECT $1, $4 FROM updated
    ON CONFLICT (session_id) DO UPDATE SET state = EXCLUDED.state
)
SELECT language, created_at, updated_at, revision FROM updated
"""


_T = TypeVar("_T")


def _tracked(method: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    """Count calls in progress so that ``close()`` can let them finish.

    asyncpg's ``Pool.close()`` can break a query that is still running (its commit may land
    while the caller sees an error); a graceful shutdown should not do that.
    """

    @functools.wraps(method)
    async def tracked(self: PostgresStore, *args: Any, **kwargs: Any) -> _T:
        if self._pool is None or self._closing:
            raise RuntimeError(f"{self!r} is not open")
        self._busy += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    return tracked


def _split_options(url: str) -> tuple[str, dict[str, int]]:
    """The DSN for asyncpg, and this module's own options taken out of its query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = dict(_OPTIONS)
    rest = []
    for key, value in query:
        if key in options:
            try:
                options[key] = int(value)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {value!r}") from None
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), options


class PostgresStore(SessionStore):
    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        self._dsn, self._options = _split_options(url)
        self._pool: asyncpg.Pool | None = None
        self._closing = False
        self._busy = 0
        self._idle = asyncio.Event()

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._options["pool_min_size"],
            max_size=self._options["pool_max_size"],
            statement_cache_size=self._options["statement_cache_size"],
        )
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self, drain_timeout: float = 10.0) -> None:
        if self._pool is None or self._closing:
            return
        self._closing = True
        try:
            if self._busy:
                self._idle.clear()
                try:
                    await asyncio.wait_for(self._idle.wait(), drain_timeout)
                except asyncio.TimeoutError:
                    pass  # close anyway; the stragglers get connection errors
            await self._pool.close()
        finally:
            self._pool, self._closing = None, False

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._pool

    @_tracked
    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    @_tracked
    async def create(self, session: Session) -> None:
        check_new_session(session)
        try:
            await self.pool.execute(
                "INSERT INTO sessions (id, code, language, created_at, updated_at, revision, active_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $5)",
                session.id,
                session.code.encode(),
                session.language,
                as_utc(session.created_at),
                as_utc(session.updated_at),
                session.revision,
            )
        except asyncpg.UniqueViolationError:
            raise SessionAlreadyExists(session.id) from None

    @_tracked
    async def get(self, session_id: str) -> Session | None:
        if not storable_id(session_id):
            return None
        row = await self.pool.fetchrow(_GET, session_id)
        if row is None:
            return None
        code, language, created_at, updated_at, revision = row
        return Session(session_id, code.decode(), language, created_at, updated_at, revision)

    @_tracked
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
        encoded = code.encode()
        while True:
            row = await self.pool.fetchrow(_UPDATE_CODE, session_id, encoded, language or None, now, expected_revision)
            if row is not None:
                revision, language, created_at = row
                return Session(session_id, code, language, created_at, now, revision)
            await self._explain_miss(session_id, expected_revision)

    @_tracked
    async def delete(self, session_id: str) -> bool:
        if not storable_id(session_id):
            return False
        status = await self.pool.execute("DELETE FROM sessions WHERE id = $1", session_id)
        return status != "DELETE 0"

    @_tracked
    async def touch(self, session_id: str, now: datetime) -> None:
        now = as_utc(now)
        if storable_id(session_id):
            await self.pool.execute(
                "UPDATE sessions SET active_at = $2 WHERE id = $1 AND active_at < $2", session_id, now
            )

    @_tracked
    async def delete_idle(self, idle_before: datetime, keep: Collection[str] = ()) -> list[str]:
        rows = await self.pool.fetch(
            "DELETE FROM sessions WHERE active_at < $1 AND id <> ALL($2::text[]) RETURNING id",
            as_utc(idle_before),
            [session_id for session_id in keep if storable_id(session_id)],
        )
        return [row[0] for row in rows]

    @_tracked
    async def load_document(self, session_id: str) -> bytes | None:
        if not storable_id(session_id):
            return None
        return await self.pool.fetchval("SELECT state FROM documents WHERE session_id = $1", session_id)

    @_tracked
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
        encoded, state = code.encode(), bytes(state)
        while True:
            row: Any = await self.pool.fetchrow(_SAVE_DOCUMENT, session_id, encoded, now, state, expected_revision)
            if row is not None:
                language, created_at, updated_at, revision = row
                return Session(session_id, code, language, created_at, updated_at, revision)
            if expected_revision is None:
                raise SessionNotFound(session_id)
            await self._explain_miss(session_id, expected_revision)

    async def _explain_miss(self, session_id: str, expected_revision: int | None) -> None:
        """A guarded write changed nothing: raise why (unknown id, stale revision), or return
        if the session appeared or reached the expected revision in between (write again)."""
        current = await self.pool.fetchval("SELECT revision FROM sessions WHERE id = $1", session_id)
        if current is None:
            raise SessionNotFound(session_id)
        if expected_revision is not None and current != expected_revision:
            raise RevisionConflict(session_id, expected_revision, current)
