"""No run outlives the server, whether it is stopped (SIGTERM) or killed (SIGKILL) mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from algoroom.execution.watchdog import scan_uids

from .conftest import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]

#: A stand-in server: starts an executor, starts a run that leaves daemons behind and
#: sleeps, reports the slot uid once all of its processes exist, then waits forever.
DRIVER = """
import asyncio, json
from algoroom.execution import Executor, ExecutionLimits
from algoroom.execution.watchdog import scan_uids
from algoroom.languages import LANGUAGES

CODE = "for i in 1 2 3; do setsid sleep 300 & done; ( ( sleep 300 & ) & ); sleep 300"

async def main():
    ex = Executor(ExecutionLimits(max_concurrency=1, wall_ms=120000, cpu_ms=120000),
                  languages={"bash": LANGUAGES["bash"]})
    await ex.start()
    assert ex.available, ex.unavailable_reason
    task = asyncio.ensure_future(ex.run("bash", CODE))
    uid = ex.slot_uids[0]
    while len(scan_uids([uid])[uid].pids) < 7:  # outer bwrap, bash, 3 setsid sleeps, the daemon, sleep
        await asyncio.sleep(0.01)
    print(json.dumps({"uids": list(ex.slot_uids)}), flush=True)
    await task

asyncio.run(main())
"""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_runs_die_with_the_server(signum: int) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root to give each slot its own uid")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DRIVER, cwd=str(REPO), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise AssertionError((await proc.stderr.read()).decode())
        uids = tuple(json.loads(line)["uids"])
        assert all(scan_uids(uids)[uid].pids for uid in uids)
        proc.send_signal(signum)
        await asyncio.wait_for(proc.stdout.read(), 10)  # drain to EOF before wait() (CPython 119710)
        await asyncio.wait_for(proc.stderr.read(), 10)
        assert await asyncio.wait_for(proc.wait(), 10) == -signum
        await wait_until(lambda: not any(usage.pids for usage in scan_uids(uids).values()), timeout=5,
                         what="every process of the killed server's runs to be gone")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
