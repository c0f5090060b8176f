"""POST /sessions/{id}/execute and GET /languages over HTTP, against the real sandbox."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from algoroom import create_app
from algoroom.keys import EXECUTOR

from .conftest import assert_error, make_settings, receive_until

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
async def exec_client(aiohttp_client):
    return await aiohttp_client(
        create_app(make_settings(exec_enabled=True, exec_wall_ms=3000, exec_max_concurrency=2, exec_max_queue=1))
    )


async def new_session(client, language: str, code: str) -> str:
    sid = (await (await client.post("/sessions", json={"language": language})).json())["id"]
    assert (await client.put(f"/sessions/{sid}/code", json={"code": code})).status == 200
    return sid


@needs_bwrap
async def test_languages_lists_python_and_javascript(exec_client):
    body = await (await exec_client.get("/languages")).json()
    assert body["execution"] == {"available": True, "sandboxed": True}
    ids = {lang["id"] for lang in body["languages"]}
    assert {"python", "javascript"} <= ids
    assert all(lang["version"] for lang in body["languages"])


@needs_bwrap
async def test_execute_reaches_everyone_and_returns_the_result(exec_client):
    sid = await new_session(exec_client, "javascript", "console.log('hi')")
    ws = await exec_client.ws_connect(f"/ws/sessions/{sid}")
    resp = await exec_client.post(f"/sessions/{sid}/execute")
    assert resp.status == 200
    result = await resp.json()
    assert result["success"] is True and result["output"] == "hi\n" and result["status"] == "ok"
    assert result["language"] == "javascript" and result["version"]
    assert isinstance(result["executionTime"], int)
    started = await receive_until(ws, "execution_started")
    finished = await receive_until(ws, "execution_result")
    assert started["runId"] == finished["runId"] and started["language"] == "javascript"
    assert finished["executionResult"] == result
    await ws.close()


@needs_bwrap
async def test_python_error_timeout_stdin_and_empty_code(exec_client):
    sid = await new_session(exec_client, "python", "raise ValueError('boom')")
    result = await (await exec_client.post(f"/sessions/{sid}/execute")).json()
    assert result["success"] is False and result["status"] == "runtime_error"
    assert "ValueError: boom" in result["error"]

    await exec_client.put(f"/sessions/{sid}/code", json={"code": "print('before', flush=True)\nwhile True: pass"})
    result = await (await exec_client.post(f"/sessions/{sid}/execute", json={"timeoutMs": 500})).json()
    assert result["status"] == "timeout"
    assert result["error"].endswith("Execution timed out after 500 ms")
    assert result["output"] == "before\n"

    code = "import sys; print(sys.stdin.read().upper(), sys.argv[1:])"
    await exec_client.put(f"/sessions/{sid}/code", json={"code": code})
    body = {"stdin": "abc", "args": ["x", "y"]}
    result = await (await exec_client.post(f"/sessions/{sid}/execute", json=body)).json()
    assert result["output"] == "ABC ['x', 'y']\n"

    await exec_client.put(f"/sessions/{sid}/code", json={"code": ""})
    result = await (await exec_client.post(f"/sessions/{sid}/execute")).json()
    assert result["success"] is True and result["output"] == "" and result["executionTime"] == 0


async def test_execute_validation_and_unknown_session(client, session_id):
    await assert_error(await client.post("/sessions/nope/execute"), 404, "SESSION_NOT_FOUND")
    cases = (
        ({"timeoutMs": "1"}, "timeoutMs"), ({"args": "x"}, "args"), ({"args": ["a\u0000b"]}, "args"),
        ({"stdn": ""}, "stdn"),
    )
    for body, field in cases:
        resp = await client.post(f"/sessions/{session_id}/execute", json=body)
        error = await assert_error(resp, 422, "VALIDATION_ERROR")
        assert field in error["details"]


async def test_execute_is_503_when_execution_is_unavailable(client, session_id):
    error = await assert_error(await client.post(f"/sessions/{session_id}/execute"), 503, "EXECUTION_UNAVAILABLE")
    assert "disabled" in error["message"]
    body = await (await client.get("/languages")).json()
    assert body["execution"]["available"] is False and body["languages"] == []
    assert "ALGOROOM_EXEC_ENABLED" in body["execution"]["reason"]


@needs_bwrap
async def test_busy_executor_answers_429_with_retry_after(exec_client):
    sid = await new_session(exec_client, "python", "import time; time.sleep(2)")
    runs = [asyncio.ensure_future(exec_client.post(f"/sessions/{sid}/execute")) for _ in range(3)]
    executor = exec_client.app[EXECUTOR]

    async def saturated() -> None:
        while executor.running + executor.queued < 3:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(saturated(), 10)
    resp = await exec_client.post(f"/sessions/{sid}/execute")
    await assert_error(resp, 429, "EXECUTION_BUSY")
    assert int(resp.headers["Retry-After"]) >= 1
    for done in await asyncio.gather(*runs):
        assert done.status == 200


@needs_bwrap
async def test_client_disconnect_kills_the_run(exec_client):
    sid = await new_session(exec_client, "python", "import time\nwhile True: time.sleep(0.05)")
    ws = await exec_client.ws_connect(f"/ws/sessions/{sid}")
    executor = exec_client.app[EXECUTOR]
    request = asyncio.ensure_future(exec_client.post(f"/sessions/{sid}/execute"))
    await receive_until(ws, "execution_started")

    async def running() -> None:
        while executor.running < 1:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(running(), 5)
    request.cancel()  # the HTTP client goes away mid-run
    result = await receive_until(ws, "execution_result", timeout=5)
    assert result["executionResult"]["status"] == "killed"
    assert "disconnected" in result["executionResult"]["error"]

    async def idle() -> None:
        while executor.running:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(idle(), 5)
    await ws.close()
