"""Shared fixtures: every app under test comes from ``create_app(test_settings)``."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from algoroom import Settings, create_app

from .servers import ServerUnavailable, start_redis, unavailable
from .yjs.nodeclient import node_deps_installed, node_executable

RECEIVE_TIMEOUT = 5.0


def make_settings(**overrides: Any) -> Settings:
    """Test settings: an in-memory store and no executor (its probe costs ~1 s per app),
    unless the test asks for them."""
    return Settings(**{"database_url": "memory://", "exec_enabled": False, **overrides})


@pytest.fixture
def require_node() -> None:
    """Skip (fail on CI) without node and the npm Yjs clients."""
    if node_executable() is None or not node_deps_installed():
        message = "Yjs client tests need node and `npm ci --prefix tests/yjs/node`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server():
    """A real redis-server of this test's own, on a free port."""
    try:
        with start_redis() as server:
            yield server
    except ServerUnavailable as error:
        unavailable(str(error))


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings) -> web.Application:
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client, app) -> TestClient:
    return await aiohttp_client(app)


@pytest.fixture
async def session_id(client: TestClient) -> str:
    resp = await client.post("/sessions", json={"language": "python"})
    assert resp.status == 201
    return (await resp.json())["id"]


async def assert_error(resp, status: int, code: str, *, message_contains: str | None = None) -> dict[str, Any]:
    """The one check of the error envelope, used on every error path."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) <= {"message", "code", "status", "details"}
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in body["message"]
    if message_contains is not None:
        assert message_contains in body["message"]
    return body


async def receive_json(ws, timeout: float = RECEIVE_TIMEOUT) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
    return json.loads(msg.data)


async def receive_until(ws, type_: str, timeout: float = RECEIVE_TIMEOUT, **match: Any) -> dict[str, Any]:
    """Read messages until one of ``type_`` (and matching fields) arrives, or fail on timeout."""

    async def scan() -> dict[str, Any]:
        while True:
            message = await receive_json(ws, timeout)
            if message["type"] == type_ and all(message.get(k) == v for k, v in match.items()):
                return message

    return await asyncio.wait_for(scan(), timeout)


async def receive_close(ws, timeout: float = RECEIVE_TIMEOUT):
    """Read until the socket closes; returns the CLOSE message (data is the close code)."""

    async def scan():
        while True:
            msg = await ws.receive(timeout=timeout)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                return msg

    return await asyncio.wait_for(scan(), timeout)
