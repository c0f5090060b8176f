"""``create_app``: the one factory of algoroom's ``web.Application``.

It wires the pieces together and nothing else: settings in, an application out.
Resources (the store, the cluster link, background sweeps) open and close in
``cleanup_ctx``; sockets are closed with 1001 in ``on_shutdown``. The same application
serves standalone or mounted with ``parent.add_subapp("/prefix/", create_app())``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from . import collab, docs, execute, rest, ws
from .cluster import LocalCluster, RedisCluster
from .documents import DocumentManager
from .expiry import run_expiry
from .hub import SessionHub
from .keys import HUB, OPENAPI, SERVICE, SETTINGS
from .middleware import api_middleware_factory
from .openapi import openapi_json
from .service import SessionService
from .settings import Settings
from .store import open_store
from .tasks import owned_task

log = logging.getLogger("algoroom")


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings()
    app = web.Application(
        middlewares=[api_middleware_factory(settings)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[HUB] = SessionHub()
    app[OPENAPI] = {}
    app.cleanup_ctx.append(_service_ctx)
    app.cleanup_ctx.append(_expiry_ctx)
    app.cleanup_ctx.append(collab.upkeep_ctx)
    app.cleanup_ctx.append(execute.executor_ctx)
    app.on_shutdown.append(_close_sockets)

    rest.add_routes(app)
    execute.add_routes(app)
    ws.add_routes(app)
    collab.add_routes(app)
    docs.add_routes(app)
    app.router.add_get("/openapi.json", openapi_json, allow_head=False)
    return app


async def _service_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = open_store(settings.database_url)
    await store.open()
    log.info("session store: %s", store.url)
    if settings.redis_url:
        cluster: LocalCluster = RedisCluster(
            app[HUB],
            settings.redis_url,
            prefix=settings.redis_prefix,
            heartbeat_seconds=settings.cluster_heartbeat_seconds,
            dead_after_seconds=settings.cluster_dead_after_seconds,
        )
    else:
        cluster = LocalCluster(app[HUB])
    documents = DocumentManager(
        store,
        cluster,
        flush_delay=settings.yjs_flush_ms / 1000,
        unload_after=settings.yjs_unload_seconds,
    )
    try:
        await cluster.start()
        app[SERVICE] = SessionService(store, cluster, documents)
        yield
    finally:
        await documents.close()  # saves every changed document before the store closes
        await cluster.stop()
        await store.close()


async def _expiry_ctx(app: web.Application) -> AsyncIterator[None]:
    async with owned_task(run_expiry(app[SERVICE], app[SETTINGS].session_ttl), name="algoroom-expiry"):
        yield


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close_all(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
