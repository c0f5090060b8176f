"""Session operations: the one place that changes a session and tells its sockets.

REST handlers and WebSocket messages both call :class:`SessionService`, so a ``PUT``
and a client ``code_update`` frame behave identically. The service owns no I/O of its
own: storage is a :class:`~algoroom.store.base.SessionStore`, fan-out is the
:class:`~algoroom.hub.SessionHub`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import SessionNotFound
from .hub import SessionHub
from .sessions import Session, isoformat, utcnow

if TYPE_CHECKING:
    from .store.base import SessionStore


class SessionService:
    def __init__(self, store: SessionStore, hub: SessionHub) -> None:
        self.store = store
        self.hub = hub

    async def create(self, language: str) -> Session:
        session = Session.new(language)
        await self.store.create(session)
        return session

    async def get(self, session_id: str) -> Session:
        session = await self.store.get(session_id)
        if session is None:
            raise SessionNotFound(session_id)
        return session

    async def update_code(
        self,
        session_id: str,
        code: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
    ) -> Session:
        """Store the new buffer (revision + 1), then send ``code_update`` to every socket."""
        session = await self.store.update_code(
            session_id, code, language, expected_revision=expected_revision
        )
        self.hub.broadcast(session.id, code_update_message(session), revision=session.revision)
        return session

    async def share_execution_result(self, session_id: str, result: dict[str, Any], **extra: Any) -> None:
        """Send an ``execution_result`` (client-computed or our own) to every socket."""
        await self.get(session_id)
        self.hub.broadcast(
            session_id,
            {
                "type": "execution_result",
                "sessionId": session_id,
                **extra,
                "executionResult": result,
                "timestamp": isoformat(utcnow()),
            },
        )

    def participants(self, session_id: str) -> int:
        return self.hub.count(session_id)

    def view(self, session: Session) -> dict[str, Any]:
        """The wire form of a session (``SessionSchema`` dumps it)."""
        return {
            "id": session.id,
            "code": session.code,
            "language": session.language,
            "created_at": isoformat(session.created_at),
            "updated_at": isoformat(session.updated_at),
            "participants": self.participants(session.id),
            "revision": session.revision,
        }


def code_update_message(session: Session) -> dict[str, Any]:
    return {
        "type": "code_update",
        "sessionId": session.id,
        "code": session.code,
        "language": session.language,
        "revision": session.revision,
        "timestamp": isoformat(session.updated_at),
    }


def participant_message(kind: str, session_id: str, participants: int) -> dict[str, Any]:
    return {
        "type": kind,
        "sessionId": session_id,
        "participants": participants,
        "timestamp": isoformat(utcnow()),
    }
