"""The one error envelope of the API.

Every failure a client can see, over REST or WebSocket, is an :class:`ApiError`
rendered as ``{"message", "code", "status", "details"?}``. Domain code raises the
specific subclasses below; the HTTP middleware and the WebSocket handler are the only
places that turn them into bytes on the wire.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with a stable machine-readable ``code`` and an HTTP ``status``."""

    status: int = 500
    code: str = "INTERNAL_SERVER_ERROR"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code, "status": self.status}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidJson(ApiError):
    status = 400
    code = "INVALID_JSON"


class ValidationFailed(ApiError):
    status = 422
    code = "VALIDATION_ERROR"

    def __init__(self, details: Any, message: str = "Request validation failed") -> None:
        super().__init__(message, details=details)


class SessionNotFound(ApiError):
    status = 404
    code = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} not found")
        self.session_id = session_id


class RevisionConflict(ApiError):
    """The client edited from a revision that is no longer current."""

    status = 409
    code = "REVISION_CONFLICT"

    def __init__(self, session_id: str, expected: int, current: int, *, status: int = 409) -> None:
        super().__init__(
            f"Session {session_id!r} is at revision {current}, not {expected}",
            status=status,
            details={"expectedRevision": expected, "currentRevision": current},
        )


class PayloadTooLarge(ApiError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class ExecutionBusy(ApiError):
    """Every execution slot and queue place is taken; retry later."""

    status = 429
    code = "EXECUTION_BUSY"

    def __init__(self, retry_after_seconds: int = 1) -> None:
        super().__init__(
            "Too many executions in progress; retry later",
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


class ExecutionUnavailable(ApiError):
    """The sandbox cannot run on this machine (see the server log for the fix)."""

    status = 503
    code = "EXECUTION_UNAVAILABLE"


class UnknownLanguage(ApiError):
    status = 422
    code = "VALIDATION_ERROR"

    def __init__(self, language: str, available: list[str]) -> None:
        super().__init__(
            f"Language {language!r} is not available",
            details={"language": [f"Must be one of: {', '.join(available)}."]},
        )
