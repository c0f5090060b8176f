"""Promises that involve other processes: ``kill -9`` durability and cross-process atomicity.

The writer is ``writer.py`` in a real subprocess; the server (PostgreSQL, Redis) or the file
(SQLite) outlives it, and a store opened afterwards must show every acknowledged write.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from algoroom.store import open_store
from tests.servers import RedisServer, ServerUnavailable, unavailable
from tests.store.test_contract import make_session

pytestmark = pytest.mark.asyncio

WRITER = Path(__file__).with_name("writer.py")


async def spawn_writer(url: str, session_id: str, mode: str, count: int, tag: str = "") -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WRITER), url, session_id, mode, str(count), tag,
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if line != b"ready\n":
        process.kill()
        await process.wait()
        raise AssertionError(f"writer did not start: {line!r}")
    return process


@pytest.mark.parametrize("mode", ["code", "document"])
async def test_acknowledged_writes_survive_kill_9_of_the_writer(durable_store_url: str, mode: str) -> None:
    async with open_store(durable_store_url) as store:
        await store.create(make_session("s"))
    writer = await spawn_writer(durable_store_url, "s", mode, 0)
    acked: list[tuple[int, str]] = []
    try:
        while len(acked) < 200:
            line = await asyncio.wait_for(writer.stdout.readline(), 30)
            assert line, "writer exited early"
            revision, code = line.decode().split()
            acked.append((int(revision), code))
    finally:
        writer.send_signal(signal.SIGKILL)  # mid-write, most likely
        await writer.wait()
    assert writer.returncode == -signal.SIGKILL
    last_revision, _ = acked[-1]
    async with open_store(durable_store_url) as store:
        session = await store.get("s")
        assert session.revision >= last_revision  # the kill may land after one more commit
        assert session.code == f"{mode}--{session.revision}"
        if mode == "document":
            assert await store.load_document("s") == f"state:{session.code}".encode()


async def test_writers_in_several_processes_get_distinct_consecutive_revisions(durable_store_url: str) -> None:
    async with open_store(durable_store_url) as store:
        await store.create(make_session("s"))
        writers = [await spawn_writer(durable_store_url, "s", "code", 150, f"w{n}") for n in range(3)]
        outputs = await asyncio.gather(*(asyncio.wait_for(w.communicate(), 120) for w in writers))
        assert [w.returncode for w in writers] == [0, 0, 0]
        revisions = [int(line.split()[0]) for stdout, _ in outputs for line in stdout.decode().splitlines()]
        assert sorted(revisions) == list(range(1, 451))
        final = await store.get("s")
        assert final.revision == 450
        winner = next(line for stdout, _ in outputs for line in stdout.decode().splitlines() if line.startswith("450 "))
        assert final.code == winner.split()[1]


async def test_redis_store_recovers_after_a_redis_crash_and_restart() -> None:
    """kill -9 of Redis (append-only, fsync always): acknowledged writes are back after the
    restart, the store reconnects by itself, and reloads its scripts (Redis forgot them)."""
    try:
        server = RedisServer(appendonly=True)
    except ServerUnavailable as exc:
        unavailable(str(exc))
    try:
        server.start()
        async with open_store(server.url) as store:
            await store.create(make_session("s"))
            for i in range(20):
                await store.update_code("s", f"v{i}")
            server.kill()
            with pytest.raises(RedisError):
                await store.update_code("s", "while down")
            server.start()
            for attempt in range(5):  # each pooled connection may report the restart once
                try:
                    session = await store.update_code("s", "after restart")
                    break
                except RedisError:
                    continue
            else:
                pytest.fail("the store did not reconnect")
            assert session.revision == 21
            assert (await store.get("s")).code == "after restart"
    finally:
        server.cleanup()
