"""Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from assets in the package.

Both pages use relative URLs (``static/...``, ``openapi.json``) so they work offline
and under any sub-app prefix.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).parent / "static"

SWAGGER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Algoroom API - Swagger UI</title>
<link rel="stylesheet" href="static/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="static/swagger-ui/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="static/swagger-ui/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui", deepLinking: true});
</script></body></html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Algoroom API - ReDoc</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="openapi.json"></redoc>
<script src="static/redoc/redoc.standalone.js"></script></body></html>
"""


async def swagger_ui(request: web.Request) -> web.Response:
    return web.Response(text=SWAGGER_PAGE, content_type="text/html")


async def redoc(request: web.Request) -> web.Response:
    return web.Response(text=REDOC_PAGE, content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/docs", swagger_ui, allow_head=False)
    app.router.add_get("/redoc", redoc, allow_head=False)
    app.router.add_static("/static/", STATIC_DIR, name="algoroom-static")
