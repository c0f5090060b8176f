"""The JSON WebSocket protocol: membership, fan-out, bad frames, slow readers, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import aiohttp
import pytest
from aiohttp import WSMsgType

from algoroom import create_app
from algoroom.keys import HUB

from .conftest import make_settings, receive_close, receive_json, receive_until


async def join(client, session_id, **kwargs):
    ws = await client.ws_connect(f"/ws/sessions/{session_id}", **kwargs)
    return ws, await receive_until(ws, "participant_joined")


async def test_unknown_session_is_closed_with_1008(client):
    ws = await client.ws_connect("/ws/sessions/does-not-exist")
    msg = await receive_close(ws)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == 1008


async def test_join_and_leave_update_counts_for_everyone(client, session_id):
    first, joined = await join(client, session_id)
    assert joined == {
        "type": "participant_joined",
        "sessionId": session_id,
        "participants": 1,
        "timestamp": joined["timestamp"],
    }
    second, joined2 = await join(client, session_id)
    assert joined2["participants"] == 2
    seen_by_first = await receive_until(first, "participant_joined")
    assert seen_by_first["participants"] == 2
    assert (await (await client.get(f"/sessions/{session_id}")).json())["participants"] == 2

    await second.close()
    left = await receive_until(first, "participant_left")
    assert left["participants"] == 1 and left["sessionId"] == session_id
    assert (await (await client.get(f"/sessions/{session_id}")).json())["participants"] == 1
    await first.close()


async def test_put_reaches_every_socket_as_code_update(client, session_id):
    sockets = [(await join(client, session_id))[0] for _ in range(3)]
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "x = 1", "language": "python"})
    assert resp.status == 200
    for ws in sockets:
        update = await receive_until(ws, "code_update")
        assert update["sessionId"] == session_id
        assert update["code"] == "x = 1"
        assert update["language"] == "python"
        assert update["revision"] == 1
        assert update["timestamp"].endswith("Z")
    for ws in sockets:
        await ws.close()


async def test_updates_arrive_in_revision_order(client, session_id):
    ws, _ = await join(client, session_id)
    responses = await asyncio.gather(
        *(client.put(f"/sessions/{session_id}/code", json={"code": f"v{i}"}) for i in range(20))
    )
    assert all(r.status == 200 for r in responses)
    seen = []
    while not seen or seen[-1] < 20:
        seen.append((await receive_until(ws, "code_update"))["revision"])
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    await ws.close()


async def test_execution_result_reaches_every_socket(client, session_id):
    sockets = [(await join(client, session_id))[0] for _ in range(2)]
    result = {"success": False, "output": "", "error": "ValueError: boom", "executionTime": 7}
    resp = await client.post(f"/sessions/{session_id}/execution-result", json=result)
    assert resp.status == 204
    for ws in sockets:
        message = await receive_until(ws, "execution_result")
        assert message["sessionId"] == session_id
        assert message["executionResult"] == result
        await ws.close()


async def test_client_code_update_message_is_applied_and_broadcast(client, session_id):
    writer, _ = await join(client, session_id)
    reader, _ = await join(client, session_id)
    await writer.send_json({"type": "code_update", "code": "print('ws')"})
    update = await receive_until(reader, "code_update")
    assert update["code"] == "print('ws')" and update["revision"] == 1
    body = await (await client.get(f"/sessions/{session_id}")).json()
    assert body["code"] == "print('ws')"
    await writer.close()
    await reader.close()


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json", "INVALID_JSON"),
        ("[1, 2, 3]", "VALIDATION_ERROR"),
        ('{"no": "type"}', "VALIDATION_ERROR"),
        ('{"type": 7}', "VALIDATION_ERROR"),
        ('{"type": "launch_missiles"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "code_update", "code": 5}', "VALIDATION_ERROR"),
        ('{"type": "code_update", "code": "x", "language": "cobol"}', "VALIDATION_ERROR"),
    ],
)
async def test_garbage_frames_get_an_error_and_change_nothing(client, session_id, frame, code):
    ws, _ = await join(client, session_id)
    other, _ = await join(client, session_id)
    await ws.send_str(frame)
    error = await receive_until(ws, "error")
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["status"] in (400, 422)
    # The socket keeps working, for it and for everyone else, and nothing changed.
    await ws.send_json({"type": "ping"})
    assert (await receive_until(ws, "pong"))["type"] == "pong"
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "after"})
    assert (await resp.json())["revision"] == 1
    assert (await receive_until(other, "code_update"))["code"] == "after"
    await ws.close()
    await other.close()


async def test_binary_frame_gets_an_error(client, session_id):
    ws, _ = await join(client, session_id)
    await ws.send_bytes(os.urandom(64))
    assert (await receive_until(ws, "error"))["code"] == "BINARY_NOT_SUPPORTED"
    await ws.send_json({"type": "ping"})
    await receive_until(ws, "pong")
    await ws.close()


async def test_oversize_frame_closes_only_that_socket(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(ws_max_message_bytes=4096)))
    sid = (await (await client.post("/sessions")).json())["id"]
    big, _ = await join(client, sid)
    other, _ = await join(client, sid)
    await big.send_str("x" * 10_000)
    closed = await receive_close(big)
    assert big.close_code == 1009, closed
    left = await receive_until(other, "participant_left")
    assert left["participants"] == 1
    await client.put(f"/sessions/{sid}/code", json={"code": "still here"})
    assert (await receive_until(other, "code_update"))["code"] == "still here"
    await other.close()


async def test_disallowed_origin_is_refused(client, session_id):
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(f"/ws/sessions/{session_id}", headers={"Origin": "http://evil.example"})
    assert info.value.status == 403


async def test_allowed_origin_and_no_origin_are_accepted(client, session_id):
    ws, joined = await join(client, session_id, headers={"Origin": "http://localhost:5173"})
    assert joined["participants"] == 1
    ws2, joined2 = await join(client, session_id)
    assert joined2["participants"] == 2
    await ws.close()
    await ws2.close()


async def test_shutdown_closes_sockets_with_1001(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings()))
    sid = (await (await client.post("/sessions")).json())["id"]
    sockets = [(await join(client, sid))[0] for _ in range(3)]
    closing = asyncio.ensure_future(client.server.close())
    for ws in sockets:
        msg = await receive_close(ws)
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 1001
    await asyncio.wait_for(closing, 10)


async def test_dead_peer_is_dropped_by_heartbeat(aiohttp_client):
    client = await aiohttp_client(
        create_app(make_settings(ws_heartbeat_seconds=0.2))
    )
    sid = (await (await client.post("/sessions")).json())["id"]
    watcher, _ = await join(client, sid)
    # autoping=False and never reading: pings go unanswered, like a vanished peer.
    await client.ws_connect(f"/ws/sessions/{sid}", autoping=False)
    assert (await receive_until(watcher, "participant_joined"))["participants"] == 2
    left = await receive_until(watcher, "participant_left", timeout=5)
    assert left["participants"] == 1
    await watcher.close()


def _stalled_socket(host: str, port: int, path: str) -> socket.socket:
    """A raw WebSocket client that completes the handshake and then never reads."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_stalled_reader_is_dropped_without_delaying_others(aiohttp_client):
    settings = make_settings(ws_send_queue=4, ws_send_timeout_seconds=1.0)
    client = await aiohttp_client(create_app(settings))
    sid = (await (await client.post("/sessions")).json())["id"]
    fast, _ = await join(client, sid)
    loop = asyncio.get_running_loop()
    stalled = await loop.run_in_executor(
        None, _stalled_socket, client.host, client.port, f"/ws/sessions/{sid}"
    )
    try:
        assert (await receive_until(fast, "participant_joined"))["participants"] == 2
        code = "y" * 200_000
        seen = []
        for revision in range(1, 41):
            resp = await client.put(f"/sessions/{sid}/code", json={"code": code + str(revision)})
            assert resp.status == 200
            # Every update reaches the fast reader within 2 s, whatever the stalled one does.
            while True:
                message = await receive_json(fast, timeout=2)
                seen.append(message)
                if message["type"] == "code_update":
                    assert message["revision"] == revision
                    break
        if not any(m["type"] == "participant_left" for m in seen):
            seen.append(await receive_until(fast, "participant_left", timeout=5))
        left = [m for m in seen if m["type"] == "participant_left"]
        assert [m["participants"] for m in left] == [1]
        assert client.app[HUB].count(sid) == 1
    finally:
        stalled.close()
    await fast.close()


async def test_pong_reply_to_ping_message(client, session_id):
    ws, _ = await join(client, session_id)
    await ws.send_str(json.dumps({"type": "ping"}))
    assert await receive_json(ws) == {"type": "pong"}
    await ws.close()


@pytest.mark.parametrize("path", ["/ws/sessions/{}", "/yjs/{}"])
async def test_permessage_deflate_is_declined(client, session_id, path):
    # Clients (browsers, Node's ws) offer it; accepting would make them deflate every frame.
    ws = await client.ws_connect(path.format(session_id), compress=15)
    try:
        assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
    finally:
        await ws.close()
