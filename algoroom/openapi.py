"""The OpenAPI 3 document, built from the handlers' aiohttp-apispec metadata.

aiohttp-apispec 3.0.0b2 can only emit Swagger 2.0, but its decorators leave every
handler's schemas in ``handler.__apispec__``. We feed that metadata to apispec's
OpenAPI 3 generator ourselves. Paths are read from the router when the document is
first requested, so a sub-app mounted under a prefix documents the prefixed paths.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import __version__
from .keys import OPENAPI

_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")

#: Swagger-2-only keys that aiohttp-apispec's ``docs()`` adds.
_SWAGGER2_ONLY = {"produces", "consumes"}

WEBSOCKET_DESCRIPTION = (
    "Upgrade to a WebSocket carrying JSON text frames; see the README for the protocol. "
    "An unknown session is closed with code 1008."
)


def build_openapi(app: web.Application) -> dict[str, Any]:
    spec = APISpec(
        title="Algoroom API",
        version=__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Real-time collaborative coding sessions with sandboxed execution."},
    )
    for route in app.router.routes():
        meta = getattr(route.handler, "__apispec__", None)
        path = route.resource.canonical if route.resource is not None else None
        if meta is None or path is None:
            continue
        spec.path(path=_PATH_PARAM.sub(r"{\1}", path), operations={route.method.lower(): _operation(meta, path)})
    return spec.to_dict()


def _operation(meta: dict[str, Any], path: str) -> dict[str, Any]:
    operation = {k: v for k, v in meta.items() if k not in {"schemas", "responses", "parameters", *_SWAGGER2_ONLY}}
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    operation["parameters"] = parameters + list(meta.get("parameters", []))
    for entry in meta.get("schemas", []):
        operation["requestBody"] = {
            "required": entry["options"].get("required", False),
            "content": {"application/json": {"schema": entry["schema"]}},
        }
    responses: dict[str, Any] = {}
    for status, response in sorted(meta.get("responses", {}).items()):
        rendered: dict[str, Any] = {"description": response.get("description") or ""}
        if response.get("schema") is not None:
            rendered["content"] = {"application/json": {"schema": response["schema"]}}
        responses[str(status)] = rendered
    operation["responses"] = responses
    return operation


async def openapi_json(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI]  # a dict filled on first use: the app is frozen by then
    if "document" not in cache:
        cache["document"] = build_openapi(request.app)
    return web.json_response(cache["document"])
