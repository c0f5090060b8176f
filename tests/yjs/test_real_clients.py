"""Unmodified Yjs clients (yjs 13.6 + y-websocket 3, from npm) against YRoom over WebSocket."""

from __future__ import annotations

import asyncio
import time

from .conftest import RunningServer, start_server
from .nodeclient import NodeClient


async def test_initial_sync_of_existing_document(yjs_server: RunningServer) -> None:
    yjs_server.state.room("r").seed("print('hello 世界 😀')\n")
    async with NodeClient(yjs_server.url, "r") as client:
        await client.wait_synced()
        assert await client.text() == "print('hello 世界 😀')\n"


async def test_edits_reach_other_clients_and_the_server(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        await a.insert(0, "hello")
        await b.wait_for_text("hello")
        await b.insert(5, " world")
        await a.wait_for_text("hello world")
        assert yjs_server.state.rooms["r"].text == "hello world"


async def test_concurrent_inserts_at_same_position_converge_everywhere(yjs_server: RunningServer) -> None:
    url = yjs_server.url
    async with NodeClient(url, "r", name="a") as a, NodeClient(url, "r", name="b") as b, NodeClient(
        url, "r", name="c"
    ) as c:
        clients = (a, b, c)
        await asyncio.gather(*(x.wait_synced() for x in clients))
        await a.insert(0, "[]")
        await asyncio.gather(*(x.wait_for_text("[]") for x in clients))
        # Take everyone offline, type at the same index, come back: a true conflict.
        await asyncio.gather(*(x.disconnect() for x in clients))
        for i, x in enumerate(clients):
            await x.insert(1, f"{i}-😀-世{i}" * 3)
        await asyncio.gather(*(x.connect() for x in clients))
        await asyncio.gather(*(x.wait_synced() for x in clients))
        # Every insert is somewhere in the text; all replicas agree on the order.
        room = yjs_server.state.rooms["r"]
        expected_length = 2 + 3 * len(("0-😀-世0" * 3).encode("utf-16-le")) // 2
        await asyncio.gather(*(x.wait_for_length(expected_length) for x in clients))
        text = room.text
        assert all(f"{i}-😀-世{i}" * 3 in text for i in range(3))
        await asyncio.gather(*(x.wait_for_text(text) for x in clients))


async def test_awareness_removed_quickly_when_a_client_dies(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        b_id = await b.client_id()
        await b.set_awareness({"user": {"name": "Zoë 😀 世界", "color": "#f00"}, "cursor": 3})
        await a.wait_for_awareness(b_id, present=True)
        assert (await a.awareness())[b_id]["user"]["name"] == "Zoë 😀 世界"
        started = time.monotonic()
        b.kill()  # no close frame, no awareness goodbye: the server must notice the socket
        await a.wait_for_awareness(b_id, present=False, timeout=1.0)
        assert time.monotonic() - started < 1.0


async def test_awareness_of_present_clients_reaches_a_newcomer(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a:
        await a.wait_synced()
        await a.set_awareness({"user": "a"})
        a_id = await a.client_id()
        async with NodeClient(yjs_server.url, "r", name="b") as b:
            await b.wait_for_awareness(a_id, present=True)


async def test_offline_edits_merge_on_reconnect(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        await a.insert(0, "line 1\nline 2\n")
        await b.wait_for_text("line 1\nline 2\n")
        await b.disconnect()
        await b.wait_connected(False)
        await b.insert(0, "offline 世界 ")  # while disconnected
        await a.insert(len("line 1\nline 2\n"), "online\n")  # meanwhile, online
        await b.connect()
        expected = "offline 世界 line 1\nline 2\nonline\n"
        await asyncio.gather(a.wait_for_text(expected), b.wait_for_text(expected))
        assert yjs_server.state.rooms["r"].text == expected


async def test_reconnect_after_server_restart_keeps_every_edit(yjs_server: RunningServer) -> None:
    state, port = yjs_server.state, yjs_server.port
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        await a.insert(0, "before restart\n")
        await b.wait_for_text("before restart\n")
        await yjs_server.runner.cleanup()  # graceful: state is stored, sockets closed
        await asyncio.gather(a.wait_connected(False), b.wait_connected(False))
        await a.insert(0, "while down (a)\n")
        await b.insert(len("before restart\n"), "while down (b)\n")
        restarted = await start_server(state, port)
        try:
            expected = "while down (a)\nbefore restart\nwhile down (b)\n"
            await asyncio.gather(a.wait_for_text(expected, 10), b.wait_for_text(expected, 10))
            assert state.rooms["r"].text == expected
        finally:
            await restarted.runner.cleanup()


async def test_emoji_and_cjk_round_trip_in_utf16_indices(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        await a.insert(0, "a😀b世界c👩‍👩‍👧")
        await b.wait_for_text("a😀b世界c👩‍👩‍👧")
        await b.insert(3, "→")  # UTF-16 index 3 = after the emoji (2 units) and 'a'
        await b.delete(4, 1)  # the 'b'
        await a.wait_for_text("a😀→世界c👩‍👩‍👧")
        room = yjs_server.state.rooms["r"]
        assert room.text == "a😀→世界c👩‍👩‍👧"
        room.apply_text("a😀→世界!c👩‍👩‍👧")
        await asyncio.gather(a.wait_for_text("a😀→世界!c👩‍👩‍👧"), b.wait_for_text("a😀→世界!c👩‍👩‍👧"))


async def test_server_side_edit_keeps_remote_cursors_outside_it(yjs_server: RunningServer) -> None:
    room = yjs_server.state.room("r")
    room.seed("def f():\n    return '世界'\n\nprint(f())  # 😀\n")
    async with NodeClient(yjs_server.url, "r") as client:
        await client.wait_synced()
        text = await client.text()
        after = text.index("print")  # an ASCII/BMP prefix: code points == UTF-16 units here
        before = text.index("def") + 2
        await client.stick("after", after)
        await client.stick("before", before)
        room.apply_text("def g(x):\n    return '世界'\n\nprint(f())  # 😀\n")
        await client.wait_for_text(room.text)
        new_text = await client.text()
        assert await client.sticky_index("before") == before
        assert new_text[await client.sticky_index("after") :].startswith("print(f())")


async def test_three_way_merge_from_a_stale_base_keeps_live_typing(yjs_server: RunningServer) -> None:
    room = yjs_server.state.room("r")
    room.seed("one\ntwo\nthree\n")
    base = room.encode_state()
    typed = asyncio.Event()
    room.on_change = lambda origin: typed.set()
    async with NodeClient(yjs_server.url, "r") as client:
        await client.wait_synced()
        await client.insert(len("one\ntwo\nthree"), " (typed)")
        await asyncio.wait_for(typed.wait(), 5)
        assert room.text == "one\ntwo\nthree (typed)\n"
        room.apply_text_from_base(base, "ONE\ntwo\nthree\n")  # written against the old text
        await client.wait_for_text("ONE\ntwo\nthree (typed)\n")


async def test_five_megabyte_document(yjs_server: RunningServer) -> None:
    line = "x = '世界😀' * 10  # padding padding padding\n"
    units = len(line.encode("utf-16-le")) // 2
    count = 5 * 1024 * 1024 // len(line.encode()) + 1
    async with NodeClient(yjs_server.url, "big", name="a") as a:
        await a.wait_synced()
        await a.insert_repeat(0, line, count)  # one ~5 MB update frame to the server
        async with NodeClient(yjs_server.url, "big", name="b") as b:  # ~5 MB SyncStep2 back
            await b.wait_synced(timeout=20)
            await b.wait_for_length(count * units, timeout=20)
            room = yjs_server.state.rooms["big"]
            assert len(room.text.encode()) > 5 * 1024 * 1024
            assert room.text == line * count
            await b.insert(0, "# top\n")
            await a.wait_for_length(count * units + 6, timeout=20)


async def test_typing_bursts_from_two_clients(yjs_server: RunningServer) -> None:
    async with NodeClient(yjs_server.url, "r", name="a") as a, NodeClient(yjs_server.url, "r", name="b") as b:
        await asyncio.gather(a.wait_synced(), b.wait_synced())
        for i in range(30):
            await a.insert(0, "a")
            await b.insert(0, "b😀")
        await asyncio.gather(a.wait_for_length(30 * 4), b.wait_for_length(30 * 4))
        text = yjs_server.state.rooms["r"].text
        assert text.count("a") == 30 and text.count("b😀") == 30
        await asyncio.gather(a.wait_for_text(text), b.wait_for_text(text))
