"""Optimistic concurrency, deletion, expiry and readiness."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType

from algoroom import create_app
from algoroom.expiry import sweep_once
from algoroom.keys import SERVICE

from .conftest import assert_error, make_settings, receive_close, receive_until


async def test_if_match_current_revision_succeeds(client, session_id):
    etag = (await client.get(f"/sessions/{session_id}")).headers["ETag"]
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "a"}, headers={"If-Match": etag})
    assert resp.status == 200
    assert resp.headers["ETag"] == '"1"'


async def test_if_match_stale_revision_is_412_and_changes_nothing(client, session_id):
    await client.put(f"/sessions/{session_id}/code", json={"code": "first"})
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "stale"}, headers={"If-Match": '"0"'})
    body = await assert_error(resp, 412, "REVISION_CONFLICT")
    assert body["details"] == {"expectedRevision": 0, "currentRevision": 1}
    assert (await (await client.get(f"/sessions/{session_id}")).json())["code"] == "first"


async def test_base_revision_merges_edits_made_since(client, session_id):
    base = await (await client.put(f"/sessions/{session_id}/code", json={"code": "a = 1\nb = 2\n"})).json()
    assert base["revision"] == 1
    # Two clients both start from revision 1 and edit different lines.
    first = await client.put(f"/sessions/{session_id}/code", json={"code": "a = 10\nb = 2\n", "baseRevision": 1})
    assert first.status == 200
    second = await client.put(f"/sessions/{session_id}/code", json={"code": "a = 1\nb = 20\n", "baseRevision": 1})
    assert second.status == 200
    body = await second.json()
    assert body["code"] == "a = 10\nb = 20\n"
    assert body["revision"] == 3


async def test_base_revision_that_cannot_be_merged_is_409(client, session_id):
    await client.put(f"/sessions/{session_id}/code", json={"code": "first"})
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "x", "baseRevision": 999})
    body = await assert_error(resp, 409, "REVISION_CONFLICT")
    assert body["details"]["currentRevision"] == 1


async def test_garbage_if_match_is_400(client, session_id):
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "x"}, headers={"If-Match": "abc"})
    await assert_error(resp, 400, "INVALID_IF_MATCH")


async def test_concurrent_writers_with_if_match_lose_nothing_silently(client, session_id):
    responses = await asyncio.gather(
        *(
            client.put(f"/sessions/{session_id}/code", json={"code": f"w{i}"}, headers={"If-Match": '"0"'})
            for i in range(10)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [412] * 9


async def test_delete_session_closes_sockets_and_is_404_afterwards(client, session_id):
    ws = await client.ws_connect(f"/ws/sessions/{session_id}")
    await receive_until(ws, "participant_joined")
    resp = await client.delete(f"/sessions/{session_id}")
    assert resp.status == 204
    msg = await receive_close(ws)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4410
    await assert_error(await client.get(f"/sessions/{session_id}"), 404, "SESSION_NOT_FOUND")
    await assert_error(await client.delete(f"/sessions/{session_id}"), 404, "SESSION_NOT_FOUND")


async def test_idle_sessions_expire_but_busy_ones_stay(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(session_ttl=3600)))
    service = client.app[SERVICE]
    idle = (await (await client.post("/sessions")).json())["id"]
    busy = (await (await client.post("/sessions")).json())["id"]
    ws = await client.ws_connect(f"/ws/sessions/{busy}")
    await receive_until(ws, "participant_joined")
    # A TTL of zero makes everything idle right now: only the session with a socket stays.
    expired = await sweep_once(service, 0)
    assert expired == [idle]
    await assert_error(await client.get(f"/sessions/{idle}"), 404, "SESSION_NOT_FOUND")
    assert (await client.get(f"/sessions/{busy}")).status == 200
    await ws.close()


async def test_background_sweep_expires_sessions(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(session_ttl=1)))
    sid = (await (await client.post("/sessions")).json())["id"]

    async def gone() -> None:
        while (await client.get(f"/sessions/{sid}")).status != 404:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(gone(), timeout=10)


async def test_ready_reports_each_dependency(client):
    resp = await client.get("/ready")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ready"
    assert body["checks"]["store"] == {"ok": True, "url": "memory://"}
    assert body["checks"]["cluster"] == {"mode": "single-process"}


async def test_ready_is_503_when_the_store_fails(client, monkeypatch):
    async def broken():
        raise ConnectionError("database is gone")

    monkeypatch.setattr(client.app[SERVICE].store, "ping", broken)
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unavailable"
    assert "database is gone" in body["checks"]["store"]["error"]
    assert (await client.get("/health")).status == 200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sessions_survive_an_app_restart(aiohttp_client, tmp_path, backend):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'a.db'}")
    first = await aiohttp_client(create_app(settings))
    sid = (await (await first.post("/sessions", json={"language": "python"})).json())["id"]
    await first.put(f"/sessions/{sid}/code", json={"code": "kept"})
    await first.close()
    second = await aiohttp_client(create_app(settings))
    body = await (await second.get(f"/sessions/{sid}")).json()
    assert (body["code"], body["revision"], body["language"]) == ("kept", 1, "python")
