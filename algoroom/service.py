"""Session operations: the one place that changes a session and tells its sockets.

REST handlers and WebSocket messages both call :class:`SessionService`, so a ``PUT``
and a client ``code_update`` frame behave identically. The service owns no I/O of its
own: storage is a :class:`~algoroom.store.base.SessionStore`, delivery to sockets (in
this process and, with Redis, in every other) is the cluster's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cluster import LocalCluster
from .documents import DocumentManager
from .errors import SessionNotFound
from .messages import code_update_message, execution_message
from .sessions import Session, isoformat

if TYPE_CHECKING:
    from .store.base import SessionStore

BODY_CACHE_ENTRIES = 1024
BODY_CACHE_MAX_BYTES = 16 * 1024

#: Close code sent to the sockets of a deleted session (like HTTP 410 Gone).
CLOSE_SESSION_DELETED = 4410


class SessionService:
    def __init__(self, store: SessionStore, cluster: LocalCluster, documents: DocumentManager) -> None:
        self.store = store
        self.cluster = cluster
        self.documents = documents
        self._bodies: OrderedDict[tuple, bytes] = OrderedDict()

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
        base_revision: int | None = None,
    ) -> Session:
        """Apply the new buffer to the session's document as a minimal diff and save it
        (revision + 1), then send ``code_update`` to every socket.

        ``expected_revision`` refuses a stale edit (If-Match); ``base_revision`` instead
        merges it against the text of that revision, keeping what others changed since.
        """
        session = await self.documents.apply_text(
            session_id, code, language, expected_revision=expected_revision, base_revision=base_revision
        )
        self.cluster.broadcast(session.id, code_update_message(session), revision=session.revision)
        return session

    async def current_code(self, session: Session) -> str:
        """The text a run executes: the live document's if it is loaded here."""
        document = self.documents.loaded(session.id)
        return document.text if document is not None else session.code

    async def delete(self, session_id: str) -> None:
        if not await self.store.delete(session_id):
            raise SessionNotFound(session_id)
        self.documents.forget(session_id)
        await self.cluster.close_session(session_id, CLOSE_SESSION_DELETED, b"session deleted")

    async def share_execution_result(self, session_id: str, result: dict[str, Any], **extra: Any) -> None:
        """Send an ``execution_result`` (client-computed or our own) to every socket."""
        self.cluster.broadcast(
            session_id, execution_message("execution_result", session_id, **extra, executionResult=result)
        )

    def session_body(self, session: Session, participants: int, encode: Callable[[dict], bytes]) -> bytes:
        """The serialised session, cached by everything it shows: repeated GETs of a session
        that has not changed (the common case while people type elsewhere or poll) skip
        building it. Small bodies only, a bounded number of them."""
        key = (session.id, session.revision, session.updated_at, session.language, participants)
        body = self._bodies.get(key)
        if body is None:
            body = encode(self.describe(session, participants))
            if len(body) <= BODY_CACHE_MAX_BYTES:
                self._bodies[key] = body
                if len(self._bodies) > BODY_CACHE_ENTRIES:
                    self._bodies.popitem(last=False)
        return body

    def describe(self, session: Session, participants: int) -> dict[str, Any]:
        """The wire form of a session (``SessionSchema``'s attributes), with the live count."""
        return {
            "id": session.id,
            "code": session.code,
            "language": session.language,
            "created_at": isoformat(session.created_at),
            "updated_at": isoformat(session.updated_at),
            "participants": participants,
            "revision": session.revision,
        }
