"""The session record: what a shared coding session is, independent of storage and wire."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp we store or send is UTC)."""
    return datetime.now(timezone.utc)


def isoformat(moment: datetime) -> str:
    """ISO-8601 with a ``Z`` suffix, millisecond precision: what browsers' Date parses."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Session:
    """One stored session. ``participants`` is not stored: it is the live socket count."""

    id: str
    code: str
    language: str
    created_at: datetime
    updated_at: datetime
    revision: int = 0

    @classmethod
    def new(cls, language: str) -> Session:
        now = utcnow()
        return cls(id=str(uuid.uuid4()), code="", language=language, created_at=now, updated_at=now)

    def with_code(self, code: str, language: str | None = None, *, now: datetime | None = None) -> Session:
        """The next revision of this session after a code change."""
        # The constructor, not dataclasses.replace(): this runs on every edit, and replace()
        # inspects the fields each time.
        return Session(
            self.id, code, language or self.language, self.created_at, now or utcnow(), self.revision + 1
        )
