"""Expiry of idle sessions: no participants and no change for ``session_ttl`` seconds.

Every sweep first marks the sessions with sockets in this process as active (so other
processes' sweeps spare them), then asks the store to delete what is idle. The sweep
interval is a quarter of the TTL, at most a minute, so an active session is marked
several times per TTL.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from .service import CLOSE_SESSION_DELETED, SessionService
from .sessions import utcnow

log = logging.getLogger("algoroom.expiry")


def sweep_interval(ttl_seconds: float) -> float:
    return max(0.05, min(ttl_seconds / 4, 60.0))


async def sweep_once(service: SessionService, ttl_seconds: float) -> list[str]:
    now = utcnow()
    active = service.cluster.hub.session_ids()
    for session_id in active:
        await service.store.touch(session_id, now)
    expired = await service.store.delete_idle(now - timedelta(seconds=ttl_seconds), keep=active)
    for session_id in expired:
        await service.cluster.close_session(session_id, CLOSE_SESSION_DELETED, b"session expired")
    if expired:
        log.info("expired %d idle sessions", len(expired))
    return expired


async def run_expiry(service: SessionService, ttl_seconds: float) -> None:
    interval = sweep_interval(ttl_seconds)
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep_once(service, ttl_seconds)
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
            log.exception("session expiry sweep failed")
