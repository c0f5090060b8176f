"""The HTTP boundary of algoroom's own application (never installed globally).

One middleware, :func:`api_middleware_factory`, does the three things every request
needs, in one coroutine frame (each extra middleware costs every request a call layer):

- CORS: answers preflights and tags responses for allowed origins;
- validation: reads a handler's JSON body within the size limit and loads it with the
  marshmallow schema its ``@request_schema`` decorator declared (the same metadata the
  OpenAPI document is built from), putting the result in ``request["data"]``;
- errors: renders every failure in the one JSON envelope.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from marshmallow import ValidationError

from .errors import ApiError, InvalidJson, PayloadTooLarge, ValidationFailed
from .settings import Settings

log = logging.getLogger("algoroom.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Codes for the HTTP errors aiohttp's router raises itself.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def api_middleware_factory(settings: Settings) -> Callable:
    allowed = frozenset(settings.cors_origins)
    limit = settings.max_body_bytes

    @web.middleware
    async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if (
            origin is not None
            and request.method == hdrs.METH_OPTIONS
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        ):
            response: web.StreamResponse = preflight_response(request, origin in allowed)
        else:
            try:
                schemas = getattr(request.match_info.handler, "__schemas__", None)
                if schemas:
                    request["data"] = await load_body(request, schemas, limit)
                response = await handler(request)
            except Exception as error:  # noqa: BLE001 - every failure becomes the envelope
                response = failure_response(request, error)
        if not response.prepared:  # a WebSocket handshake has already gone out
            if origin in allowed:
                response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin  # type: ignore[index]
                response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "ETag, Retry-After"
            response.headers.add(hdrs.VARY, "Origin")
        return response

    return api_middleware


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.to_dict(), status=error.status, headers=error.headers)


def failure_response(request: web.Request, error: Exception) -> web.StreamResponse:
    if isinstance(error, ApiError):
        return error_response(error)
    if isinstance(error, web.HTTPException):
        if error.status < 400:
            raise error  # redirects and the like pass through
        code = _HTTP_CODES.get(error.status, "HTTP_ERROR")
        message = error.reason if error.status != 404 else f"No route for {request.method} {request.path}"
        headers = {hdrs.ALLOW: error.headers[hdrs.ALLOW]} if hdrs.ALLOW in error.headers else None
        return error_response(ApiError(message, status=error.status, code=code, headers=headers))
    if isinstance(error, ConnectionResetError):
        raise error  # the client is gone: nobody to answer
    log.error("unhandled error in %s %s", request.method, request.path, exc_info=error)
    return error_response(ApiError("Internal server error", status=500))


def preflight_response(request: web.Request, allowed: bool) -> web.Response:
    """204 for every preflight; only an allowed origin gets the ``Access-Control-Allow-*``."""
    response = web.Response(status=204)
    if allowed:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST, PUT, DELETE, OPTIONS"
        requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = requested or "Content-Type"
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
    return response


async def load_body(request: web.Request, schemas: list[dict], limit: int) -> object:
    """The handler's JSON body, loaded with its declared schema."""
    (entry,) = schemas
    if entry["location"] != "json":
        raise RuntimeError("only JSON bodies are declared by algoroom handlers")
    payload = await read_json_body(request, limit)
    try:
        return entry["schema"].load(payload)
    except ValidationError as error:
        raise ValidationFailed(normalise_messages(error.messages)) from None


async def read_json_body(request: web.Request, limit: int) -> object:
    """The request's JSON body (``{}`` when empty), read without ever holding more than ``limit``."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
    if length is not None:  # the common case: the size is declared and within the limit
        body: bytes | bytearray = await request.read()
    else:  # chunked: count as it arrives
        body = bytearray()
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJson("Request body is not valid JSON") from None


def normalise_messages(messages: object) -> dict[str, list[str]]:
    """Marshmallow's messages as ``{field: [message]}``; ``_schema`` becomes ``body``."""
    if not isinstance(messages, dict):
        return {"body": [str(messages)]}
    result: dict[str, list[str]] = {}
    for key, value in messages.items():
        name = "body" if key == "_schema" else str(key)
        if isinstance(value, list):
            result[name] = [str(v) for v in value]
        elif isinstance(value, dict):
            result[name] = [f"{k}: {v}" for k, v in value.items()]
        else:
            result[name] = [str(value)]
    return result
