"""The REST contract of the seed, kept wire-compatible, plus revision and updatedAt."""

from __future__ import annotations

import io
import json
import logging
import uuid
from datetime import datetime

import pytest

from algoroom import create_app
from algoroom.keys import SERVICE

from .conftest import assert_error, make_settings

SESSION_FIELDS = {"id", "code", "language", "createdAt", "updatedAt", "participants", "revision"}


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset().total_seconds() == 0
    return moment


async def test_health_is_exactly_healthy(client):
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "healthy"}


async def test_create_session_defaults_to_javascript(client):
    resp = await client.post("/sessions")
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == SESSION_FIELDS
    assert uuid.UUID(body["id"]).version == 4
    assert body["code"] == ""
    assert body["language"] == "javascript"
    assert body["participants"] == 0
    assert body["revision"] == 0
    assert parse_time(body["createdAt"]) == parse_time(body["updatedAt"])


async def test_create_session_with_language(client):
    resp = await client.post("/sessions", json={"language": "python"})
    assert resp.status == 201
    assert (await resp.json())["language"] == "python"


async def test_create_session_ids_are_unique(client):
    ids = {(await (await client.post("/sessions")).json())["id"] for _ in range(5)}
    assert len(ids) == 5


async def test_get_session_returns_it_with_etag(client, session_id):
    resp = await client.get(f"/sessions/{session_id}")
    assert resp.status == 200
    body = await resp.json()
    assert body["id"] == session_id
    assert body["language"] == "python"
    assert resp.headers["ETag"] == '"0"'


@pytest.mark.parametrize("missing", [str(uuid.uuid4()), "not-a-uuid", "x" * 300])
async def test_get_unknown_session_is_404_naming_the_id(client, missing):
    resp = await client.get(f"/sessions/{missing}")
    await assert_error(resp, 404, "SESSION_NOT_FOUND", message_contains=missing)


async def test_put_code_updates_code_revision_and_time(client, session_id):
    before = await (await client.get(f"/sessions/{session_id}")).json()
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "print(42)"})
    assert resp.status == 200
    body = await resp.json()
    assert body["code"] == "print(42)"
    assert body["revision"] == 1
    assert body["language"] == "python"
    assert parse_time(body["updatedAt"]) >= parse_time(before["updatedAt"])
    assert body["createdAt"] == before["createdAt"]
    again = await (await client.get(f"/sessions/{session_id}")).json()
    assert again["code"] == "print(42)" and again["revision"] == 1


async def test_put_code_can_change_language_and_be_empty(client, session_id):
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "", "language": "javascript"})
    assert resp.status == 200
    body = await resp.json()
    assert body["code"] == "" and body["language"] == "javascript" and body["revision"] == 1


async def test_put_code_keeps_unicode(client, session_id):
    code = "print('héllo 世界 🎉')\n"
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": code})
    assert (await resp.json())["code"] == code


async def test_put_code_ignores_extra_fields_like_the_seed(client, session_id):
    resp = await client.put(f"/sessions/{session_id}/code", json={"code": "x", "sessionId": session_id, "extra": 1})
    assert resp.status == 200
    assert (await resp.json())["code"] == "x"


async def test_put_code_unknown_session(client):
    resp = await client.put("/sessions/nope/code", json={"code": "x"})
    await assert_error(resp, 404, "SESSION_NOT_FOUND", message_contains="nope")


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "code"),
        ({"code": 5}, "code"),
        ({"code": None}, "code"),
        ({"code": ["a"]}, "code"),
        ({"code": "x", "language": "cobol"}, "language"),
        ({"code": "\ud800 lone surrogate"}, "code"),
        ([1, 2], "body"),
        ("just a string", "body"),
        (42, "body"),
    ],
)
async def test_put_code_schema_violations_are_422(client, session_id, body, field):
    resp = await client.put(f"/sessions/{session_id}/code", json=body)
    error = await assert_error(resp, 422, "VALIDATION_ERROR")
    assert field in error["details"]
    assert isinstance(error["details"][field], list)
    after = await (await client.get(f"/sessions/{session_id}")).json()
    assert after["revision"] == 0


async def test_create_session_unknown_language_is_422(client):
    resp = await client.post("/sessions", json={"language": "cobol"})
    error = await assert_error(resp, 422, "VALIDATION_ERROR")
    assert "language" in error["details"]


@pytest.mark.parametrize("raw", [b"{", b"{'code': 1}", b"\xff\xfe", b'{"code": "a"'])
async def test_malformed_json_is_400(client, session_id, raw):
    resp = await client.put(
        f"/sessions/{session_id}/code", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(resp, 400, "INVALID_JSON")


async def test_body_over_limit_is_413_and_changes_nothing(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1000)))
    sid = (await (await client.post("/sessions")).json())["id"]
    resp = await client.put(f"/sessions/{sid}/code", json={"code": "x" * 2000})
    await assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    ok = await client.put(f"/sessions/{sid}/code", json={"code": "x" * 900})
    assert ok.status == 200
    assert (await ok.json())["revision"] == 1


async def test_chunked_body_over_limit_is_413(aiohttp_client):
    client = await aiohttp_client(create_app(make_settings(max_body_bytes=1000)))
    sid = (await (await client.post("/sessions")).json())["id"]

    async def chunks():
        for _ in range(10):
            yield b"x" * 500

    resp = await client.put(f"/sessions/{sid}/code", data=chunks())
    await assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_default_body_limit_is_one_mebibyte(client, session_id):
    body = io.BytesIO(json.dumps({"code": "x" * (1024 * 1024)}).encode())
    resp = await client.put(f"/sessions/{session_id}/code", data=body)
    await assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


async def test_unknown_route_is_404_not_found(client):
    resp = await client.get("/no/such/route")
    await assert_error(resp, 404, "NOT_FOUND")


async def test_wrong_method_is_405(client, session_id):
    resp = await client.delete("/health")
    body = await assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert body["status"] == 405
    assert "GET" in resp.headers["Allow"]


async def test_unexpected_error_is_500_without_traceback(client, session_id, caplog, monkeypatch):
    async def explode(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(client.app[SERVICE].store, "get", explode)
    with caplog.at_level(logging.ERROR, logger="algoroom.http"):
        resp = await client.get(f"/sessions/{session_id}")
        body = await assert_error(resp, 500, "INTERNAL_SERVER_ERROR")
    assert "secret internals" not in str(body)
    assert any("secret internals" in (r.exc_text or "") for r in caplog.records)
    assert (await client.get("/health")).status == 200


async def test_execution_result_is_accepted_with_204(client, session_id):
    resp = await client.post(
        f"/sessions/{session_id}/execution-result",
        json={"success": True, "output": "hi\n", "error": None, "executionTime": 12},
    )
    assert resp.status == 204


@pytest.mark.parametrize(
    "body, field",
    [
        ({"output": "", "executionTime": 1}, "success"),
        ({"success": "yes", "output": "", "executionTime": 1}, "success"),
        ({"success": True, "output": 3, "executionTime": 1}, "output"),
        ({"success": True, "output": "", "executionTime": -1}, "executionTime"),
        ({"success": True, "output": ""}, "executionTime"),
    ],
)
async def test_execution_result_validation(client, session_id, body, field):
    resp = await client.post(f"/sessions/{session_id}/execution-result", json=body)
    error = await assert_error(resp, 422, "VALIDATION_ERROR")
    assert field in error["details"]


async def test_execution_result_unknown_session(client):
    resp = await client.post(
        "/sessions/nope/execution-result", json={"success": True, "output": "", "executionTime": 1}
    )
    await assert_error(resp, 404, "SESSION_NOT_FOUND")
