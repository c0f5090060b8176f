"""Several server processes acting as one: events and participant counts through Redis.

:class:`LocalCluster` is the single-process case: events go straight to this process's
:class:`~algoroom.hub.SessionHub` and participant counts are its socket counts.

:class:`RedisCluster` adds Redis. An event is delivered to local sockets at once, then
queued to a single publisher task (one connection, so this process's events stay in
order) that PUBLISHes it on one channel; every other process's subscriber task hands it
to its own hub. Participant counts live in one Redis hash per session (a field per
process), changed by a Lua script that returns the new total atomically. Each process
refreshes a liveness key; any process that finds another's key expired removes that
process's fields and announces ``participant_left`` (within ``dead_after`` + one
heartbeat, well under 30 s).

Losing Redis never breaks local service: publishes are dropped (local sockets already
have the event), counts fall back to local ones, the tasks reconnect with exponential
backoff, and on reconnection this process re-asserts its presence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

from .hub import Connection, SessionHub
from .messages import participant_message

log = logging.getLogger("algoroom.cluster")

#: Receives (session id, payload) of a remote event of a registered kind.
RemoteHandler = Callable[[str, bytes], None]

KIND_EVENT = b"e"
KIND_CLOSE = b"c"
_SEP = b"\x1f"


class LocalCluster:
    """One process: the hub is everything there is."""

    redis_ok: bool | None = None  #: None: no Redis configured
    #: Whether :meth:`relay` reaches anyone (no other processes here, so no).
    relays = False

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        self._handlers: dict[bytes, RemoteHandler] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def on_remote(self, kind: bytes, handler: RemoteHandler) -> None:
        """Register the handler of a custom event kind coming from other processes."""
        self._handlers[kind] = handler

    def broadcast(self, session_id: str, message: dict[str, Any], *, revision: int | None = None) -> None:
        """Deliver ``message`` to the session's sockets in every process."""
        if not self.relays and not self.hub.count(session_id):
            return  # nobody to serialise it for
        payload = self.hub.broadcast(session_id, message, revision=revision)
        if payload is not None:
            self._relay(KIND_EVENT, session_id, payload.encode(), revision)

    def relay(self, kind: bytes, session_id: str, payload: bytes) -> None:
        """Send a custom event (e.g. a Yjs update) to the other processes only."""
        self._relay(kind, session_id, payload, None)

    def _relay(self, kind: bytes, session_id: str, payload: bytes, revision: int | None) -> None:
        pass

    async def join(self, conn: Connection) -> int:
        """Register a socket; returns the session's participant count everywhere."""
        return self.hub.join(conn)

    async def leave(self, conn: Connection) -> int:
        return self.hub.leave(conn)

    async def participants(self, session_id: str) -> int:
        return self.hub.count(session_id)

    async def close_session(self, session_id: str, code: int, message: bytes = b"") -> None:
        """Close every socket of a (deleted) session, in every process."""
        self._relay(KIND_CLOSE, session_id, str(code).encode(), None)
        await self.hub.close_all(session_id, code=code, message=message)

    def status(self) -> dict[str, Any]:
        return {"mode": "single-process"}


_PRESENCE_CHANGE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SADD', KEYS[2], ARGV[3])
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
return total
"""

_PRESENCE_SET = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""

# KEYS[1] = set of processes; ARGV[1] = key prefix; ARGV[2] = this process.
# Returns {session, total, session, total, ...} for every count this call removed.
_REAP = """
local removed = {}
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if pid ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'alive:' .. pid) == 0 then
    local sessions_key = ARGV[1] .. 'proc-sessions:' .. pid
    for _, sid in ipairs(redis.call('SMEMBERS', sessions_key)) do
      local presence = ARGV[1] .. 'presence:' .. sid
      if redis.call('HDEL', presence, pid) == 1 then
        local total = 0
        for _, v in ipairs(redis.call('HVALS', presence)) do total = total + tonumber(v) end
        table.insert(removed, sid)
        table.insert(removed, total)
      end
    end
    redis.call('DEL', sessions_key)
    redis.call('SREM', KEYS[1], pid)
  end
end
return removed
"""


class RedisCluster(LocalCluster):
    relays = True

    def __init__(
        self,
        hub: SessionHub,
        url: str,
        *,
        prefix: str = "algoroom",
        heartbeat_seconds: float = 3.0,
        dead_after_seconds: float = 10.0,
        process_id: str | None = None,
    ) -> None:
        super().__init__(hub)
        self.url = url
        self.process_id = process_id or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._prefix = prefix + ":"
        self._channel = f"{self._prefix}events".encode()
        self._heartbeat = heartbeat_seconds
        self._dead_after = dead_after_seconds
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=10_000)
        self._tasks: list[asyncio.Task[None]] = []
        self._closings: set[asyncio.Task[None]] = set()  # closing a deleted session's sockets
        self._redis: Any = None
        self.redis_ok = False
        self.last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(
            self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=10
        )
        self._change_script = self._redis.register_script(_PRESENCE_CHANGE)
        self._set_script = self._redis.register_script(_PRESENCE_SET)
        self._reap_script = self._redis.register_script(_REAP)
        subscribed = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(subscribed), name="algoroom-redis-subscriber"),
            asyncio.create_task(self._publish_loop(), name="algoroom-redis-publisher"),
            asyncio.create_task(self._heartbeat_loop(), name="algoroom-redis-heartbeat"),
        ]
        try:
            # Serve as soon as the subscription is live; if Redis is down, start anyway.
            await asyncio.wait_for(asyncio.shield(subscribed), timeout=3)
        except asyncio.TimeoutError:
            log.warning("Redis at %s is not reachable yet; serving locally and retrying", self.url)

    async def stop(self) -> None:
        for task in (*self._tasks, *self._closings):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._closings, return_exceptions=True)
        self._tasks = []
        if self._redis is not None:
            try:
                await self._redis.delete(self._key("alive", self.process_id))
                await self._redis.srem(self._key("procs"), self.process_id)
            except Exception as error:  # noqa: BLE001 - shutting down: best effort
                log.debug("could not retire process key: %s", error)
            await self._redis.aclose()
            self._redis = None

    def status(self) -> dict[str, Any]:
        status = {"mode": "redis", "ok": bool(self.redis_ok), "processId": self.process_id}
        if not self.redis_ok and self.last_error:
            status["error"] = self.last_error
        return status

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _failed(self, what: str, error: BaseException) -> None:
        if self.redis_ok or self.last_error is None:
            log.warning("Redis %s failed (%s); serving locally until it returns", what, error)
        self.redis_ok = False
        self.last_error = f"{type(error).__name__}: {error}"

    # -- events ----------------------------------------------------------------------

    def _relay(self, kind: bytes, session_id: str, payload: bytes, revision: int | None) -> None:
        header = _SEP.join((self.process_id.encode(), kind, session_id.encode(), b"%d" % (revision or -1)))
        try:
            self._outbox.put_nowait(header + _SEP + payload)
        except asyncio.QueueFull:
            log.warning("Redis outbox full; dropping an event of session %s", session_id)

    async def _publish_loop(self) -> None:
        backoff = _Backoff()
        while True:
            first = await self._outbox.get()
            batch = [first]
            while not self._outbox.empty() and len(batch) < 256:
                batch.append(self._outbox.get_nowait())
            try:
                if len(batch) == 1:
                    await self._redis.publish(self._channel, first)
                else:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for item in batch:
                            pipe.publish(self._channel, item)
                        await pipe.execute()
                backoff.reset()
            except Exception as error:  # noqa: BLE001 - any Redis failure: drop, keep serving
                self._failed("publish", error)
                await backoff.wait()

    async def _subscribe_loop(self, subscribed: asyncio.Future[None]) -> None:
        backoff = _Backoff()
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                await self._reassert_presence()
                if not self.redis_ok:
                    log.info("Redis at %s is available; cross-process fan-out active", self.url)
                self.redis_ok, self.last_error = True, None
                if not subscribed.done():
                    subscribed.set_result(None)
                backoff.reset()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reconnect on any failure
                self._failed("subscription", error)
            finally:
                try:
                    await asyncio.shield(pubsub.aclose())
                except Exception:  # noqa: BLE001 - the connection is already broken
                    pass
            await backoff.wait()

    def _deliver(self, data: bytes) -> None:
        try:
            origin, kind, sid, revision, payload = data.split(_SEP, 4)
        except ValueError:
            log.warning("ignoring a malformed cluster message")
            return
        if origin == self.process_id.encode():
            return
        session_id = sid.decode()
        if kind == KIND_EVENT:
            rev = int(revision)
            self.hub.broadcast_payload(session_id, payload.decode(), revision=rev if rev >= 0 else None)
        elif kind == KIND_CLOSE:
            closing = asyncio.get_running_loop().create_task(self.hub.close_all(session_id, code=int(payload)))
            self._closings.add(closing)
            closing.add_done_callback(self._closings.discard)
        else:
            handler = self._handlers.get(kind)
            if handler is not None:
                handler(session_id, payload)

    # -- presence --------------------------------------------------------------------

    async def join(self, conn: Connection) -> int:
        local = self.hub.join(conn)
        return await self._change(conn.session_id, +1, local)

    async def leave(self, conn: Connection) -> int:
        local = self.hub.leave(conn)
        return await self._change(conn.session_id, -1, local)

    async def _change(self, session_id: str, delta: int, local: int) -> int:
        if not self.redis_ok:
            return local
        try:
            keys = [self._key("presence", session_id), self._key("proc-sessions", self.process_id)]
            return int(await self._change_script(keys=keys, args=[self.process_id, delta, session_id]))
        except Exception as error:  # noqa: BLE001
            self._failed("presence update", error)
            return local

    async def participants(self, session_id: str) -> int:
        if not self.redis_ok:
            return self.hub.count(session_id)
        try:
            values = await self._redis.hvals(self._key("presence", session_id))
        except Exception as error:  # noqa: BLE001
            self._failed("presence read", error)
            return self.hub.count(session_id)
        return sum(int(v) for v in values)

    async def _reassert_presence(self) -> None:
        """After (re)connecting, make Redis agree with this process's sockets."""
        await self._redis.set(self._key("alive", self.process_id), 1, px=max(100, int(self._dead_after * 1000)))
        await self._redis.sadd(self._key("procs"), self.process_id)
        for session_id in self.hub.session_ids():
            keys = [self._key("presence", session_id), self._key("proc-sessions", self.process_id)]
            await self._set_script(keys=keys, args=[self.process_id, self.hub.count(session_id), session_id])

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            if not self.redis_ok:
                continue
            try:
                await self._redis.set(self._key("alive", self.process_id), 1, px=max(100, int(self._dead_after * 1000)))
                removed = await self._reap_script(keys=[self._key("procs")], args=[self._prefix, self.process_id])
            except Exception as error:  # noqa: BLE001
                self._failed("heartbeat", error)
                continue
            for sid, total in zip(removed[::2], removed[1::2]):
                session_id = sid.decode() if isinstance(sid, bytes) else str(sid)
                log.info("a dead process left session %s; %s participants remain", session_id, total)
                self.broadcast(session_id, participant_message("participant_left", session_id, int(total)))


class _Backoff:
    """Exponential backoff with jitter: 0.1 s doubling up to 5 s."""

    def __init__(self) -> None:
        self._delay = 0.1

    def reset(self) -> None:
        self._delay = 0.1

    async def wait(self) -> None:
        import random

        await asyncio.sleep(self._delay * (0.5 + random.random()))
        self._delay = min(self._delay * 2, 5.0)
