"""REST handlers: thin translations between HTTP and :class:`SessionService`.

Each handler's decorators declare its request and response schemas; the validation
middleware and the OpenAPI document both read them.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp_apispec import docs, request_schema, response_schema

from .keys import SERVICE
from .schemas import (
    CreateSessionSchema,
    ErrorSchema,
    ExecutionResultSchema,
    HealthSchema,
    SessionSchema,
    UpdateCodeSchema,
)

_session_schema = SessionSchema()
_health_body = HealthSchema().dump({"status": "healthy"})

_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON body (`INVALID_JSON`).",
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


def session_response(service, session, status: int = 200) -> web.Response:
    return web.json_response(
        _session_schema.dump(service.view(session)),
        status=status,
        headers={"ETag": f'"{session.revision}"'},
    )


@docs(tags=["health"], summary="Liveness check")
@response_schema(HealthSchema, 200, description="The server is up.")
@errors()
async def health(request: web.Request) -> web.Response:
    return web.json_response(_health_body)


@docs(tags=["sessions"], summary="Create a coding session")
@request_schema(CreateSessionSchema)
@response_schema(SessionSchema, 201, description="The new session.")
@errors(400, 413, 422)
async def create_session(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    session = await service.create(request["data"]["language"])
    return session_response(service, session, status=201)


@docs(tags=["sessions"], summary="Get a session")
@response_schema(SessionSchema, 200, description="The session; `ETag` is its revision.")
@errors(404)
async def get_session(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    session = await service.get(request.match_info["sessionId"])
    return session_response(service, session)


@docs(
    tags=["sessions"],
    summary="Replace a session's code",
    description="Every socket of the session receives a `code_update` with the new revision.",
)
@request_schema(UpdateCodeSchema, required=True)
@response_schema(SessionSchema, 200, description="The updated session.")
@errors(400, 404, 413, 422)
async def update_code(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    data = request["data"]
    session = await service.update_code(
        request.match_info["sessionId"],
        data["code"],
        data.get("language"),
        expected_revision=data.get("base_revision"),
    )
    return session_response(service, session)


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
    result = ExecutionResultSchema().dump(request["data"])
    await service.share_execution_result(request.match_info["sessionId"], result)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health, allow_head=False)
    app.router.add_post("/sessions", create_session)
    app.router.add_get("/sessions/{sessionId}", get_session, allow_head=False)
    app.router.add_put("/sessions/{sessionId}/code", update_code)
    app.router.add_post("/sessions/{sessionId}/execution-result", share_execution_result)
