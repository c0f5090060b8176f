"""Builders of the server-to-client WebSocket messages (the README's protocol table)."""

from __future__ import annotations

from typing import Any

from .sessions import Session, isoformat, utcnow


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
    """``participant_joined`` or ``participant_left`` with the session's new count."""
    return {
        "type": kind,
        "sessionId": session_id,
        "participants": participants,
        "timestamp": isoformat(utcnow()),
    }


def execution_message(kind: str, session_id: str, **fields: Any) -> dict[str, Any]:
    """``execution_started`` or ``execution_result``."""
    return {"type": kind, "sessionId": session_id, **fields, "timestamp": isoformat(utcnow())}
