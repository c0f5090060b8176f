"""``redis://``: sessions in Redis through redis-py's asyncio client.

Why Lua: every write is one server-side script, which Redis runs atomically, so checking
and bumping ``revision`` (and keeping the activity index in step) cannot interleave with
another process's write, and costs one round trip (``EVALSHA``). WATCH/MULTI would need
retries under contention.

Why an automatic pipeline: redis-py spends far more CPU per command (pool checkout, timeout
wrappers, parsing) than Redis does running the script. Single-key commands go through
:class:`AutoPipeline`, which sends everything that queued up while the previous batch was
in flight as one pipeline (the Redis counterpart of SQLite's group commit): 2-4x the
throughput under concurrency, one round trip per batch. Each script stays atomic on its
own; a pipeline is not a transaction and needs none.

Why no retries: a write whose connection broke may or may not have run; re-sending it could
bump the revision twice. The error goes to the caller instead.

Key layout (schema version 1; ``PREFIX`` defaults to ``algoroom:``)::

    PREFIX session:<id>    hash: code, language, created_at, updated_at, revision, active_at
                           (times are integer microseconds since the Unix epoch, UTC)
    PREFIX document:<id>   string: the Yjs document state
    PREFIX active          sorted set: <id> scored by active_at, for idle expiry
    PREFIX schema_version  string

Scripts name keys they build from the prefix, so Redis Cluster is not supported.

Durability is the server's: an acknowledged write is in Redis's memory, which survives the
death of any algoroom process; surviving a Redis restart needs ``appendonly yes``
(``appendfsync always`` to lose nothing on a crash of Redis itself). ``open()`` logs a warning
when it can see that append-only persistence is off.

URL: any redis-py URL (``redis://:password@host:port/db``, ``rediss://`` for TLS,
``unix:///path.sock``, redis-py's query options such as ``?max_connections=64``, the
default here), plus ``?prefix=...`` to share one database between deployments.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Collection
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from algoroom.errors import RevisionConflict, SessionNotFound
from algoroom.sessions import Session, utcnow
from algoroom.store.autopipeline import AutoPipeline
from algoroom.store.base import (
    SessionAlreadyExists,
    SessionStore,
    check_new_session,
    check_text,
    from_micros,
    redact_url,
    storable_id,
    to_micros,
)
from algoroom.store.migrations import migrate_redis

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "algoroom:"
DEFAULT_MAX_CONNECTIONS = 64  # ?max_connections= in the URL overrides it

# KEYS: session, active. ARGV: code, language, created_at, updated_at, revision, id
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'code', ARGV[1], 'language', ARGV[2], 'created_at', ARGV[3],
           'updated_at', ARGV[4], 'revision', ARGV[5], 'active_at', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
return 1
"""

# KEYS: session, active. ARGV: code, language ('' keeps it), now, expected ('' = any), id
# -> {0} unknown | {-1, current} conflict | {1, revision, language, created_at}
_UPDATE_CODE = """
local revision = redis.call('HGET', KEYS[1], 'revision')
if not revision then return {0} end
if ARGV[4] ~= '' and ARGV[4] ~= revision then return {-1, revision} end
revision = redis.call('HINCRBY', KEYS[1], 'revision', 1)
redis.call('HSET', KEYS[1], 'code', ARGV[1], 'updated_at', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'language', ARGV[2]) end
if tonumber(ARGV[3]) > tonumber(redis.call('HGET', KEYS[1], 'active_at')) then
    redis.call('HSET', KEYS[1], 'active_at', ARGV[3])
    redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
end
local fields = redis.call('HMGET', KEYS[1], 'language', 'created_at')
return {1, revision, fields[1], fields[2]}
"""

# KEYS: session, document, active. ARGV: code, now, state, id, expected ('' = any)
# -> {0} unknown | {-1, current} conflict | {1, language, created_at, updated_at, revision}
_SAVE_DOCUMENT = """
local revision = redis.call('HGET', KEYS[1], 'revision')
if not revision then return {0} end
if ARGV[5] ~= '' and ARGV[5] ~= revision then return {-1, revision} end
if redis.call('HGET', KEYS[1], 'code') ~= ARGV[1] then
    redis.call('HINCRBY', KEYS[1], 'revision', 1)
    redis.call('HSET', KEYS[1], 'code', ARGV[1], 'updated_at', ARGV[2])
end
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], 'active_at')) then
    redis.call('HSET', KEYS[1], 'active_at', ARGV[2])
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
end
redis.call('SET', KEYS[2], ARGV[3])
local fields = redis.call('HMGET', KEYS[1], 'language', 'created_at', 'updated_at', 'revision')
return {1, fields[1], fields[2], fields[3], fields[4]}
"""

# KEYS: session, active. ARGV: now, id
_TOUCH = """
local active = redis.call('HGET', KEYS[1], 'active_at')
if active and tonumber(ARGV[1]) > tonumber(active) then
    redis.call('HSET', KEYS[1], 'active_at', ARGV[1])
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
return 0
"""

# KEYS: session, document, active. ARGV: id
_DELETE = """
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[2])
return redis.call('DEL', KEYS[1])
"""

# KEYS: active, then session and document of each candidate. ARGV: idle_before, then the ids.
# Re-checks idleness inside the script, so a write since the candidates were listed wins.
_DELETE_IF_IDLE = """
local deleted = {}
local cut = tonumber(ARGV[1])
for i = 2, #ARGV do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) < cut then
        redis.call('ZREM', KEYS[1], ARGV[i])
        redis.call('DEL', KEYS[2 * i - 1])
        if redis.call('DEL', KEYS[2 * i - 2]) == 1 then deleted[#deleted + 1] = ARGV[i] end
    end
end
return deleted
"""

_CHUNK = 200
_SCRIPTS = (_CREATE, _UPDATE_CODE, _SAVE_DOCUMENT, _TOUCH, _DELETE, _DELETE_IF_IDLE)


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


_SHAS = {source: _sha(source) for source in _SCRIPTS}


def _split_options(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for key, value in query:
        if key == "prefix":
            prefix = value
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


class RedisStore(SessionStore):
    def __init__(self, url: str) -> None:
        self.url = redact_url(url)
        self._client_url, self.prefix = _split_options(url)
        self._client: aioredis.Redis | None = None
        self._pipeline: AutoPipeline
        self._active_key = f"{self.prefix}active".encode()

    def _session_key(self, session_id: str) -> bytes:
        return f"{self.prefix}session:{session_id}".encode()

    def _document_key(self, session_id: str) -> bytes:
        return f"{self.prefix}document:{session_id}".encode()

    async def open(self) -> None:
        if self._client is not None:
            return
        # A blocking pool makes a burst of callers queue for a connection instead of failing
        # with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self._client_url,
            decode_responses=False,
            max_connections=DEFAULT_MAX_CONNECTIONS,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)
        try:
            await migrate_redis(client, self.prefix)
            await self._warn_if_volatile(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._pipeline = AutoPipeline(client, {sha: source for source, sha in _SHAS.items()})
        self._pipeline.start()

    def _script(self, source: str, keys: list[bytes], args: list[object]) -> asyncio.Future[object]:
        return self._pipeline.call("EVALSHA", _SHAS[source], len(keys), *keys, *args)

    async def _warn_if_volatile(self, client: aioredis.Redis) -> None:
        try:
            config = await client.config_get("appendonly")
        except ResponseError:  # CONFIG is often disabled on managed Redis: cannot tell
            return
        if config.get(b"appendonly", config.get("appendonly")) in (b"no", "no"):
            log.warning(
                "Redis at %s has appendonly=no: sessions survive algoroom restarts but not a Redis "
                "restart or crash beyond its last snapshot",
                self.url,
            )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._pipeline.stop()
            await client.aclose()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._client

    async def ping(self) -> None:
        if not await self.client.ping():
            raise RedisError("PING failed")

    async def create(self, session: Session) -> None:
        check_new_session(session)
        updated = to_micros(session.updated_at)
        created = await self._script(
            _CREATE,
            [self._session_key(session.id), self._active_key],
            [
                session.code.encode(),
                session.language.encode(),
                to_micros(session.created_at),
                updated,
                session.revision,
                session.id.encode(),
            ],
        )
        if not created:
            raise SessionAlreadyExists(session.id)

    async def get(self, session_id: str) -> Session | None:
        if not storable_id(session_id):
            return None
        code, language, created_at, updated_at, revision = await self._pipeline.call(
            "HMGET", self._session_key(session_id), b"code", b"language", b"created_at", b"updated_at", b"revision"
        )
        if revision is None:
            return None
        return Session(
            session_id,
            code.decode(),
            language.decode(),
            from_micros(int(created_at)),
            from_micros(int(updated_at)),
            int(revision),
        )

    async def update_code(
        self,
        session_id: str,
        code: str,
        language: str | None = None,
        *,
        expected_revision: int | None = None,
        now: datetime | None = None,
    ) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        check_text(code, "code")
        if language:
            check_text(language, "language")
        now = utcnow() if now is None else now
        micros = to_micros(now)
        reply = await self._script(
            _UPDATE_CODE,
            [self._session_key(session_id), self._active_key],
            [
                code.encode(),
                (language or "").encode(),
                micros,
                "" if expected_revision is None else str(int(expected_revision)),
                session_id.encode(),
            ],
        )
        if reply[0] == 0:
            raise SessionNotFound(session_id)
        if reply[0] == -1:
            raise RevisionConflict(session_id, expected_revision, int(reply[1]))  # type: ignore[arg-type]
        _, revision, stored_language, created_at = reply
        return Session(
            session_id, code, stored_language.decode(), from_micros(int(created_at)), from_micros(micros), revision
        )

    async def delete(self, session_id: str) -> bool:
        if not storable_id(session_id):
            return False
        deleted = await self._script(
            _DELETE,
            [self._session_key(session_id), self._document_key(session_id), self._active_key],
            [session_id.encode()],
        )
        return bool(deleted)

    async def touch(self, session_id: str, now: datetime) -> None:
        micros = to_micros(now)
        if storable_id(session_id):
            await self._script(
                _TOUCH,
                [self._session_key(session_id), self._active_key],
                [micros, session_id.encode()],
            )

    async def delete_idle(self, idle_before: datetime, keep: Collection[str] = ()) -> list[str]:
        cut = to_micros(idle_before)
        keep_encoded = {session_id.encode() for session_id in keep if storable_id(session_id)}
        candidates = await self.client.zrangebyscore(self._active_key, "-inf", f"({cut}")
        candidates = [c for c in candidates if c not in keep_encoded]
        deleted: list[str] = []
        for start in range(0, len(candidates), _CHUNK):
            chunk = [c.decode() for c in candidates[start : start + _CHUNK]]
            keys = [self._active_key]
            for session_id in chunk:
                keys += [self._session_key(session_id), self._document_key(session_id)]
            gone = await self._script(_DELETE_IF_IDLE, keys, [cut, *chunk])
            deleted.extend(g.decode() for g in gone)
        return deleted

    async def load_document(self, session_id: str) -> bytes | None:
        if not storable_id(session_id):
            return None
        return await self._pipeline.call("GET", self._document_key(session_id))

    async def save_document(
        self,
        session_id: str,
        state: bytes,
        code: str,
        *,
        now: datetime | None = None,
        expected_revision: int | None = None,
    ) -> Session:
        if not storable_id(session_id):
            raise SessionNotFound(session_id)
        check_text(code, "code")
        micros = to_micros(utcnow() if now is None else now)
        reply = await self._script(
            _SAVE_DOCUMENT,
            [self._session_key(session_id), self._document_key(session_id), self._active_key],
            [
                code.encode(),
                micros,
                bytes(state),
                session_id.encode(),
                "" if expected_revision is None else str(int(expected_revision)),
            ],
        )
        if reply[0] == 0:
            raise SessionNotFound(session_id)
        if reply[0] == -1:
            raise RevisionConflict(session_id, expected_revision, int(reply[1]))  # type: ignore[arg-type]
        _, language, created_at, updated_at, revision = reply
        return Session(
            session_id,
            code,
            language.decode(),
            from_micros(int(created_at)),
            from_micros(int(updated_at)),
            int(revision),
        )
