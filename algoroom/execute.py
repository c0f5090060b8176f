"""``POST /sessions/{id}/execute`` and ``GET /languages``: the HTTP side of the executor.

A run is announced to every socket of the session (``execution_started``), runs in the
sandbox, and its result goes both to the caller and to every socket
(``execution_result``, the same message a client-computed result produces). If the
caller disconnects mid-run, the run is killed rather than left going, and the session
is told it was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp_apispec import docs, request_schema, response_schema

from .errors import ApiError, ExecutionBusy, ExecutionUnavailable
from .execution import Executor, ExecutionLimits, RunResult
from .keys import EXECUTOR, SERVICE, SETTINGS
from .messages import execution_message
from .rest import errors
from .schemas import ExecuteRequestSchema, ExecutionReportSchema, LanguagesSchema
from .settings import Settings

_report_schema = ExecutionReportSchema()
_languages_schema = LanguagesSchema()

#: How often a running request checks whether its client has gone away.
DISCONNECT_POLL_SECONDS = 0.1


def execution_limits(settings: Settings) -> ExecutionLimits:
    defaults = ExecutionLimits()
    return ExecutionLimits(
        cpu_ms=settings.exec_cpu_ms,
        wall_ms=settings.exec_wall_ms,
        memory_mb=settings.exec_memory_mb,
        processes=settings.exec_processes,
        output_bytes=settings.exec_output_bytes,
        file_size_bytes=settings.exec_file_size_bytes,
        open_files=settings.exec_open_files,
        workdir_mb=settings.exec_workdir_mb,
        compile_wall_ms=settings.exec_compile_wall_ms,
        compile_memory_mb=settings.exec_compile_memory_mb,
        max_concurrency=settings.exec_max_concurrency or defaults.max_concurrency,
        max_queue=settings.exec_max_queue if settings.exec_max_queue >= 0 else defaults.max_queue,
    )


async def executor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the executor with the app (probing the sandbox), kill every run on the way out."""
    settings = app[SETTINGS]
    executor = Executor(execution_limits(settings), allow_unsandboxed=settings.exec_allow_unsandboxed)
    if settings.exec_enabled:
        await executor.start()
    else:
        executor.unavailable_reason = "code execution is disabled (ALGOROOM_EXEC_ENABLED=false)"
    app[EXECUTOR] = executor
    try:
        yield
    finally:
        await executor.close()


@docs(
    tags=["execution"],
    summary="Languages this server can run",
    description="Detected at startup from the toolchains that work inside the sandbox.",
)
@response_schema(LanguagesSchema, 200, description="Execution status and the available languages.")
@errors()
async def list_languages(request: web.Request) -> web.Response:
    executor = request.app[EXECUTOR]
    execution = {"available": executor.available, "sandboxed": executor.available and not executor.unsandboxed}
    if not executor.available:
        execution["reason"] = executor.unavailable_reason
    body = {"execution": execution, "languages": executor.languages() if executor.available else []}
    return web.json_response(_languages_schema.dump(body))


@docs(
    tags=["execution"],
    summary="Run the session's code in the sandbox",
    description="Every socket of the session receives `execution_started`, then `execution_result` "
    "with the same result this call returns.",
)
@request_schema(ExecuteRequestSchema)
@response_schema(ExecutionReportSchema, 200, description="The run's result (whatever the program did).")
@errors(400, 404, 413, 422, 429, 503)
async def execute(request: web.Request) -> web.Response:
    service, executor = request.app[SERVICE], request.app[EXECUTOR]
    data = request["data"]
    session = await service.get(request.match_info["sessionId"])
    code = await service.current_code(session)
    if not executor.available:
        raise ExecutionUnavailable(executor.unavailable_reason or "code execution is unavailable")
    if executor.running >= executor.limits.max_concurrency and executor.queued >= executor.limits.max_queue:
        raise ExecutionBusy(1)

    run_id = str(uuid.uuid4())
    service.cluster.broadcast(
        session.id, execution_message("execution_started", session.id, runId=run_id, language=session.language)
    )
    run = asyncio.ensure_future(
        executor.run(session.language, code, stdin=data["stdin"], args=data["args"], timeout_ms=data.get("timeout_ms"))
    )
    try:
        async with _cancel_on_disconnect(request, run):
            result: RunResult = await run
    except asyncio.CancelledError:
        report = _failure_report(session.language, "killed", "Run cancelled: the requesting client disconnected")
        await service.share_execution_result(session.id, report, runId=run_id)
        raise
    except ApiError as error:
        report = _failure_report(session.language, "internal_error", error.message)
        await service.share_execution_result(session.id, report, runId=run_id)
        raise
    report = _report_schema.dump(_attributes(result))
    await service.share_execution_result(session.id, report, runId=run_id)
    return web.json_response(report)


def _attributes(result: RunResult) -> dict:
    """``RunResult.to_dict()`` under the schema's attribute names, so the schema dumps it."""
    wire = result.to_dict()
    return {_ATTRIBUTE.get(key, key): value for key, value in wire.items()}


_ATTRIBUTE = {
    field.data_key: name for name, field in ExecutionReportSchema().fields.items() if field.data_key is not None
}


def _failure_report(language: str, status: str, message: str) -> dict:
    return _report_schema.dump(
        {
            "success": False, "output": "", "error": message, "execution_time": 0, "status": status,
            "stdout": "", "stderr": "", "exit_code": None, "signal": None, "compile_output": None,
            "cpu_time_ms": 0, "memory_kb": 0, "truncated": False, "language": language, "version": None,
            "warning": None,
        }
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(request: web.Request, run: asyncio.Future) -> AsyncIterator[None]:
    """Cancel ``run`` (which kills the sandboxed process tree) if the client goes away."""

    async def watch() -> None:
        while not run.done():
            transport = request.transport
            if transport is None or transport.is_closing():
                run.cancel()
                return
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def add_routes(app: web.Application) -> None:
    app.router.add_get("/languages", list_languages, allow_head=False)
    app.router.add_post("/sessions/{sessionId}/execute", execute)
