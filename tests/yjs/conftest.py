"""A throwaway y-websocket server around YRoom, for the real-client tests.

Deliberately tiny: the real ``/yjs/{sessionId}`` endpoint lives in the algoroom app; this
fixture only exists so that the Yjs core can be tested end to end on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from algoroom.yjs import ProtocolError, YRoom


MAX_MESSAGE = 64 * 1024 * 1024  # the 5 MB document test; aiohttp's default is 4 MiB


class QueuedPeer:
    """A room peer: frames go into a bounded queue drained by one writer task."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int = 4096) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_size)
        self.writer = asyncio.create_task(self._write())

    def send(self, frame: bytes) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:  # a reader this far behind is cut, not buffered forever
            self.writer.cancel()
            asyncio.create_task(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER))

    async def _write(self) -> None:
        try:
            while True:
                await self.ws.send_bytes(await self.queue.get())
        except (ConnectionError, RuntimeError):
            pass

    async def stop(self) -> None:
        self.writer.cancel()
        try:
            await self.writer
        except asyncio.CancelledError:
            pass


@dataclass
class TestYjsServer:
    rooms: dict[str, YRoom] = field(default_factory=dict)
    stored: dict[str, bytes] = field(default_factory=dict)  # "persistence" across restarts
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    def room(self, name: str) -> YRoom:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = YRoom(name)
            if name in self.stored:
                room.load(self.stored[name])
        return room

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        room = self.room(request.match_info["room"])
        peer = QueuedPeer(ws)
        self.sockets.add(ws)
        for frame in room.join(peer):
            peer.send(frame)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    try:
                        room.receive(peer, msg.data)
                    except ProtocolError:
                        await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"bad frame")
        finally:
            self.sockets.discard(ws)
            room.leave(peer)
            await peer.stop()
        return ws

    async def shutdown(self, app: web.Application) -> None:
        for ws in tuple(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        for name, room in self.rooms.items():
            self.stored[name] = room.encode_state()
            room.close()
        self.rooms.clear()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/yjs/{room}", self.handle)
        app.on_shutdown.append(self.shutdown)
        return app


@dataclass
class RunningServer:
    state: TestYjsServer
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/yjs"


async def start_server(state: TestYjsServer, port: int = 0) -> RunningServer:
    runner = web.AppRunner(state.app(), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return RunningServer(state, runner, bound)


@pytest.fixture
async def yjs_server(require_node: None) -> AsyncIterator[RunningServer]:
    server = await start_server(TestYjsServer())
    try:
        yield server
    finally:
        await server.runner.cleanup()
