"""``/yjs/{sessionId}``: the y-websocket protocol, so stock Yjs editors join a session.

``new WebsocketProvider('ws://host/yjs', sessionId, doc)`` just works: the handler feeds
binary frames to the session's :class:`~algoroom.yjs.YRoom` and sends what the room
answers through the socket's bounded queue. A Yjs connection is a participant like a
JSON socket (``participant_joined``/``participant_left``), but receives only Yjs frames.
A frame the protocol does not allow closes that connection with 1003 (unsupported data);
nobody else is affected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_apispec import docs

from .errors import ApiError
from .keys import SERVICE, SETTINGS
from .rest import errors
from .tasks import owned_task
from .ws import join_session, leave_session, new_connection, open_socket, origin_allowed
from .yjs import ProtocolError

log = logging.getLogger("algoroom.collab")

#: Close code for an unknown session. y-websocket reconnects forever after 1008 but gives
#: up on 4400-4499 ("4404": not found), so a stale tab stops hammering the server.
CLOSE_UNKNOWN_SESSION = 4404

#: How often idle peers get a keepalive and unused documents are unloaded.
UPKEEP_SECONDS = 5.0


@docs(
    tags=["websocket"],
    summary="Yjs document of a session (y-websocket protocol)",
    description="Binary y-websocket frames (sync, awareness); use `new WebsocketProvider(base + '/yjs', "
    "sessionId, doc)`. An unknown session is closed with 4404, a malformed frame with 1003.",
    responses={"101": {"description": "Switching Protocols: the WebSocket is open."}},
)
@errors(403)
async def yjs_socket(request: web.Request) -> web.StreamResponse:
    settings, service = request.app[SETTINGS], request.app[SERVICE]
    session_id = request.match_info["sessionId"]
    if not origin_allowed(request):
        raise ApiError("Origin not allowed", status=403, code="ORIGIN_NOT_ALLOWED")
    ws = open_socket(settings)
    await ws.prepare(request)
    documents = service.documents
    conn = new_connection(request, ws, session_id, wants_json=False)
    try:
        # Joined in the order sockets arrive, even while the document loads: the room
        # relays to its peers in join order, first come first served.
        room = (await documents.open(session_id, join=conn)).room
    except ApiError:
        await ws.close(code=CLOSE_UNKNOWN_SESSION, message=b"session not found")
        return ws
    except BaseException:
        documents.leave(session_id, conn)
        raise
    try:
        await join_session(request, conn)
    except BaseException:
        room.leave(conn)
        raise
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                try:
                    room.receive(conn, msg.data)
                except ProtocolError as error:
                    log.info("closing a Yjs socket of session %s: %s", session_id, error)
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"invalid Yjs message")
            elif msg.type is WSMsgType.TEXT:
                await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"Yjs frames are binary")
    finally:
        room.leave(conn)
        await leave_session(request, conn)
    return ws


async def _upkeep(app: web.Application) -> None:
    documents = app[SERVICE].documents
    while True:
        await asyncio.sleep(UPKEEP_SECONDS)
        documents.keepalive()
        try:
            await documents.sweep()
        except Exception:  # noqa: BLE001 - retried at the next round
            log.exception("document sweep failed")


async def upkeep_ctx(app: web.Application) -> AsyncIterator[None]:
    async with owned_task(_upkeep(app), name="algoroom-documents-upkeep"):
        yield


def add_routes(app: web.Application) -> None:
    app.router.add_get("/yjs/{sessionId}", yjs_socket, allow_head=False)
