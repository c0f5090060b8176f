"""Algoroom mounted as a sub-app: REST, WebSocket, docs and OpenAPI under the prefix."""

from __future__ import annotations

import pytest
from aiohttp import web

from algoroom import create_app

from .conftest import assert_error, make_settings, receive_until


@pytest.fixture
async def parent_client(aiohttp_client):
    parent = web.Application()

    async def home(request: web.Request) -> web.Response:
        return web.Response(text="parent")

    parent.router.add_get("/", home)
    parent.add_subapp("/algoroom/", create_app(make_settings()))
    return await aiohttp_client(parent)


async def test_rest_and_websocket_work_under_the_prefix(parent_client):
    client = parent_client
    assert await (await client.get("/")).text() == "parent"
    assert await (await client.get("/algoroom/health")).json() == {"status": "healthy"}
    created = await client.post("/algoroom/sessions", json={"language": "python"})
    assert created.status == 201
    sid = (await created.json())["id"]
    ws = await client.ws_connect(f"/algoroom/ws/sessions/{sid}")
    assert (await receive_until(ws, "participant_joined"))["participants"] == 1
    resp = await client.put(f"/algoroom/sessions/{sid}/code", json={"code": "embedded"})
    assert resp.status == 200
    assert (await receive_until(ws, "code_update"))["code"] == "embedded"
    assert (await (await client.get(f"/algoroom/sessions/{sid}")).json())["participants"] == 1
    await ws.close()


async def test_errors_keep_the_envelope_under_the_prefix(parent_client):
    await assert_error(await parent_client.get("/algoroom/sessions/nope"), 404, "SESSION_NOT_FOUND")
    await assert_error(
        await parent_client.put(
            "/algoroom/sessions/nope/code", data=b"{", headers={"Content-Type": "application/json"}
        ),
        400,
        "INVALID_JSON",
    )
    await assert_error(await parent_client.get("/algoroom/no/such/route"), 404, "NOT_FOUND")


async def test_parent_routes_are_untouched_by_algoroom_middleware(parent_client):
    resp = await parent_client.get("/not-algoroom")
    assert resp.status == 404
    assert resp.content_type != "application/json"


async def test_docs_and_openapi_use_the_prefix(parent_client):
    document = await (await parent_client.get("/algoroom/openapi.json")).json()
    assert "/algoroom/sessions/{sessionId}" in document["paths"]
    assert all(path.startswith("/algoroom/") for path in document["paths"])
    for page in ("/algoroom/docs", "/algoroom/redoc"):
        resp = await parent_client.get(page)
        assert resp.status == 200 and resp.content_type == "text/html"
    asset = await parent_client.get("/algoroom/static/swagger-ui/swagger-ui-bundle.js")
    assert asset.status == 200
