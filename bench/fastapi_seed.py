"""The seed's stack, rebuilt for comparison only: FastAPI + uvicorn, sessions in memory.

Dev-only (see ``bench/requirements.txt``); ``bench/bench_server.py`` starts it as a
subprocess next to algoroom and drives both with the same load. It follows the shape of
the seed backend (``app/database.py`` dict repository, Pydantic v2 models with camelCase
aliases, a ``ConnectionManager`` with a list of sockets per session whose ``broadcast``
awaits ``send_json`` socket after socket) and answers with the same wire shape as
algoroom (``revision`` and ``updatedAt`` included) so both servers do the same work per
request.

    python bench/fastapi_seed.py --port 8001

uvicorn runs with its defaults (uvloop, httptools and the websockets protocol when
installed); only the access log is off, as it is in algoroom.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import datetime, timezone
from enum import Enum

import uvicorn
from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

CORS_ORIGINS = ["http://localhost:5173", "http://localhost:3000"]


class Language(str, Enum):
    javascript = "javascript"
    python = "python"


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CreateSessionRequest(CamelModel):
    language: Language = Language.javascript


class UpdateCodeRequest(CamelModel):
    code: str
    language: Language | None = None


class Session(CamelModel):
    id: str
    code: str
    language: Language
    created_at: datetime
    updated_at: datetime
    participants: int = 0
    revision: int = 0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SessionRepository:
    """The seed's ``database.py``: a dict of sessions."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def create(self, language: Language) -> Session:
        now = utcnow()
        session = Session(id=str(uuid.uuid4()), code="", language=language, created_at=now, updated_at=now)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)


class ConnectionManager:
    """The seed's ``websocket.py``: sockets per session, broadcast one ``send_json`` at a time."""

    def __init__(self) -> None:
        self.active_connections: dict[str, list[WebSocket]] = {}

    async def connect(self, websocket: WebSocket, session_id: str) -> None:
        await websocket.accept()
        self.active_connections.setdefault(session_id, []).append(websocket)

    def disconnect(self, websocket: WebSocket, session_id: str) -> None:
        sockets = self.active_connections.get(session_id, [])
        if websocket in sockets:
            sockets.remove(websocket)
        if not sockets:
            self.active_connections.pop(session_id, None)

    def count(self, session_id: str) -> int:
        return len(self.active_connections.get(session_id, []))

    async def broadcast(self, session_id: str, message: dict) -> None:
        for connection in list(self.active_connections.get(session_id, [])):
            try:
                await connection.send_json(message)
            except Exception:
                self.disconnect(connection, session_id)


repository = SessionRepository()
manager = ConnectionManager()

app = FastAPI(title="Algoroom API (seed stack, benchmark copy)")
app.add_middleware(
    CORSMiddleware,
    allow_origins=CORS_ORIGINS,
    allow_credentials=True,
    allow_methods=["*"],
    allow_headers=["*"],
)


def view(session: Session) -> Session:
    return session.model_copy(update={"participants": manager.count(session.id)})


def timestamp() -> str:
    return utcnow().isoformat()


@app.get("/health")
async def health() -> dict:
    return {"status": "healthy"}


@app.post("/sessions", response_model=Session, status_code=201)
async def create_session(request: CreateSessionRequest | None = None) -> Session:
    return repository.create(request.language if request else Language.javascript)


@app.get("/sessions/{session_id}", response_model=Session)
async def get_session(session_id: str) -> Session:
    session = repository.get(session_id)
    if session is None:
        raise HTTPException(status_code=404, detail=f"Session {session_id} not found")
    return view(session)


@app.put("/sessions/{session_id}/code", response_model=Session)
async def update_code(session_id: str, request: UpdateCodeRequest) -> Session:
    session = repository.get(session_id)
    if session is None:
        raise HTTPException(status_code=404, detail=f"Session {session_id} not found")
    session.code = request.code
    if request.language is not None:
        session.language = request.language
    session.updated_at = utcnow()
    session.revision += 1
    await manager.broadcast(
        session_id,
        {
            "type": "code_update",
            "sessionId": session_id,
            "code": session.code,
            "language": session.language.value,
            "revision": session.revision,
            "timestamp": timestamp(),
        },
    )
    return view(session)


@app.websocket("/ws/sessions/{session_id}")
async def session_socket(websocket: WebSocket, session_id: str) -> None:
    if repository.get(session_id) is None:
        await websocket.close(code=1008)
        return
    await manager.connect(websocket, session_id)
    await manager.broadcast(
        session_id,
        {
            "type": "participant_joined",
            "sessionId": session_id,
            "participants": manager.count(session_id),
            "timestamp": timestamp(),
        },
    )
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket, session_id)
        await manager.broadcast(
            session_id,
            {
                "type": "participant_left",
                "sessionId": session_id,
                "participants": manager.count(session_id),
                "timestamp": timestamp(),
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
