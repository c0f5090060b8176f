"""``memory://``: sessions in a dict, gone when the process exits.

For throwaway runs and tests. It still follows the whole contract (validation, revision
rules, idle expiry) so code developed against it behaves the same on a real database.
Every method runs without awaiting anything, so each one is atomic on the event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from algoroom.errors import RevisionConflict, SessionNotFound
from algoroom.sessions import Session, utcnow
from algoroom.store.base import SessionAlreadyExists, SessionStore, as_utc, check_new_session, check_text


@dataclass(slots=True)
class _Entry:
    session: Session
    active_at: datetime
    document: bytes | None = None


class MemoryStore(SessionStore):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._entries: dict[str, _Entry] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def create(self, session: Session) -> None:
        check_new_session(session)
        if session.id in self._entries:
            raise SessionAlreadyExists(session.id)
        session = replace(session, created_at=as_utc(session.created_at), updated_at=as_utc(session.updated_at))
        self._entries[session.id] = _Entry(session, session.updated_at)

    async def get(self, session_id: str) -> Session | None:
        entry = self._entries.get(session_id)
        return entry.session if entry else None

    async def update_code(
        self,
        session_id: str,
        code: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
        now: datetime | None = None,
    ) -> Session:
        check_text(code, "code")
        if language is not None:
            check_text(language, "language")
        now = utcnow() if now is None else as_utc(now)
        entry = self._entries.get(session_id)
        if entry is None:
            raise SessionNotFound(session_id)
        if expected_revision is not None and expected_revision != entry.session.revision:
            raise RevisionConflict(session_id, expected_revision, entry.session.revision)
        entry.session = entry.session.with_code(code, language, now=now)
        entry.active_at = max(entry.active_at, now)
        return entry.session

    async def delete(self, session_id: str) -> bool:
        return self._entries.pop(session_id, None) is not None

    async def touch(self, session_id: str, now: datetime) -> None:
        now = as_utc(now)
        entry = self._entries.get(session_id)
        if entry is not None and now > entry.active_at:
            entry.active_at = now

    async def delete_idle(self, idle_before: datetime, keep: Collection[str] = ()) -> list[str]:
        idle_before = as_utc(idle_before)
        keep = frozenset(keep)
        idle = [
            session_id
            for session_id, entry in self._entries.items()
            if entry.active_at < idle_before and session_id not in keep
        ]
        for session_id in idle:
            del self._entries[session_id]
        return idle

    async def load_document(self, session_id: str) -> bytes | None:
        entry = self._entries.get(session_id)
        return entry.document if entry else None

    async def save_document(
        self,
        session_id: str,
        state: bytes,
        code: str,
        *,
        now: datetime | None = None,
        expected_revision: int | None = None,
    ) -> Session:
        check_text(code, "code")
        now = utcnow() if now is None else as_utc(now)
        entry = self._entries.get(session_id)
        if entry is None:
            raise SessionNotFound(session_id)
        if expected_revision is not None and expected_revision != entry.session.revision:
            raise RevisionConflict(session_id, expected_revision, entry.session.revision)
        entry.document = bytes(state)
        if code != entry.session.code:
            entry.session = entry.session.with_code(code, now=now)
        entry.active_at = max(entry.active_at, now)
        return entry.session
