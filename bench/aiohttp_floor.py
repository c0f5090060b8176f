"""The floor of algoroom's stack: the benchmarked endpoints on bare aiohttp, nothing else.

Dev-only, like ``fastapi_seed.py``; ``bench/bench_server.py --floor`` runs it as a third
server. It answers with algoroom's wire shapes but leaves out everything algoroom must do
on top of aiohttp: no middleware (CORS, error envelope, body limit), no marshmallow
validation, no Yjs document, no store, no revision checks, no slow-reader protection. A
broadcast is serialised once and written straight to each socket's transport, as
algoroom's hub does. Whatever this server measures is the least any aiohttp application
with these endpoints can cost on the machine, so it shows how much of a figure is
algoroom's own work and how much is aiohttp, uvloop and the kernel.

    python bench/aiohttp_floor.py --port 8002
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime, timezone

from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover - algoroom runs on uvloop when it is installed
    uvloop = None

SESSIONS = web.AppKey("sessions", dict)
ROOMS = web.AppKey("rooms", dict)


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def frame(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 65536:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + data


def broadcast(request: web.Request, session_id: str, message: dict) -> None:
    data = frame(message)
    for transport in tuple(request.app[ROOMS].get(session_id, ())):
        transport.write(data)


def described(request: web.Request, session: dict) -> web.Response:
    participants = len(request.app[ROOMS].get(session["id"], ()))
    return web.json_response({**session, "participants": participants})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


async def create_session(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    stamp = now()
    session = {
        "id": str(uuid.uuid4()), "code": "", "language": body.get("language", "javascript"),
        "createdAt": stamp, "updatedAt": stamp, "revision": 0,
    }
    request.app[SESSIONS][session["id"]] = session
    return web.json_response({**session, "participants": 0}, status=201)


async def get_session(request: web.Request) -> web.Response:
    return described(request, request.app[SESSIONS][request.match_info["sessionId"]])


async def update_code(request: web.Request) -> web.Response:
    session = request.app[SESSIONS][request.match_info["sessionId"]]
    body = await request.json()
    session.update(code=body["code"], updatedAt=now(), revision=session["revision"] + 1)
    broadcast(request, session["id"], {
        "type": "code_update", "sessionId": session["id"], "code": session["code"],
        "language": session["language"], "revision": session["revision"], "timestamp": session["updatedAt"],
    })
    return described(request, session)


async def socket(request: web.Request) -> web.WebSocketResponse:
    session_id = request.match_info["sessionId"]
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    room = request.app[ROOMS].setdefault(session_id, set())
    transport = request.transport  # kept: the request forgets it once the peer is gone
    room.add(transport)
    kind = "participant_joined"
    try:
        broadcast(request, session_id, {"type": kind, "sessionId": session_id, "participants": len(room)})
        async for _ in ws:
            pass
    finally:
        room.discard(transport)
        kind = "participant_left"
        broadcast(request, session_id, {"type": kind, "sessionId": session_id, "participants": len(room)})
    return ws


def create_app() -> web.Application:
    app = web.Application()
    app[SESSIONS], app[ROOMS] = {}, {}
    app.router.add_get("/health", health)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions/{sessionId}", get_session)
    app.router.add_put("/sessions/{sessionId}/code", update_code)
    app.router.add_get("/ws/sessions/{sessionId}", socket)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args()
    loop = uvloop.new_event_loop() if uvloop is not None else None
    web.run_app(create_app(), host=args.host, port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
