"""Automatic pipelining for redis-py's asyncio client.

Why: redis-py spends far more CPU per command (pool checkout, timeout wrappers, reply
parsing) than Redis spends running it. Commands issued concurrently are queued, and
everything that queued up while the previous batch was in flight goes out as one
non-transactional pipeline: one round trip and one pool checkout per batch (the Redis
counterpart of the SQLite store's group commit). Commands of one caller keep their order.

A script that Redis no longer knows (``NOSCRIPT`` after a restart) never ran, so it is
safe to load the scripts and resend it; nothing else is ever resent (see
``algoroom.store.redis`` on retries).
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError


class AutoPipeline:
    """Batches concurrent commands into pipelines; one batch in flight at a time."""

    def __init__(self, client: aioredis.Redis, scripts: dict[str, str]) -> None:
        self._client = client
        self._scripts = scripts  # sha -> source, reloaded after a Redis restart
        self._pending: list[tuple[tuple[object, ...], asyncio.Future[object]]] = []
        self._inflight: list[tuple[tuple[object, ...], asyncio.Future[object]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="algoroom redis pipeline")

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Send what is queued (a graceful shutdown loses no write), then stop."""
        task, self._task = self._task, None
        if task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(task, drain_timeout)
            except (asyncio.TimeoutError, Exception):
                pass  # wait_for cancelled it; its callers are told below
        for _, future in self._inflight + self._pending:
            if not future.done():
                future.set_exception(RedisError("Redis store closed"))
        self._inflight, self._pending = [], []

    def call(self, *command: object) -> asyncio.Future[object]:
        if self._task is None:
            raise RuntimeError("Redis store is not open")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                if self._task is None:  # stop() was called and everything is sent
                    return
                continue
            self._inflight, self._pending = self._pending, []
            await self._send(self._inflight, reload_scripts=True)
            self._inflight = []
            if self._task is None:
                self._wake.set()  # look again: more may have queued during the send

    async def _send(self, batch: list[tuple[tuple[object, ...], asyncio.Future[object]]], reload_scripts: bool) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # connection lost: every caller learns it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        retry = []
        for (command, future), reply in zip(batch, replies):
            if isinstance(reply, NoScriptError) and reload_scripts:
                retry.append((command, future))  # the script never ran: safe to resend
            elif future.done():
                pass
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if retry:
            try:
                for source in self._scripts.values():
                    await self._client.script_load(source)
            except Exception as exc:
                for _, future in retry:
                    if not future.done():
                        future.set_exception(exc)
                return
            await self._send(retry, reload_scripts=False)
