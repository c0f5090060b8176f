"""Fixtures of the executor tests: one real, started Executor per test session.

Starting an executor detects every language by running its toolchain in the sandbox
(about half a second), so the tests of this directory share one, on a session-scoped
event loop. Limits are small so the hostile programs hit them fast.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable

import pytest
import pytest_asyncio

from algoroom.execution import ExecutionLimits, Executor
from algoroom.execution.watchdog import scan_uids

TEST_LIMITS = ExecutionLimits(
    cpu_ms=2000,
    wall_ms=3000,
    memory_mb=128,
    processes=32,
    output_bytes=16384,
    file_size_bytes=4 * 1024 * 1024,
    open_files=64,
    workdir_mb=8,
    compile_wall_ms=20000,
    max_concurrency=2,
    max_queue=40,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def executor() -> Executor:
    if shutil.which("bwrap", path="/usr/bin:/bin") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root to give each slot its own uid")
    ex = Executor(TEST_LIMITS)
    await ex.start()
    assert ex.available, ex.unavailable_reason
    assert not ex.unsandboxed
    yield ex
    await ex.close()
    assert_nothing_left(ex.slot_uids)


def assert_nothing_left(uids: tuple[int, ...], prestarted: set[int] = frozenset()) -> None:
    """No process of any slot uid exists (no orphan, no zombie, no daemon), except the
    sandboxes waiting for their next run (``prestarted``: their outer pids) and what is in them."""
    pids = {pid for usage in scan_uids(uids).values() for pid in usage.pids}
    allowed = set(prestarted) & pids
    while True:  # the waiting sandboxes' descendants, by parent pid
        more = {pid for pid in pids - allowed if _parent(pid) in allowed}
        if not more:
            break
        allowed |= more
    left = sorted(pids - allowed)
    assert not left, f"processes left behind: {left}"


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll a host-side condition (e.g. /proc) until it holds; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def assert_still_healthy(executor: Executor) -> None:
    """A normal run right after a hostile one works and nothing of the slots is left."""
    result = await executor.run("python", "print('still fine')")
    assert result.status == "ok", result
    assert result.stdout == "still fine\n"
    await wait_until(lambda: executor.running == 0, what="slots released")
    assert_nothing_left(executor.slot_uids, executor.prestarted_pids)
