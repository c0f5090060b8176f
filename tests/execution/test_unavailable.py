"""A host where the sandbox cannot work: one clear log line, 503s, or the dev-only opt-in.

Made real, not mocked: the executor runs in a child process inside a user namespace
(``unshare --user --map-root-user``), where it is "root" but cannot switch to the slot
uids, so its sandbox probe fails the way it would on a misconfigured host.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from algoroom.execution import UNSANDBOXED_WARNING

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import asyncio, json, logging, sys
from algoroom.errors import ExecutionUnavailable
from algoroom.execution import Executor, ExecutionLimits
from algoroom.languages import LANGUAGES

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="LOG %(levelname)s %(message)s")

async def main():
    report = {}
    strict = Executor(ExecutionLimits(max_concurrency=1), languages={"python": LANGUAGES["python"]})
    await strict.start()
    report["strict"] = {"available": strict.available, "reason": strict.unavailable_reason,
                        "languages": strict.languages()}
    try:
        await strict.run("python", "print(1)")
    except ExecutionUnavailable as exc:
        report["strict"]["error"] = [exc.status, exc.code, exc.message]
    await strict.close()

    dev = Executor(ExecutionLimits(max_concurrency=1, wall_ms=2000), allow_unsandboxed=True,
                   languages={"python": LANGUAGES["python"]})
    await dev.start()
    result = await dev.run("python", "print('unsafe but running')")
    loop = await dev.run("python", "while True: pass")
    report["dev"] = {"available": dev.available, "unsandboxed": dev.unsandboxed, "result": result.to_dict(),
                     "loop": loop.to_dict()}
    await dev.close()
    print(json.dumps(report))

asyncio.run(main())
"""


async def test_unusable_sandbox() -> None:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to make a user namespace that breaks the sandbox")
    proc = await asyncio.create_subprocess_exec(
        unshare, "--user", "--map-root-user", sys.executable, "-c", DRIVER,
        cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    log_lines = [line for line in err.decode().splitlines() if line.startswith("LOG ")]

    strict = report["strict"]
    assert strict["available"] is False and strict["languages"] == []
    reason = strict["reason"]
    assert reason.startswith("code execution is disabled:") and "\n" not in reason
    assert strict["error"][:2] == [503, "EXECUTION_UNAVAILABLE"]
    assert [line for line in log_lines if "code execution is disabled" in line] == [f"LOG ERROR {reason}"]

    dev = report["dev"]
    assert dev["available"] is True and dev["unsandboxed"] is True
    assert dev["result"]["output"] == "unsafe but running\n" and dev["result"]["success"] is True
    assert "UNSAFE" in dev["result"]["warning"]
    assert dev["loop"]["status"] == "timeout" and "UNSAFE" in dev["loop"]["warning"]
    warning = err.decode().split("LOG WARNING", 1)[-1]
    assert UNSANDBOXED_WARNING in warning and "sandbox unusable: code execution is disabled" in warning
