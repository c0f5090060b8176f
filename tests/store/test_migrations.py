"""Schemas are created at open, recorded with a version, and a newer schema is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from algoroom.store import open_store
from algoroom.store.migrations import POSTGRES_VERSION, REDIS_VERSION, SQLITE_VERSION, SchemaTooNew

pytestmark = pytest.mark.asyncio


async def _version(url: str) -> int:
    store = open_store(url)
    async with store:
        if url.startswith("sqlite"):
            return await store._read(lambda conn: conn.execute("SELECT version FROM schema_version").fetchone()[0])
        if url.startswith("postgresql"):
            return await store.pool.fetchval("SELECT version FROM schema_version")
        return int(await store.client.get(f"{store.prefix}schema_version"))


async def _set_version(url: str, version: int) -> None:
    store = open_store(url)
    async with store:
        if url.startswith("sqlite"):
            await store._write(lambda conn: conn.execute("UPDATE schema_version SET version = ?", (version,)))
        elif url.startswith("postgresql"):
            await store.pool.execute("UPDATE schema_version SET version = $1", version)
        else:
            await store.client.set(f"{store.prefix}schema_version", version)


async def test_open_creates_the_current_schema_once(durable_store_url: str) -> None:
    expected = {"sqlite": SQLITE_VERSION, "postgresql": POSTGRES_VERSION, "redis": REDIS_VERSION}
    assert await _version(durable_store_url) == expected[durable_store_url.split(":")[0]]
    assert await _version(durable_store_url) == expected[durable_store_url.split(":")[0]]


async def test_a_schema_newer_than_the_code_is_refused(durable_store_url: str) -> None:
    await _set_version(durable_store_url, 999)
    store = open_store(durable_store_url)
    with pytest.raises(SchemaTooNew, match="version 999"):
        await store.open()
    await store.close()


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "a.db"  # parents are created
    async with open_store(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
