"""Marshmallow schemas: the single description of every payload.

Request bodies are validated with these schemas, responses are dumped through them,
and the OpenAPI document is generated from them, so the three can never disagree.
Wire names are camelCase, as the seed's frontend expects.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from .languages import DEFAULT_LANGUAGE, LANGUAGES

STRICT_BOOL = {"truthy": {True}, "falsy": {False}}


def valid_unicode(value: str) -> None:
    """Reject lone surrogates (``"\\ud800"`` is valid JSON but not text anyone can store or send)."""
    if value.isascii():
        return  # the common case, without encoding the whole buffer once more
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValidationError(f"Not valid Unicode text (lone surrogate at index {error.start}).") from None


def text(**kwargs) -> fields.String:
    """A string field that only accepts real Unicode text."""
    extra = kwargs.pop("validate", None)
    validators = [valid_unicode] + (extra if isinstance(extra, list) else [extra] if extra else [])
    return fields.String(validate=validators, **kwargs)


def no_nul(value: str) -> None:
    """Reject NUL, which a program's argv cannot carry (C strings end at it)."""
    if "\0" in value:
        raise ValidationError(f"Must not contain NUL (at index {value.index(chr(0))}).")


def language_field(**kwargs) -> fields.String:
    return fields.String(
        validate=validate.OneOf(sorted(LANGUAGES)),
        metadata={"description": "Language id, one of `GET /languages`.", "example": "python"},
        **kwargs,
    )


class ErrorSchema(Schema):
    message = fields.String(required=True, metadata={"example": "Session 'x' not found"})
    code = fields.String(required=True, metadata={"example": "SESSION_NOT_FOUND"})
    status = fields.Integer(required=True, metadata={"example": 404})
    details = fields.Raw(
        metadata={"description": "Per-field messages for validation errors: {field: [message]}."}
    )


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "healthy"})


class ReadySchema(Schema):
    status = fields.String(
        required=True, validate=validate.OneOf(["ready", "degraded", "unavailable"]), metadata={"example": "ready"}
    )
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(),
        required=True,
        metadata={"description": "Per dependency: `ok`, and `error` when failing."},
    )


class CreateSessionSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # as the seed (pydantic) did: extra fields are ignored, not refused

    language = language_field(load_default=DEFAULT_LANGUAGE)


class UpdateCodeSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # as the seed (pydantic) did: extra fields are ignored, not refused

    code = text(required=True, metadata={"description": "The whole buffer; may be empty."})
    language = language_field()
    base_revision = fields.Integer(
        data_key="baseRevision",
        strict=True,
        validate=validate.Range(min=0),
        metadata={
            "description": "The revision this edit started from: the change is merged into the current "
            "text instead of replacing edits made since (409 if that revision is too old to merge)."
        },
    )


class SessionSchema(Schema):
    id = fields.String(required=True, metadata={"format": "uuid"})
    code = fields.String(required=True)
    language = fields.String(required=True)
    created_at = fields.String(required=True, data_key="createdAt", metadata={"format": "date-time"})
    updated_at = fields.String(required=True, data_key="updatedAt", metadata={"format": "date-time"})
    participants = fields.Integer(required=True, metadata={"description": "Sockets open on the session."})
    revision = fields.Integer(required=True, metadata={"description": "+1 on every code change."})


class ExecutionResultSchema(Schema):
    """A result computed by a client (the browser runs the code) and shared with the session."""

    class Meta:
        unknown = EXCLUDE

    success = fields.Boolean(required=True, **STRICT_BOOL)
    output = text(required=True)
    error = text(allow_none=True, load_default=None)
    execution_time = fields.Float(
        required=True,
        data_key="executionTime",
        validate=validate.Range(min=0),
        metadata={"description": "Wall time of the run in milliseconds."},
    )


# --- WebSocket messages (documented in the README; validated on receipt) -------------------


class ClientMessageSchema(Schema):
    """The envelope every client frame must have; the type picks the handler."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True)


class ClientCodeUpdateSchema(UpdateCodeSchema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True)


class ExecuteRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    stdin = text(load_default="", validate=validate.Length(max=1024 * 1024))
    args = fields.List(
        text(validate=[validate.Length(max=4096), no_nul]), load_default=list, validate=validate.Length(max=64)
    )
    timeout_ms = fields.Integer(
        data_key="timeoutMs",
        strict=True,
        validate=validate.Range(min=1),
        metadata={"description": "Wall-clock limit in ms; clamped to the server's maximum."},
    )


class ExecutionReportSchema(ExecutionResultSchema):
    """A result of our own sandboxed run: the seed's fields plus the detail."""

    execution_time = fields.Integer(
        required=True, data_key="executionTime", metadata={"description": "Wall time of the run in ms."}
    )
    status = fields.String(
        required=True,
        validate=validate.OneOf(
            ["ok", "runtime_error", "compile_error", "timeout", "memory_limit", "output_limit", "killed",
             "internal_error"]
        ),
    )
    stdout = fields.String(required=True)
    stderr = fields.String(required=True)
    exit_code = fields.Integer(allow_none=True, data_key="exitCode")
    signal = fields.String(allow_none=True, metadata={"example": "SIGKILL"})
    compile_output = fields.String(allow_none=True, data_key="compileOutput")
    cpu_time_ms = fields.Integer(data_key="cpuTimeMs")
    memory_kb = fields.Integer(data_key="memoryKb", metadata={"description": "Peak memory of the run."})
    truncated = fields.Boolean(required=True, metadata={"description": "Output was cut at the cap."})
    language = fields.String(required=True)
    version = fields.String(allow_none=True)
    warning = fields.String(allow_none=True, metadata={"description": "Set when running without the sandbox."})


class LanguageSchema(Schema):
    id = fields.String(required=True, metadata={"example": "python"})
    name = fields.String(required=True, metadata={"example": "Python 3"})
    version = fields.String(required=True, metadata={"example": "3.11.2"})
    aliases = fields.List(fields.String(), load_default=list)


class LanguagesSchema(Schema):
    execution = fields.Dict(
        required=True,
        metadata={"description": "`available` (bool), `sandboxed` (bool), and `reason` when unavailable."},
    )
    languages = fields.List(fields.Nested(LanguageSchema), required=True)
