"""The storage contract every backend fulfils, and the URL factory that picks one.

Why one abstract class: the HTTP handlers, the Yjs rooms and the idle sweeper must behave
identically whichever database an operator chose, and one contract test suite
(``tests/store``) holds every backend to the same rules:

- ``revision`` goes up by exactly one per change, atomically, even with writers in several
  processes; ``expected_revision`` turns a stale write into :class:`RevisionConflict`.
- A write is committed (durable as far as the backend is configured to be) before the
  coroutine returns, so the caller may acknowledge it.
- Any string may be asked for as a session id: an unknown one is ``None`` /
  :class:`SessionNotFound`, never a backend error. Code and language must be valid Unicode
  (no lone surrogates; :class:`ValueError` otherwise); code may contain NUL.
- ``create`` of an id that exists raises :class:`SessionAlreadyExists` (a ``ValueError``):
  sessions never duplicate.
- Timestamps are timezone-aware; they are stored and returned in UTC with microsecond
  precision. A naive datetime is a programming error (:class:`ValueError`).
- ``update_code`` does not touch the stored Yjs document: once a session has a document, the
  collaboration layer owns its code and writes through ``save_document``.

Backends are imported lazily so that ``memory://`` and ``sqlite://`` need neither asyncpg nor
redis installed.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from algoroom.sessions import Session

if TYPE_CHECKING:
    from types import TracebackType

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class SessionAlreadyExists(ValueError):
    """``create`` was given an id that is already stored."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} already exists")
        self.session_id = session_id


class SessionStore(abc.ABC):
    """Persistent home of sessions and their Yjs documents (see the module docstring).

    Usable as ``async with open_store(url) as store:`` (opens, then closes).
    """

    url: str  #: the store's URL with any password redacted: safe to log

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, then create or migrate the schema to the current version."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads. Idempotent."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the backend cannot serve requests right now (readiness probes)."""

    @abc.abstractmethod
    async def create(self, session: Session) -> None:
        """Store a new session as given; :class:`SessionAlreadyExists` if its id is taken."""

    @abc.abstractmethod
    async def get(self, session_id: str) -> Session | None:
        """The stored session, or ``None``."""

    @abc.abstractmethod
    async def update_code(
        self,
        session_id: str,
        code: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
        now: datetime | None = None,
    ) -> Session:
        """Replace the code (and language, if given), revision + 1, ``updated_at = now``.

        Atomic and committed before returning. Raises :class:`SessionNotFound`, or
        :class:`RevisionConflict` when ``expected_revision`` is not the current revision.
        """

    @abc.abstractmethod
    async def delete(self, session_id: str) -> bool:
        """Remove the session and its document; ``False`` if there was none."""

    @abc.abstractmethod
    async def touch(self, session_id: str, now: datetime) -> None:
        """Record activity (someone is connected) so idle expiry spares the session.

        Never moves the activity time backwards; an unknown id is ignored (the session may
        just have been deleted under a departing participant).
        """

    @abc.abstractmethod
    async def delete_idle(self, idle_before: datetime, keep: Collection[str] = ()) -> list[str]:
        """Delete sessions whose last change and last touch are both before ``idle_before``.

        Ids in ``keep`` (sessions with live participants here) are spared. The idleness test
        and the deletion are atomic per session, so a write racing the sweep is never lost
        silently: either it lands first and the session survives, or it finds no session.
        Returns the deleted ids.
        """

    @abc.abstractmethod
    async def load_document(self, session_id: str) -> bytes | None:
        """The stored Yjs document state (a full, compacted update), or ``None``."""

    @abc.abstractmethod
    async def save_document(
        self,
        session_id: str,
        state: bytes,
        code: str,
        *,
        now: datetime | None = None,
        expected_revision: int | None = None,
    ) -> Session:
        """Store the merged Yjs state and its text as the session's code, atomically.

        The revision goes up by one (and ``updated_at`` becomes ``now``) only if the code
        changed; activity is recorded either way. Raises :class:`SessionNotFound`, or
        :class:`RevisionConflict` (changing nothing) when ``expected_revision`` is given and
        is not the current revision: the check and the write are one atomic step, so a
        process saving its replica cannot overwrite a state another process saved since it
        last loaded one (it reloads, merges and retries instead).
        """

    async def __aenter__(self) -> SessionStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def open_store(url: str) -> SessionStore:
    """The (not yet opened) store for ``url``, chosen by its scheme.

    ``memory://``, ``sqlite:///PATH`` (everything after the third slash is the path, so
    ``sqlite:///data/a.db`` is relative and ``sqlite:////var/lib/a.db`` absolute),
    ``postgresql://`` / ``postgres://`` and ``redis://`` / ``rediss://`` / ``unix://``.
    """
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme == "memory":
        from algoroom.store.memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from algoroom.store.sqlite import SQLiteStore

        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        from algoroom.store.postgres import PostgresStore

        return PostgresStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from algoroom.store.redis import RedisStore

        return RedisStore(url)
    raise ValueError(
        f"Unsupported database URL {redact_url(url)!r}: the scheme must be one of "
        "memory://, sqlite:///PATH, postgresql://, redis://"
    )


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and ``/ready``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    userinfo = f"{parts.username}:***" if parts.username else ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc}"))


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is refused rather than guessed."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: store timestamps must be timezone-aware")
    if moment.tzinfo is timezone.utc:
        return moment
    return moment.astimezone(timezone.utc)


def to_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch: an exact, sortable integer encoding."""
    return (as_utc(moment) - EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def check_text(value: str, what: str) -> None:
    """Refuse text no backend can store (lone surrogates), with a message saying why."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{what} is not valid Unicode (lone surrogate at {exc.start})") from None


def storable_id(session_id: str) -> bool:
    """Whether every backend can hold this id (valid Unicode, no NUL: PostgreSQL's limit).

    Lookups of any other id answer "unknown" without asking the backend; creating one is a
    :class:`ValueError`.
    """
    if session_id.isascii():
        return "\x00" not in session_id
    try:
        session_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in session_id


def check_new_session(session: Session) -> None:
    if not storable_id(session.id):
        raise ValueError(f"session id {session.id!r} cannot be stored (NUL or lone surrogate)")
    check_text(session.code, "code")
    check_text(session.language, "language")
    if "\x00" in session.language:
        raise ValueError("language may not contain NUL")
    as_utc(session.created_at)
    as_utc(session.updated_at)
