"""SQLite specifics: the event loop never waits on the database, and group commit isolates jobs."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from algoroom.store import open_store
from algoroom.store.sqlite import SQLiteStore
from tests.store.test_contract import make_session

pytestmark = pytest.mark.asyncio


async def test_a_write_waiting_for_another_process_lock_does_not_block_the_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    async with open_store(url) as store:
        await store.create(make_session("s"))
        other = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            write = asyncio.create_task(store.update_code("s", "x"))
            started = time.monotonic()
            for _ in range(10):
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < 1.0  # the loop kept turning
            assert not write.done()
            other.execute("COMMIT")
        finally:
            other.close()
        assert (await asyncio.wait_for(write, 10)).revision == 1


async def test_a_failing_job_is_rolled_back_alone_within_its_batch(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}") as store:
        assert isinstance(store, SQLiteStore)
        await store.create(make_session("s"))

        def write_then_fail(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE sessions SET code = 'half-written' WHERE id = 's'")
            raise RuntimeError("bug after a write")

        results = await asyncio.gather(
            store.update_code("s", "before"),
            store._write(write_then_fail),
            store.update_code("s", "after"),
            return_exceptions=True,
        )
        assert isinstance(results[1], RuntimeError)
        got = await store.get("s")
        assert (got.code, got.revision) == ("after", 2)


async def test_synchronous_normal_is_accepted(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path / 'a.db'}?synchronous=normal") as store:
        await store.create(make_session("s"))
        assert (await store.update_code("s", "x")).revision == 1
