"""CORS: the default allow-list, its replacement, and preflights from strangers."""

from __future__ import annotations

import pytest

from algoroom import Settings, create_app

PREFLIGHT = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"}


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:5173", "http://localhost:3000", "http://127.0.0.1:5173", "http://127.0.0.1:3000"],
)
async def test_default_origins_pass_preflight(client, session_id, origin):
    resp = await client.options(f"/sessions/{session_id}/code", headers={"Origin": origin, **PREFLIGHT})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "content-type"


async def test_unknown_origin_gets_no_allow_origin(client, session_id):
    headers = {"Origin": "http://evil.example", **PREFLIGHT}
    resp = await client.options(f"/sessions/{session_id}/code", headers=headers)
    assert "Access-Control-Allow-Origin" not in resp.headers
    simple = await client.get(f"/sessions/{session_id}", headers={"Origin": "http://evil.example"})
    assert simple.status == 200
    assert "Access-Control-Allow-Origin" not in simple.headers


async def test_actual_request_and_errors_carry_allow_origin(client):
    resp = await client.get("/sessions/nope", headers={"Origin": "http://localhost:5173"})
    assert resp.status == 404
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "Origin" in resp.headers["Vary"]


async def test_env_replaces_the_list(aiohttp_client):
    env = {"ALGOROOM_CORS_ORIGINS": "https://app.example, https://b.example"}
    settings = Settings.from_env(env, database_url="memory://", exec_enabled=False)
    assert settings.cors_origins == ("https://app.example", "https://b.example")
    client = await aiohttp_client(create_app(settings))
    ok = await client.options("/sessions", headers={"Origin": "https://b.example", **PREFLIGHT})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://b.example"
    gone = await client.options("/sessions", headers={"Origin": "http://localhost:5173", **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in gone.headers
