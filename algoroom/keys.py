"""Every piece of app state, under one typed, namespaced ``web.AppKey``.

Kept in a module of its own so handlers, middleware and resources can import the keys
without importing each other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .execution import Executor
from .hub import SessionHub
from .service import SessionService
from .settings import Settings

SETTINGS = web.AppKey("algoroom.settings", Settings)
HUB = web.AppKey("algoroom.hub", SessionHub)
SERVICE = web.AppKey("algoroom.service", SessionService)
EXECUTOR = web.AppKey("algoroom.executor", Executor)
#: Filled with the OpenAPI document on first request (the app is frozen by then).
OPENAPI = web.AppKey("algoroom.openapi", dict[str, Any])
