"""Fixtures for the store tests: one ``store`` per backend, each test isolated.

Isolation without restarting servers: SQLite gets a file in ``tmp_path``; PostgreSQL a fresh
schema per test (``?search_path=...``, dropped afterwards); Redis a fresh key prefix
(``?prefix=...``, its keys deleted afterwards). So a server given through
``ALGOROOM_TEST_*_URL`` keeps whatever else it holds.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from algoroom.store import SessionStore, open_store
from tests.servers import postgres_url, redis_url  # noqa: F401  (session-scoped fixtures)

BACKENDS = ("memory", "sqlite", "postgresql", "redis")
DURABLE_BACKENDS = ("sqlite", "postgresql", "redis")


def _with_query(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


@contextlib.asynccontextmanager
async def isolated_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL for ``backend`` that no other test shares; cleaned up afterwards."""
    tag = f"t{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    elif backend == "postgresql":
        import asyncpg

        base = request.getfixturevalue("postgres_url")
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f"CREATE SCHEMA {tag}")
            try:
                yield _with_query(base, "search_path", tag)
            finally:
                await conn.execute(f"DROP SCHEMA {tag} CASCADE")
        finally:
            await conn.close()
    elif backend == "redis":
        import redis.asyncio as aioredis

        base = request.getfixturevalue("redis_url")
        prefix = f"{tag}:"
        try:
            yield _with_query(base, "prefix", prefix)
        finally:
            client = aioredis.from_url(base)
            try:
                keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
    else:
        raise AssertionError(backend)


@pytest_asyncio.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with isolated_url(request.param, request, tmp_path) as url:
        yield url


@pytest_asyncio.fixture(params=DURABLE_BACKENDS)
async def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with isolated_url(request.param, request, tmp_path) as url:
        yield url


@pytest_asyncio.fixture
async def store(store_url: str) -> AsyncIterator[SessionStore]:
    async with open_store(store_url) as opened:
        yield opened
