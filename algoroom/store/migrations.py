"""Versioned schemas, applied automatically when a store opens.

Why in one module: the three persistent backends evolve together, and reading their
schemas side by side is how a reviewer checks they still mean the same thing.

Each backend records the version it is at (a one-row ``schema_version`` table, or a
``schema_version`` key in Redis). Opening a store applies, in order and under a lock
(``BEGIN IMMEDIATE`` / an advisory lock / a lock key), every step above that version, so
several processes starting at once migrate exactly once. A database at a version newer than
this code knows is refused rather than written to with an outdated idea of its shape.

To change a schema, append a step; never edit a released one.

Timestamps: SQLite and Redis hold microseconds since the Unix epoch (UTC) as integers
(exact, sortable); PostgreSQL uses ``timestamptz``. ``active_at`` is the later of the last
change and the last ``touch``, the one column idle expiry looks at. PostgreSQL stores code
as UTF-8 ``bytea`` because its ``text`` cannot hold NUL, which a code buffer may contain.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from typing import Any

SQLITE_STEPS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            code TEXT NOT NULL,
            language TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            revision INTEGER NOT NULL,
            active_at INTEGER NOT NULL
        );
        CREATE INDEX sessions_active_at ON sessions (active_at);
        -- Separate so that a code update does not rewrite a large document blob.
        CREATE TABLE documents (
            session_id TEXT PRIMARY KEY,
            state BLOB NOT NULL
        );
        """,
    ),
)

POSTGRES_STEPS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE sessions (
            id text PRIMARY KEY,
            code bytea NOT NULL,
            language text NOT NULL,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            revision bigint NOT NULL,
            active_at timestamptz NOT NULL
        );
        CREATE INDEX sessions_active_at ON sessions (active_at);
        CREATE TABLE documents (
            session_id text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
            state bytea NOT NULL
        );
        """,
    ),
)

#: Redis has no DDL; version 1 is the key layout documented in ``algoroom.store.redis``.
#: A later layout change appends an ``async def step(client, prefix)`` here.
REDIS_STEPS: tuple[tuple[int, Any], ...] = ((1, None),)

SQLITE_VERSION = SQLITE_STEPS[-1][0]
POSTGRES_VERSION = POSTGRES_STEPS[-1][0]
REDIS_VERSION = REDIS_STEPS[-1][0]

#: Arbitrary constant key for ``pg_advisory_xact_lock`` ("algoroom" in ASCII, truncated).
_PG_LOCK_KEY = 0x616C676F726F6F


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer algoroom; refuse to touch it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"database schema is at version {found} but this algoroom only knows up to {known}: "
            "upgrade algoroom (or point it at another database)"
        )


def _check(found: int, known: int) -> None:
    if found > known:
        raise SchemaTooNew(found, known)


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Bring the database to :data:`SQLITE_VERSION` (blocking: run it in the store thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = row[0] if row else 0
        _check(version, SQLITE_VERSION)
        for step, script in SQLITE_STEPS:
            if step > version:
                # executescript() would COMMIT first; split the script instead.
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("UPDATE schema_version SET version = ?", (step,))
                version = step
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version


async def migrate_postgres(conn: Any) -> int:
    """Bring the database to :data:`POSTGRES_VERSION` (``conn`` is an asyncpg connection)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_LOCK_KEY)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = 0
        _check(version, POSTGRES_VERSION)
        for step, script in POSTGRES_STEPS:
            if step > version:
                await conn.execute(script)
                await conn.execute("UPDATE schema_version SET version = $1", step)
                version = step
    return version


async def migrate_redis(client: Any, prefix: str, *, lock_timeout: float = 30.0) -> int:
    """Bring the key layout under ``prefix`` to :data:`REDIS_VERSION`."""
    version_key = f"{prefix}schema_version"
    raw = await client.get(version_key)
    version = int(raw) if raw is not None else 0
    _check(version, REDIS_VERSION)
    if version == REDIS_VERSION:
        return version
    lock_key, token = f"{prefix}migration_lock", uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    deadline = loop.time() + lock_timeout
    delay = 0.01
    while not await client.set(lock_key, token, nx=True, px=int(lock_timeout * 1000)):
        if loop.time() > deadline:
            raise TimeoutError(f"another process holds {lock_key} (migrating?)")
        await asyncio.sleep(delay)  # polling a lock key: there is nothing to wait on
        delay = min(delay * 2, 0.5)
    try:
        raw = await client.get(version_key)
        version = int(raw) if raw is not None else 0
        _check(version, REDIS_VERSION)
        for step, migrate in REDIS_STEPS:
            if step > version:
                if migrate is not None:
                    await migrate(client, prefix)
                await client.set(version_key, step)
                version = step
    finally:
        if await client.get(lock_key) == token.encode():
            await client.delete(lock_key)
    return version
