"""Fan-out of session events to the sockets that watch a session.

:class:`SessionHub` holds, per session, the set of open :class:`Connection` objects.
A broadcast is serialised to JSON and framed once, and the same bytes are written to
every socket that keeps up; a socket that does not gets a bounded backlog and a writer
task of its own, so a slow or stalled reader only ever delays itself. A reader that falls
``queue_size`` messages behind, or whose current send has been stuck for ``send_timeout``
seconds, is disconnected with 1013 (try again later) instead of growing memory without bound.

The hub is a plain class with no HTTP in it: the WebSocket handler registers
connections, the session service broadcasts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from aiohttp import WSCloseCode, web

log = logging.getLogger("algoroom.hub")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

#: Close code for a reader that cannot keep up (RFC 6455 "Try Again Later").
CLOSE_TOO_SLOW = WSCloseCode.TRY_AGAIN_LATER


def ws_frame(payload: str | bytes) -> bytes:
    """One unmasked, uncompressed RFC 6455 frame (text for ``str``, binary for ``bytes``).

    This is byte for byte what a server sends, so a broadcast builds it once and writes the
    same bytes to every socket. Uncompressed messages stay valid when permessage-deflate was
    negotiated (RFC 7692 section 6: RSV1 unset means "not compressed").
    """
    if isinstance(payload, str):
        first, data = 0x81, payload.encode()
    else:
        first, data = 0x82, payload
    size = len(data)
    if size < 126:
        return bytes((first, size)) + data
    if size < 65536:
        return _LEN16(first, 126, size) + data
    return _LEN64(first, 127, size) + data


def _framed(payload: str | bytes) -> bytes:
    """``ws_frame(payload)``, built once when the same object goes to many sockets in a row
    (a Yjs room relays one update object to every peer)."""
    global _last_framed
    last_payload, last_frame = _last_framed
    if payload is last_payload:
        return last_frame
    frame = ws_frame(payload)
    _last_framed = (payload, frame)
    return frame


_last_framed: tuple[object, bytes] = (None, b"")

_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack

#: Unsent bytes a socket's transport may hold before we stop writing to it directly.
_DIRECT_WRITE_LIMIT = 64 * 1024


class Connection:
    """The outgoing side of one WebSocket.

    While the reader keeps up, a message is written straight to the transport: no queue, no
    task, no per-socket framing (a broadcast to 1000 sockets costs about half the server CPU
    of a queue and writer task per socket; see ``bench/bench_server.py``). Once the transport
    holds more than ``_DIRECT_WRITE_LIMIT`` unsent bytes, messages go to a bounded backlog
    that a writer task, created only then, drains with aiohttp's flow control, so a slow
    reader only ever delays itself.
    """

    __slots__ = (
        "ws", "session_id", "wants_json", "_transport", "_backlog", "_writer", "_send_started",
        "_send_timeout", "_queue_size", "_dropped",
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
        self.session_id = session_id
        #: JSON sockets get the hub's JSON events; Yjs sockets only count as participants.
        self.wants_json = wants_json
        self._transport = transport
        self._backlog: deque[str | bytes] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._send_started: float | None = None
        self._send_timeout = send_timeout
        self._queue_size = queue_size
        self._dropped = False

    def send(self, payload: str | bytes) -> None:
        """Send one serialised message (text or binary); see :meth:`send_frame`."""
        self.send_frame(_framed(payload), payload)

    def send_json(self, message: dict[str, Any]) -> None:
        self.send(_dumps(message))

    def send_frame(self, frame: bytes, payload: str | bytes) -> None:
        """Write ``frame`` now if the reader keeps up, else queue ``payload`` behind the others.

        Cuts the connection (1013) if it has fallen ``queue_size`` messages behind or its
        current send has been stuck for ``send_timeout`` seconds.
        """
        transport = self._transport
        if self._dropped or self.ws.closed or transport is None or transport.is_closing():
            return
        backlog = self._backlog
        if backlog is None:
            if transport.get_write_buffer_size() <= _DIRECT_WRITE_LIMIT:  # type: ignore[attr-defined]
                transport.write(frame)  # type: ignore[attr-defined]
                return
            backlog = self._backlog = deque()
            self._writer = asyncio.get_running_loop().create_task(self._drain_backlog(backlog))
        started = self._send_started
        if started is not None and time.monotonic() - started > self._send_timeout:
            self._drop("send stalled")
        elif len(backlog) >= self._queue_size:
            self._drop("send queue full")
        else:
            backlog.append(payload)

    async def _drain_backlog(self, backlog: deque[str | bytes]) -> None:
        ws = self.ws
        try:
            while backlog:
                payload = backlog.popleft()
                self._send_started = time.monotonic()
                if isinstance(payload, str):
                    await ws.send_str(payload)
                else:
                    await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError):
            # The peer went away mid-send; the handler's read loop ends and cleans up.
            pass
        finally:
            self._send_started = None
            if self._backlog is backlog:
                self._backlog = None  # caught up: back to direct writes

    def _drop(self, reason: str) -> None:
        log.info("dropping slow WebSocket reader of session %s: %s", self.session_id, reason)
        self._dropped = True
        self._backlog = None
        if self._writer is not None:
            self._writer.cancel()
        self._writer = asyncio.get_running_loop().create_task(self._close_stalled())

    async def _close_stalled(self) -> None:
        # drain=False: the peer is not reading, so waiting for its buffer would hang.
        await close_socket(self.ws, CLOSE_TOO_SLOW, b"reader too slow", drain=False)
        # If even the close frame could not be written, closing the transport would wait
        # for a flush that never comes: abort it so the handler's read loop ends now.
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    async def flush_and_stop(self, timeout: float = 1.0) -> None:
        """Give backlogged messages a moment to go out, then stop the writer task."""
        writer = self._writer
        if writer is None:
            return
        if not writer.done() and not self._dropped and timeout > 0:
            await asyncio.wait({writer}, timeout=timeout)
        writer.cancel()
        try:
            await writer
        except asyncio.CancelledError:
            pass


class _Room:
    """The sockets of one session, and the newest code revision already sent to them.

    ``members`` is a dict used as an ordered set: a broadcast reaches sockets in the order
    they joined, first come first served, as the Yjs rooms do.
    """

    __slots__ = ("members", "revision")

    def __init__(self) -> None:
        self.members: dict[Connection, None] = {}
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
        room.members[conn] = None
        return len(room.members)

    def leave(self, conn: Connection) -> int:
        """Forget a connection; returns the session's remaining local participant count."""
        room = self._rooms.get(conn.session_id)
        if room is None:
            return 0
        room.members.pop(conn, None)
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
        frame = ws_frame(payload)
        for conn in members:
            if conn.wants_json:
                conn.send_frame(frame, payload)
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
