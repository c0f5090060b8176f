"""REST handlers: thin translations between HTTP and :class:`SessionService`.

Each handler's decorators declare its request and response schemas; the validation
middleware and the OpenAPI document both read them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp import web
from aiohttp_apispec import docs, request_schema, response_schema

from .errors import ApiError, RevisionConflict
from .keys import SERVICE
from .schemas import (
    CreateSessionSchema,
    ErrorSchema,
    ExecutionResultSchema,
    HealthSchema,
    ReadySchema,
    SessionSchema,
    UpdateCodeSchema,
)
from .service import CLOSE_SESSION_DELETED

_session_schema = SessionSchema()
_execution_result_schema = ExecutionResultSchema()
_health_body = HealthSchema().dump({"status": "healthy"})

_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON body (`INVALID_JSON`).",
    403: "A browser `Origin` that is not allowed (`ORIGIN_NOT_ALLOWED`).",
    404: "No such session (`SESSION_NOT_FOUND`).",
    409: "The edit's base revision is stale (`REVISION_CONFLICT`).",
    412: "`If-Match` names a stale revision (`REVISION_CONFLICT`).",
    413: "Body larger than the configured limit (`PAYLOAD_TOO_LARGE`).",
    422: "The body does not match the schema (`VALIDATION_ERROR`, per-field `details`).",
    429: "Every execution slot is busy (`EXECUTION_BUSY`, see `Retry-After`).",
    503: "Code execution is unavailable on this server (`EXECUTION_UNAVAILABLE`).",
}


def errors(*statuses: int) -> Callable:
    """Document the error envelope for each status a handler can answer with."""

    def wrapper(func: Callable) -> Callable:
        for status in (*statuses, 500):
            description = _ERROR_DESCRIPTIONS.get(status, "Unexpected server error.")
            func = response_schema(ErrorSchema, status, description=description)(func)
        return func

    return wrapper


async def session_response(service, session, status: int = 200) -> web.Response:
    participants = await service.cluster.participants(session.id)
    return web.Response(
        body=service.session_body(session, participants, _encode_session),
        status=status,
        content_type="application/json",
        headers={"ETag": f'"{session.revision}"'},
    )


def _encode_session(wire: dict) -> bytes:
    """``SessionSchema``'s renaming (attribute -> camelCase), without its per-field machinery:
    the fields are plain str/int and this is the hottest path."""
    return _dumps({name: wire[attr] for attr, name in _SESSION_WIRE_KEYS}).encode()


#: (attribute, wire name) of every SessionSchema field.
_SESSION_WIRE_KEYS = tuple((name, field.data_key or name) for name, field in _session_schema.fields.items())
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@docs(tags=["health"], summary="Liveness check")
@response_schema(HealthSchema, 200, description="The server is up.")
@errors()
async def health(request: web.Request) -> web.Response:
    return web.json_response(_health_body)


@docs(
    tags=["health"],
    summary="Readiness, per dependency",
    description="503 when the session store cannot serve; a lost Redis only degrades "
    "cross-process fan-out, so it reports `degraded` with 200.",
)
@response_schema(ReadySchema, 200, description="Ready (possibly degraded).")
@response_schema(ReadySchema, 503, description="Not ready: the store is failing.")
async def ready(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    checks: dict[str, dict] = {}
    try:
        await asyncio.wait_for(service.store.ping(), timeout=2)
        checks["store"] = {"ok": True, "url": service.store.url}
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        checks["store"] = {"ok": False, "url": service.store.url, "error": f"{type(error).__name__}: {error}"}
    cluster = service.cluster.status()
    checks["cluster"] = cluster
    status = "ready"
    if not checks["store"]["ok"]:
        status = "unavailable"
    elif cluster.get("ok") is False:
        status = "degraded"
    body = ReadySchema().dump({"status": status, "checks": checks})
    return web.json_response(body, status=503 if status == "unavailable" else 200)


@docs(tags=["sessions"], summary="Create a coding session")
@request_schema(CreateSessionSchema)
@response_schema(SessionSchema, 201, description="The new session.")
@errors(400, 413, 422)
async def create_session(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    session = await service.create(request["data"]["language"])
    return await session_response(service, session, status=201)


@docs(tags=["sessions"], summary="Get a session")
@response_schema(SessionSchema, 200, description="The session; `ETag` is its revision.")
@errors(404)
async def get_session(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    session = await service.get(request.match_info["sessionId"])
    return await session_response(service, session)


@docs(
    tags=["sessions"],
    summary="Replace a session's code",
    description="Every socket of the session receives a `code_update` with the new revision. "
    "To avoid lost updates, send `If-Match: \"<revision>\"` (412 when stale) or a "
    "`baseRevision` (409 when stale).",
    parameters=[
        {
            "in": "header",
            "name": "If-Match",
            "required": False,
            "schema": {"type": "string"},
            "description": 'The ETag (revision) the edit was based on, e.g. `"3"`.',
        }
    ],
)
@request_schema(UpdateCodeSchema, required=True)
@response_schema(SessionSchema, 200, description="The updated session.")
@errors(400, 404, 409, 412, 413, 422)
async def update_code(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = request["data"]
    session_id = request.match_info["sessionId"]
    if_match = parse_if_match(request.headers.get("If-Match"))
    try:
        session = await service.update_code(
            session_id,
            data["code"],
            data.get("language"),
            expected_revision=if_match,
            base_revision=data.get("base_revision"),
        )
    except RevisionConflict as conflict:
        if if_match is not None:
            conflict.status = 412
        raise
    return await session_response(service, session)


def parse_if_match(value: str | None) -> int | None:
    """The revision named by an ``If-Match`` header (``"3"``, ``W/"3"`` or ``3``); ``*`` is none."""
    if value is None or value.strip() == "*":
        return None
    tag = value.split(",")[0].strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiError("If-Match must name a revision, e.g. \"3\"", status=400, code="INVALID_IF_MATCH")
    return int(tag)


@docs(
    tags=["sessions"],
    summary="Delete a session",
    description=f"Its sockets are closed with code {CLOSE_SESSION_DELETED} (session deleted).",
)
@response_schema(None, 204, description="Deleted.")
@errors(404)
async def delete_session(request: web.Request) -> web.Response:
    await request.app[SERVICE].delete(request.match_info["sessionId"])
    return web.Response(status=204)


@docs(
    tags=["execution"],
    summary="Share a client-computed execution result",
    description="For frontends that run code in the browser: every socket of the session "
    "receives an `execution_result` message carrying this result.",
)
@request_schema(ExecutionResultSchema, required=True)
@response_schema(None, 204, description="Shared with the session.")
@errors(400, 404, 413, 422)
async def share_execution_result(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    result = _execution_result_schema.dump(request["data"])
    session = await service.get(request.match_info["sessionId"])
    await service.share_execution_result(session.id, result)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_get("/ready", ready, allow_head=False)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions/{sessionId}", get_session, allow_head=False)
    app.router.add_delete("/sessions/{sessionId}", delete_session)
    app.router.add_put("/sessions/{sessionId}/code", update_code)
    app.router.add_post("/sessions/{sessionId}/execution-result", share_execution_result)
