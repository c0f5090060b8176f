"""Several real server processes sharing one real Redis behave as one server."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from .conftest import receive_until
from .processes import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
async def cluster(redis_server, tmp_path):
    env = {
        "ALGOROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "ALGOROOM_REDIS_URL": redis_server.url,
        "ALGOROOM_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "ALGOROOM_CLUSTER_HEARTBEAT_SECONDS": "0.5",
        "ALGOROOM_CLUSTER_DEAD_AFTER_SECONDS": "2",
        "ALGOROOM_LOG_LEVEL": "DEBUG",
        "ALGOROOM_EXEC_ENABLED": "false",
    }
    servers = [ServerProcess(env, tmp_path / f"server{i}.log") for i in range(3)]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        async with aiohttp.ClientSession() as http:
            yield servers, http
    finally:
        for server in servers:
            server.terminate()


def ws_url(server: ServerProcess, session_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/sessions/{session_id}"


async def create(http, server) -> str:
    async with http.post(server.url + "/sessions", json={"language": "python"}) as resp:
        assert resp.status == 201
        return (await resp.json())["id"]


async def test_put_on_one_process_reaches_sockets_on_the_others_in_order(cluster):
    (a, b, c), http = cluster
    sid = await create(http, a)
    sockets = [await http.ws_connect(ws_url(server, sid)) for server in (a, b, c)]
    for ws in sockets:
        await receive_until(ws, "participant_joined", participants=3, timeout=10)
    for revision in range(1, 31):
        target = (a, b, c)[revision % 3]
        async with http.put(f"{target.url}/sessions/{sid}/code", json={"code": f"v{revision}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["revision"] == revision
    for ws in sockets:
        seen = []
        while not seen or seen[-1] != 30:
            seen.append((await receive_until(ws, "code_update", timeout=10))["revision"])
        assert seen == sorted(seen), seen
        assert len(set(seen)) == len(seen)
    for ws in sockets:
        await ws.close()


async def test_concurrent_writers_on_every_process_get_distinct_revisions(cluster):
    (a, b, c), http = cluster
    sid = await create(http, a)

    async def put(server, i):
        async with http.put(f"{server.url}/sessions/{sid}/code", json={"code": str(i)}) as resp:
            assert resp.status == 200
            return (await resp.json())["revision"]

    revisions = await asyncio.gather(*(put((a, b, c)[i % 3], i) for i in range(60)))
    assert sorted(revisions) == list(range(1, 61))


async def test_participant_counts_are_global(cluster):
    (a, b, c), http = cluster
    sid = await create(http, a)
    first = await http.ws_connect(ws_url(a, sid))
    await receive_until(first, "participant_joined", participants=1, timeout=10)
    second = await http.ws_connect(ws_url(b, sid))
    await receive_until(second, "participant_joined", participants=2, timeout=10)
    await receive_until(first, "participant_joined", participants=2, timeout=10)
    for server in (a, b, c):
        async with http.get(f"{server.url}/sessions/{sid}") as resp:
            assert (await resp.json())["participants"] == 2
    await second.close()
    await receive_until(first, "participant_left", participants=1, timeout=10)
    await first.close()


async def test_killed_process_participants_are_removed(cluster):
    (a, b, c), http = cluster
    sid = await create(http, a)
    watcher = await http.ws_connect(ws_url(a, sid))
    doomed = [await http.ws_connect(ws_url(b, sid)) for _ in range(2)]
    await receive_until(watcher, "participant_joined", participants=3, timeout=10)
    b.kill()
    left = await receive_until(watcher, "participant_left", participants=1, timeout=30)
    assert left["sessionId"] == sid
    async with http.get(f"{c.url}/sessions/{sid}") as resp:
        assert (await resp.json())["participants"] == 1
    for ws in doomed:
        await ws.close()
    await watcher.close()


async def test_fan_out_recovers_after_a_redis_restart(cluster, redis_server):
    (a, b, c), http = cluster
    sid = await create(http, a)
    listener = await http.ws_connect(ws_url(b, sid))
    await receive_until(listener, "participant_joined", timeout=10)

    redis_server.kill()
    # Local service continues while Redis is away.
    local = await http.ws_connect(ws_url(a, sid))
    async with http.put(f"{a.url}/sessions/{sid}/code", json={"code": "during outage"}) as resp:
        assert resp.status == 200
    assert (await receive_until(local, "code_update", timeout=10))["code"] == "during outage"
    async with http.get(f"{a.url}/ready") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "degraded"
        assert body["checks"]["cluster"]["ok"] is False
    async with http.get(f"{a.url}/health") as resp:
        assert await resp.json() == {"status": "healthy"}

    redis_server.start()

    async def until_ready(server) -> None:
        while True:
            async with http.get(f"{server.url}/ready") as resp:
                if (await resp.json())["status"] == "ready":
                    return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(asyncio.gather(until_ready(a), until_ready(b)), timeout=30)
    async with http.put(f"{a.url}/sessions/{sid}/code", json={"code": "after"}) as resp:
        assert resp.status == 200
    assert (await receive_until(listener, "code_update", code="after", timeout=10))["code"] == "after"
    await listener.close()
    await local.close()
