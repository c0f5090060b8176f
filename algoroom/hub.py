"""Fan-out of session events to the sockets that watch a session.

:class:`SessionHub` holds, per session, the set of open :class:`Connection` objects.
A broadcast is serialised to JSON once and handed to every connection's bounded
queue; each connection has one writer task that drains its queue, so a slow or stalled
reader only ever delays itself. A reader that falls ``queue_size`` messages behind, or
whose current send has been stuck for ``send_timeout`` seconds, is disconnected with
1013 (try again later) instead of growing memory without bound.

The hub is a plain class with no HTTP in it: the WebSocket handler registers
connections, the session service broadcasts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import WSCloseCode, web

log = logging.getLogger("algoroom.hub")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: Close code for a reader that cannot keep up (RFC 6455 "Try Again Later").
CLOSE_TOO_SLOW = WSCloseCode.TRY_AGAIN_LATER


class Connection:
    """The outgoing side of one WebSocket: a bounded queue and the task that drains it."""

    __slots__ = (
        "ws", "session_id", "wants_json", "_queue", "_writer", "_send_started", "_send_timeout", "_loop", "_dropped",
        "_transport",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        session_id: str,
        *,
        queue_size: int,
        send_timeout: float,
        transport: asyncio.BaseTransport | None = None,
        wants_json: bool = True,
    ) -> None:
        self.ws = ws
        #: JSON sockets get the hub's JSON events; Yjs sockets only count as participants.
        self.wants_json = wants_json
        self._transport = transport
        self.session_id = session_id
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue(queue_size)
        self._send_timeout = send_timeout
        self._send_started: float | None = None
        self._dropped = False
        self._loop = asyncio.get_running_loop()
        self._writer = self._loop.create_task(self._write_loop())

    def send(self, payload: str | bytes) -> None:
        """Queue one serialised message (text or binary); cut the connection if it has fallen too far behind."""
        if self._dropped or self._writer.done():
            return
        started = self._send_started
        stalled = started is not None and self._loop.time() - started > self._send_timeout
        if stalled:
            self._drop("send stalled")
            return
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self._drop("send queue full")

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(_dumps(message))

    async def _write_loop(self) -> None:
        ws, queue, loop = self.ws, self._queue, self._loop
        try:
            while True:
                payload = await queue.get()
                self._send_started = loop.time()
                if isinstance(payload, str):
                    await ws.send_str(payload)
                else:
                    await ws.send_bytes(payload)
                self._send_started = None
                queue.task_done()
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the handler's read loop ends and cleans up.
            pass

    def _drop(self, reason: str) -> None:
        log.info("dropping slow WebSocket reader of session %s: %s", self.session_id, reason)
        self._dropped = True
        self._writer.cancel()
        self._writer = self._loop.create_task(self._close_stalled())

    async def _close_stalled(self) -> None:
        # drain=False: the peer is not reading, so waiting for its buffer would hang.
        await close_socket(self.ws, CLOSE_TOO_SLOW, b"reader too slow", drain=False)
        # If even the close frame could not be written, closing the transport would wait
        # for a flush that never comes: abort it so the handler's read loop ends now.
        if self._transport is not None:
            self._transport.abort()

    async def flush_and_stop(self, timeout: float = 1.0) -> None:
        """Give queued messages a moment to go out, then stop the writer task."""
        if not self._writer.done() and not self._dropped:
            try:
                await asyncio.wait_for(self._queue.join(), timeout)
            except asyncio.TimeoutError:
                pass
        self._writer.cancel()
        try:
            await self._writer
        except asyncio.CancelledError:
            pass


class _Room:
    """The sockets of one session, and the newest code revision already sent to them."""

    __slots__ = ("members", "revision")

    def __init__(self) -> None:
        self.members: set[Connection] = set()
        self.revision = -1


class SessionHub:
    """Which connections watch which session, and the one place that fans out."""

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}

    def join(self, conn: Connection) -> int:
        """Register a connection; returns the session's new local participant count."""
        room = self._rooms.get(conn.session_id)
        if room is None:
            room = self._rooms[conn.session_id] = _Room()
        room.members.add(conn)
        return len(room.members)

    def leave(self, conn: Connection) -> int:
        """Forget a connection; returns the session's remaining local participant count."""
        room = self._rooms.get(conn.session_id)
        if room is None:
            return 0
        room.members.discard(conn)
        if not room.members:
            del self._rooms[conn.session_id]
        return len(room.members)

    def count(self, session_id: str) -> int:
        room = self._rooms.get(session_id)
        return len(room.members) if room else 0

    def broadcast(self, session_id: str, message: dict[str, Any], *, revision: int | None = None) -> str | None:
        """Serialise ``message`` once and queue it on every socket of the session.

        Returns the serialised payload (for relaying to other processes), or ``None``
        when the message was superseded (see :meth:`broadcast_payload`).
        """
        if revision is not None and not self._is_newer(session_id, revision):
            return None
        payload = _dumps(message)
        self.broadcast_payload(session_id, payload, revision=revision)
        return payload

    def broadcast_payload(self, session_id: str, payload: str, *, revision: int | None = None) -> int:
        """Queue an already-serialised message on every socket of the session.

        A message carrying a code ``revision`` older than one already sent is dropped:
        it holds the whole buffer, so the newer one supersedes it, and every socket
        sees revisions in increasing order even when concurrent writes (here or in other
        processes) finish out of order.
        """
        room = self._rooms.get(session_id)
        if room is None:
            return 0
        if revision is not None:
            if revision <= room.revision:
                return 0
            room.revision = revision
        members = tuple(room.members)
        for conn in members:
            if conn.wants_json:
                conn.send(payload)
        return len(members)

    def _is_newer(self, session_id: str, revision: int) -> bool:
        room = self._rooms.get(session_id)
        return room is None or revision > room.revision

    def session_ids(self) -> list[str]:
        """Sessions with at least one socket in this process."""
        return list(self._rooms)

    def connections(self, session_id: str | None = None) -> Iterable[Connection]:
        """A snapshot (safe to close while iterating) of one session's or all connections."""
        if session_id is not None:
            room = self._rooms.get(session_id)
            return tuple(room.members) if room else ()
        return tuple(conn for room in self._rooms.values() for conn in room.members)

    async def close_all(
        self, session_id: str | None = None, code: int = WSCloseCode.GOING_AWAY, message: bytes = b""
    ) -> None:
        """Close every socket, or one session's (shutdown, deleted session), with ``code``."""
        conns = self.connections(session_id)
        await asyncio.gather(*(close_socket(c.ws, code, message) for c in conns))


async def close_socket(
    ws: web.WebSocketResponse, code: int, message: bytes = b"", *, drain: bool = True
) -> None:
    """Close a socket, never waiting more than a second for a peer that does not answer."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=message, drain=drain), timeout=1.0)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        pass
