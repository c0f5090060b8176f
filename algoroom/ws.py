"""The JSON WebSocket endpoint ``/ws/sessions/{sessionId}``.

One handler task per socket reads frames; outgoing messages go through the socket's
:class:`~algoroom.hub.Connection` queue. Client frames are dispatched by ``type``
through a table of (handler, schema); anything else gets an ``error`` reply in the
same envelope as REST errors and changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, hdrs, web
from aiohttp_apispec import docs
from marshmallow import Schema, ValidationError

from .errors import ApiError, ValidationFailed
from .hub import Connection
from .keys import SERVICE, SETTINGS
from .messages import participant_message
from .middleware import normalise_messages
from .rest import errors
from .schemas import ClientCodeUpdateSchema, ClientMessageSchema
from .service import SessionService
from .settings import Settings

log = logging.getLogger("algoroom.ws")

#: Close code for an unknown session (policy violation), as the seed's clients expect.
CLOSE_UNKNOWN_SESSION = WSCloseCode.POLICY_VIOLATION

MessageHandler = Callable[[SessionService, Connection, dict[str, Any]], Awaitable[None]]


async def _on_ping(service: SessionService, conn: Connection, data: dict[str, Any]) -> None:
    conn.send_json({"type": "pong"})


async def _on_code_update(service: SessionService, conn: Connection, data: dict[str, Any]) -> None:
    await service.update_code(
        conn.session_id,
        data["code"],
        data.get("language"),
        base_revision=data.get("base_revision"),
    )


#: type -> (handler, schema of the whole frame)
DISPATCH: dict[str, tuple[MessageHandler, Schema]] = {
    "ping": (_on_ping, ClientMessageSchema()),
    "code_update": (_on_code_update, ClientCodeUpdateSchema()),
}
_envelope = ClientMessageSchema()


def origin_allowed(request: web.Request) -> bool:
    """Browsers always send ``Origin``; other clients may omit it and are allowed."""
    origin = request.headers.get(hdrs.ORIGIN)
    return origin is None or origin in request.app[SETTINGS].cors_origins


@docs(
    tags=["websocket"],
    summary="JSON event stream of a session (WebSocket)",
    description="Upgrade to a WebSocket of JSON text frames: participant_joined/left, code_update, "
    "execution_started/result, error; clients may send code_update and ping. See the README. "
    "An unknown session is closed with 1008, a deleted one with 4410.",
    responses={"101": {"description": "Switching Protocols: the WebSocket is open."}},
)
@errors(403)
async def session_socket(request: web.Request) -> web.StreamResponse:
    settings, service = request.app[SETTINGS], request.app[SERVICE]
    session_id = request.match_info["sessionId"]
    if not origin_allowed(request):
        raise ApiError("Origin not allowed", status=403, code="ORIGIN_NOT_ALLOWED")

    ws = open_socket(settings)
    await ws.prepare(request)
    if await service.store.get(session_id) is None:
        await ws.close(code=CLOSE_UNKNOWN_SESSION, message=b"session not found")
        return ws

    conn = await join_session(request, new_connection(request, ws, session_id))
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await _handle_text(service, conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                _reply_error(conn, ApiError("Binary frames are not supported", status=400, code="BINARY_NOT_SUPPORTED"))
            elif msg.type is WSMsgType.ERROR:
                log.info("socket of session %s failed: %s", session_id, ws.exception())
    finally:
        await leave_session(request, conn)
    return ws


def open_socket(settings: Settings) -> web.WebSocketResponse:
    """A server socket that declines permessage-deflate.

    Our outgoing messages are framed once and written uncompressed to every socket, so the
    extension would only make clients deflate their small frames (a Yjs keystroke is ~20
    bytes) and us inflate them, and hold a zlib context per socket. Node's ``ws`` server,
    which the y-websocket reference runs on, declines it by default too.
    """
    return web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat_seconds, max_msg_size=settings.ws_max_message_bytes, compress=False
    )


def new_connection(
    request: web.Request, ws: web.WebSocketResponse, session_id: str, *, wants_json: bool = True
) -> Connection:
    """The outgoing side of an open socket, with the app's queue limits."""
    settings = request.app[SETTINGS]
    return Connection(
        ws,
        session_id,
        queue_size=settings.ws_send_queue,
        send_timeout=settings.ws_send_timeout_seconds,
        transport=request.transport,
        wants_json=wants_json,
    )


async def join_session(request: web.Request, conn: Connection) -> Connection:
    """Make a connection a participant: counted everywhere and announced to everyone.

    Pair with :func:`leave_session` in a ``finally`` (plain functions rather than a context
    manager: every idle socket would keep the manager's frame alive)."""
    cluster = request.app[SERVICE].cluster
    count = await cluster.join(conn)
    cluster.broadcast(conn.session_id, participant_message("participant_joined", conn.session_id, count))
    return conn


async def leave_session(request: web.Request, conn: Connection) -> None:
    cluster = request.app[SERVICE].cluster
    remaining = await cluster.leave(conn)
    cluster.broadcast(conn.session_id, participant_message("participant_left", conn.session_id, remaining))
    await conn.flush_and_stop(timeout=0)


async def _handle_text(service: SessionService, conn: Connection, raw: str) -> None:
    try:
        frame = json.loads(raw)
    except ValueError:
        _reply_error(conn, ApiError("Frame is not valid JSON", status=400, code="INVALID_JSON"))
        return
    try:
        kind = _envelope.load(frame)["type"] if isinstance(frame, dict) else None
        if kind is None:
            raise ValidationFailed({"body": ["A message must be a JSON object with a `type`."]})
        entry = DISPATCH.get(kind)
        if entry is None:
            raise ApiError(f"Unknown message type {kind!r}", status=400, code="UNKNOWN_MESSAGE_TYPE")
        handler, schema = entry
        try:
            data = schema.load(frame)
        except ValidationError as error:
            raise ValidationFailed(normalise_messages(error.messages)) from None
        await handler(service, conn, data)
    except ValidationError as error:
        _reply_error(conn, ValidationFailed(normalise_messages(error.messages)))
    except ApiError as error:
        _reply_error(conn, error)
    except Exception:
        log.exception("unhandled error handling a frame of session %s", conn.session_id)
        _reply_error(conn, ApiError("Internal server error"))


def _reply_error(conn: Connection, error: ApiError) -> None:
    conn.send_json({"type": "error", **error.to_dict()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ws/sessions/{sessionId}", session_socket, allow_head=False)
