"""Collaborative editing end to end: real Yjs clients (yjs + y-websocket from npm, driven by
node) against the real app, next to REST and JSON WebSocket clients."""

from __future__ import annotations

import asyncio
import shutil
import uuid

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestServer

from algoroom import create_app
from algoroom.keys import SERVICE

from .conftest import make_settings, receive_until
from .processes import ServerProcess
from .yjs.nodeclient import NodeClient


pytestmark = pytest.mark.usefixtures("require_node")


class Running:
    """An app on a real port with an HTTP session for REST and JSON sockets."""

    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server, self.http = server, http

    @property
    def base(self) -> str:
        return f"http://{self.server.host}:{self.server.port}"

    @property
    def yjs_url(self) -> str:
        return f"ws://{self.server.host}:{self.server.port}/yjs"

    async def create(self, code: str = "", language: str = "python") -> str:
        async with self.http.post(self.base + "/sessions", json={"language": language}) as resp:
            sid = (await resp.json())["id"]
        if code:
            await self.put(sid, code)
        return sid

    async def put(self, sid: str, code: str, **extra) -> dict:
        async with self.http.put(f"{self.base}/sessions/{sid}/code", json={"code": code, **extra}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def get(self, sid: str) -> dict:
        async with self.http.get(f"{self.base}/sessions/{sid}") as resp:
            return await resp.json()

    async def wait_code(self, sid: str, code: str, timeout: float = 5.0) -> dict:
        async def poll() -> dict:
            while True:
                body = await self.get(sid)
                if body["code"] == code:
                    return body
                await asyncio.sleep(0.02)  # the REST view is the store: saved within 50 ms

        return await asyncio.wait_for(poll(), timeout)


async def start(settings, port: int | None = None) -> Running:
    server = TestServer(create_app(settings), host="127.0.0.1", port=port)
    await server.start_server()
    return Running(server, aiohttp.ClientSession())


@pytest.fixture
async def app_server(tmp_path):
    running = await start(make_settings(database_url=f"sqlite:///{tmp_path / 'collab.db'}"))
    try:
        yield running
    finally:
        await running.http.close()
        await running.server.close()


async def test_initial_sync_rest_edits_and_yjs_edits_meet(app_server):
    sid = await app_server.create("print('hi')\n")
    json_ws = await app_server.http.ws_connect(f"{app_server.base}/ws/sessions/{sid}")
    async with NodeClient(app_server.yjs_url, sid, name="a") as client:
        await client.wait_synced()
        await client.wait_for_text("print('hi')\n")
        joined = await receive_until(json_ws, "participant_joined", participants=2)
        assert joined["sessionId"] == sid

        # REST -> Yjs
        await app_server.put(sid, "print('hi')\nprint('rest')\n")
        await client.wait_for_text("print('hi')\nprint('rest')\n")

        # Yjs -> REST and JSON sockets
        await client.insert(0, "# yjs\n")
        expected = "# yjs\nprint('hi')\nprint('rest')\n"
        update = await receive_until(json_ws, "code_update", code=expected)
        body = await app_server.wait_code(sid, expected)
        assert body["revision"] == update["revision"]
    left = await receive_until(json_ws, "participant_left", participants=1)
    assert left["sessionId"] == sid
    await json_ws.close()


async def test_concurrent_inserts_at_the_same_place_converge(app_server):
    sid = await app_server.create("x\n")
    async with NodeClient(app_server.yjs_url, sid, name="a") as a, NodeClient(app_server.yjs_url, sid, name="b") as b:
        await asyncio.gather(a.wait_for_text("x\n"), b.wait_for_text("x\n"))
        await asyncio.gather(a.insert(0, "AAA"), b.insert(0, "BBB"))
        await asyncio.gather(a.wait_for_length(8), b.wait_for_length(8))
        text = await a.text()
        assert text == await b.text()
        assert sorted([text[:3], text[3:6]]) == ["AAA", "BBB"] and text.endswith("x\n")
        await app_server.wait_code(sid, text)


async def test_json_clients_get_coalesced_updates_ending_with_the_final_text(app_server):
    sid = await app_server.create()
    json_ws = await app_server.http.ws_connect(f"{app_server.base}/ws/sessions/{sid}")
    async with NodeClient(app_server.yjs_url, sid) as client:
        await client.wait_synced()
        await client.insert_repeat(0, "k", 300)  # 300 keystrokes as separate updates
        final = "k" * 300
        updates = []
        while not updates or updates[-1]["code"] != final:
            updates.append(await receive_until(json_ws, "code_update"))
        assert len(updates) < 50
        revisions = [u["revision"] for u in updates]
        assert revisions == sorted(revisions)
    await json_ws.close()


async def test_put_keeps_remote_cursors_outside_the_edit(app_server):
    sid = await app_server.create("line one\nline two\nline three\n")
    async with NodeClient(app_server.yjs_url, sid) as client:
        await client.wait_for_text("line one\nline two\nline three\n")
        await client.stick("cursor", 23)  # inside "line three"
        await app_server.put(sid, "LINE ONE!\nline two\nline three\n")
        await client.wait_for_text("LINE ONE!\nline two\nline three\n")
        assert await client.sticky_index("cursor") == 24


async def test_base_revision_merges_with_concurrent_yjs_typing(app_server):
    sid = await app_server.create("a = 1\nb = 2\n")
    base = (await app_server.get(sid))["revision"]
    async with NodeClient(app_server.yjs_url, sid) as client:
        await client.wait_for_text("a = 1\nb = 2\n")
        await client.insert(12, "c = 3\n")  # someone types at the end meanwhile
        await app_server.wait_code(sid, "a = 1\nb = 2\nc = 3\n")
        body = await app_server.put(sid, "a = 10\nb = 2\n", baseRevision=base)
        assert body["code"] == "a = 10\nb = 2\nc = 3\n"
        await client.wait_for_text("a = 10\nb = 2\nc = 3\n")


async def test_awareness_is_removed_for_everyone_when_a_client_goes(app_server):
    sid = await app_server.create()
    async with NodeClient(app_server.yjs_url, sid, name="watcher") as watcher:
        leaving = NodeClient(app_server.yjs_url, sid, name="leaving")
        async with leaving:
            await leaving.set_awareness({"user": {"name": "Ada", "color": "#f00"}})
            leaving_id = await leaving.client_id()
            await watcher.wait_for_awareness(leaving_id, present=True)
            leaving.kill()  # no goodbye: the socket just dies
            elapsed = await watcher.wait_for_awareness(leaving_id, present=False, timeout=5)
        assert elapsed < 3


async def test_emoji_and_cjk_round_trip(app_server):
    code = "print('héllo 世界 🎉')\n"
    sid = await app_server.create(code)
    async with NodeClient(app_server.yjs_url, sid) as client:
        await client.wait_for_text(code)
        # Indices are UTF-16 units: 🎉 counts two.
        await client.insert(len(code.encode("utf-16-le")) // 2 - 3, " 👍🏽")
        expected = "print('héllo 世界 🎉 👍🏽')\n"
        await client.wait_for_text(expected)
        await app_server.wait_code(sid, expected)
        await app_server.put(sid, expected.replace("世界", "세계"))
        await client.wait_for_text(expected.replace("世界", "세계"))


async def test_offline_edits_merge_on_reconnect(app_server):
    sid = await app_server.create("base\n")
    async with NodeClient(app_server.yjs_url, sid, name="a") as a, NodeClient(app_server.yjs_url, sid, name="b") as b:
        await asyncio.gather(a.wait_for_text("base\n"), b.wait_for_text("base\n"))
        await a.disconnect()
        await a.insert(0, "offline ")
        await b.insert(5, "online\n")
        await b.wait_for_text("base\nonline\n")
        await a.connect()
        final = "offline base\nonline\n"
        await asyncio.gather(a.wait_for_text(final), b.wait_for_text(final))
        await app_server.wait_code(sid, final)


async def test_edits_survive_a_server_restart(tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'restart.db'}")
    first = await start(settings)
    port = first.server.port
    sid = await first.create("start\n")
    async with NodeClient(first.yjs_url, sid) as client:
        await client.wait_for_text("start\n")
        await client.insert(6, "typed\n")
        await first.wait_code(sid, "start\ntyped\n")
        await first.http.close()
        await first.server.close()  # graceful: every document is saved
        await client.wait_connected(False)
        second = await start(settings, port)
        try:
            await client.wait_connected(True, timeout=15)
            await client.insert(0, ">")
            await second.wait_code(sid, ">start\ntyped\n", timeout=10)
            assert await client.text() == ">start\ntyped\n"
        finally:
            await second.http.close()
            await second.server.close()


async def test_five_megabyte_document(app_server):
    sid = await app_server.create()
    size = 5 * 1024 * 1024
    async with NodeClient(app_server.yjs_url, sid, name="writer") as writer:
        await writer.wait_synced()
        await writer.insert(0, "x" * size)
        async with NodeClient(app_server.yjs_url, sid, name="reader") as reader:
            await reader.wait_for_length(size, timeout=30)
        body = await app_server.wait_code(sid, "x" * size, timeout=30)
        assert len(body["code"]) == size


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_execute_runs_the_live_document_not_the_last_save(tmp_path):
    # Saves are held back for a minute, so the store still has the old text when we run.
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", exec_enabled=True, yjs_flush_ms=60_000)
    running = await start(settings)
    try:
        sid = await running.create("print(1)\n")
        document = await running.server.app[SERVICE].documents.open(sid)
        async with NodeClient(running.yjs_url, sid) as client:
            await client.wait_for_text("print(1)\n")
            await client.insert(0, "print(0)\n")

            async def server_has_it() -> None:
                while document.text != "print(0)\nprint(1)\n":
                    await asyncio.sleep(0.01)  # the document has no public "changed" event

            await asyncio.wait_for(server_has_it(), 5)
            assert (await running.get(sid))["code"] == "print(1)\n"
            async with running.http.post(f"{running.base}/sessions/{sid}/execute") as resp:
                result = await resp.json()
            assert result["output"] == "0\n1\n", result
    finally:
        await running.http.close()
        await running.server.close()


async def test_garbage_yjs_frame_closes_only_that_socket(app_server):
    sid = await app_server.create("keep\n")
    async with NodeClient(app_server.yjs_url, sid) as client:
        await client.wait_for_text("keep\n")
        bad = await app_server.http.ws_connect(f"{app_server.yjs_url}/{sid}")
        await bad.send_bytes(b"\x00\x07\xff\xff\xff\xff\xff")
        msg = await bad.receive(timeout=5)
        while msg.type is WSMsgType.BINARY:
            msg = await bad.receive(timeout=5)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1003
        await client.insert(0, "still ")
        await app_server.wait_code(sid, "still keep\n")


async def test_unknown_session_is_refused(app_server):
    ws = await app_server.http.ws_connect(f"{app_server.yjs_url}/{uuid.uuid4()}")
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == 4404


async def test_two_processes_converge_through_redis(tmp_path, redis_server):
    env = {
        "ALGOROOM_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "ALGOROOM_REDIS_URL": redis_server.url,
        "ALGOROOM_REDIS_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "ALGOROOM_EXEC_ENABLED": "false",
    }
    servers = [ServerProcess(env, tmp_path / f"s{i}.log") for i in range(2)]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        async with aiohttp.ClientSession() as http:
            async with http.post(servers[0].url + "/sessions", json={"language": "python"}) as resp:
                sid = (await resp.json())["id"]
        urls = [f"ws://127.0.0.1:{s.port}/yjs" for s in servers]
        async with NodeClient(urls[0], sid, name="a") as a, NodeClient(urls[1], sid, name="b") as b:
            await asyncio.gather(a.wait_synced(), b.wait_synced())
            await a.insert(0, "from a\n")
            await b.wait_for_text("from a\n")
            await b.insert(7, "from b\n")
            await asyncio.gather(a.wait_for_text("from a\nfrom b\n"), b.wait_for_text("from a\nfrom b\n"))
            await asyncio.gather(a.insert(0, "1"), b.insert(0, "2"))
            await asyncio.gather(a.wait_for_length(16), b.wait_for_length(16))
            assert await a.text() == await b.text()
    finally:
        for server in servers:
            server.terminate()


async def test_idle_documents_are_saved_and_unloaded(tmp_path):
    settings = make_settings(database_url=f"sqlite:///{tmp_path / 'u.db'}", yjs_unload_seconds=0)
    running = await start(settings)
    try:
        documents = running.server.app[SERVICE].documents
        sid = await running.create("kept\n")
        async with NodeClient(running.yjs_url, sid) as client:
            await client.wait_for_text("kept\n")
            await client.insert(0, "also ")
            await running.wait_code(sid, "also kept\n")
            await documents.sweep()
            assert documents.loaded(sid) is not None  # a connection keeps it loaded
        document = documents.loaded(sid)

        async def disconnected() -> None:
            while document.connections:
                await asyncio.sleep(0.01)  # the server notices the close on its own schedule

        await asyncio.wait_for(disconnected(), 5)
        await documents.sweep()
        assert documents.loaded(sid) is None
        async with NodeClient(running.yjs_url, sid) as client:
            await client.wait_for_text("also kept\n")  # reloaded from the store, not re-seeded
            assert await client.text() == "also kept\n"
    finally:
        await running.http.close()
        await running.server.close()
