"""Middleware of algoroom's own application (never installed globally).

- :func:`error_middleware` renders every failure in the one JSON envelope.
- :func:`cors_middleware` answers preflights and tags responses for allowed origins.
- :func:`validation_middleware` reads a handler's JSON body within the size limit and
  loads it with the marshmallow schema its ``@request_schema`` decorator declared (the
  same metadata the OpenAPI document is built from), putting the result in
  ``request["data"]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from marshmallow import ValidationError

from .errors import ApiError, InvalidJson, PayloadTooLarge, ValidationFailed
from .keys import SETTINGS

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


def error_response(error: ApiError) -> web.Response:
    return web.json_response(error.to_dict(), status=error.status, headers=error.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "HTTP_ERROR")
        message = exc.reason if exc.status != 404 else f"No route for {request.method} {request.path}"
        headers = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return error_response(ApiError(message, status=exc.status, code=code, headers=headers))
    except (ConnectionResetError, web.HTTPClientError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(ApiError("Internal server error", status=500))


def cors_middleware_factory(allowed_origins: tuple[str, ...]) -> Callable:
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        is_preflight = (
            request.method == hdrs.METH_OPTIONS
            and origin is not None
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
        )
        if is_preflight:
            response: web.StreamResponse = web.Response(status=204)
            if origin in allowed:
                response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST, PUT, DELETE, OPTIONS"
                requested = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
                response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = requested or "Content-Type"
                response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
        else:
            response = await handler(request)
        if origin in allowed and not response.prepared:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = "ETag, Retry-After"
        if not response.prepared:
            response.headers.add(hdrs.VARY, "Origin")
        return response

    return cors_middleware


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


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    schemas = getattr(request.match_info.handler, "__schemas__", None)
    if schemas:
        limit = request.app[SETTINGS].max_body_bytes
        for entry in schemas:
            if entry["location"] != "json":
                raise RuntimeError("only JSON bodies are declared by algoroom handlers")
            payload = await read_json_body(request, limit)
            try:
                request["data"] = entry["schema"].load(payload)
            except ValidationError as error:
                raise ValidationFailed(normalise_messages(error.messages)) from None
    return await handler(request)


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
