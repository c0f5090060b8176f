"""Slots, queue, busy, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import pytest
import pytest_asyncio

from algoroom.errors import ExecutionBusy
from algoroom.execution import ExecutionLimits, Executor
from algoroom.execution.watchdog import scan_uids
from algoroom.languages import LANGUAGES

from .conftest import assert_nothing_left, wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIXED = [
    ("python", "import sys\nprint(sum(range(int(sys.argv[1]))))", lambda n: f"{sum(range(n))}\n"),
    ("javascript", "const n = +process.argv[2]; let s = 0; for (let i = 0; i < n; i++) s += i; console.log(s)",
     lambda n: f"{sum(range(n))}\n"),
    ("bash", 'echo $(( $1 * ($1 - 1) / 2 ))', lambda n: f"{sum(range(n))}\n"),
    ("c", ('#include <stdio.h>\n#include <stdlib.h>\nint main(int c, char **v) { long n = atol(v[1]), s = 0;\n'
           'for (long i = 0; i < n; i++) s += i; printf("%ld\\n", s); }\n'), lambda n: f"{sum(range(n))}\n"),
]


async def test_twenty_concurrent_mixed_runs(executor: Executor) -> None:
    jobs = []
    for i in range(20):
        language, code, expect = MIXED[i % len(MIXED)]
        if executor.is_available_language(language):
            jobs.append((language, code, 1000 + i, expect(1000 + i)))
    results = await asyncio.gather(*(executor.run(lang, code, args=[str(n)]) for lang, code, n, _ in jobs))
    counts = collections.Counter()
    for (language, _, _, expected), result in zip(jobs, results):
        assert result.status == "ok", (language, result)
        assert result.stdout == expected, (language, result)
        counts[language] += 1
    assert sum(counts.values()) == len(jobs) >= 10
    await wait_until(lambda: executor.running == 0, what="slots released")
    assert_nothing_left(executor.slot_uids, executor.prestarted_pids)


@pytest_asyncio.fixture(loop_scope="session")
async def tiny_executor():
    ex = Executor(ExecutionLimits(max_concurrency=1, max_queue=1, wall_ms=20000), languages={
        "python": LANGUAGES["python"],
    })
    await ex.start()
    assert ex.available, ex.unavailable_reason
    yield ex
    await ex.close()
    assert_nothing_left(ex.slot_uids)


async def test_busy_when_slots_and_queue_are_full(tiny_executor: Executor) -> None:
    ex = tiny_executor
    holder = asyncio.ensure_future(ex.run("python", "import time; time.sleep(30)"))
    await asyncio.sleep(0)  # one turn: the free slot is taken without waiting
    assert ex.running == 1
    waiter = asyncio.ensure_future(ex.run("python", "print('queued')"))
    await asyncio.sleep(0)
    assert ex.queued == 1
    with pytest.raises(ExecutionBusy) as info:
        await ex.run("python", "print('rejected')")
    assert info.value.status == 429
    assert int(info.value.headers["Retry-After"]) >= 1

    # The client of the long run goes away: its run is killed and the queued one proceeds.
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    queued = await asyncio.wait_for(waiter, 10)
    assert queued.status == "ok" and queued.stdout == "queued\n"
    await wait_until(lambda: ex.running == 0, what="slot released")
    assert_nothing_left(ex.slot_uids, ex.prestarted_pids)


async def test_cancel_while_queued(tiny_executor: Executor) -> None:
    ex = tiny_executor
    holder = asyncio.ensure_future(ex.run("python", "import time; time.sleep(30)"))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(ex.run("python", "print('never')"))
    await asyncio.sleep(0)
    assert ex.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert ex.queued == 0
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    result = await asyncio.wait_for(ex.run("python", "print('next')"), 10)
    assert result.stdout == "next\n"


async def test_close_kills_running_runs(tiny_executor: Executor) -> None:
    ex = tiny_executor
    uids = ex.slot_uids
    task = asyncio.ensure_future(ex.run("python", "import time\nprint('up', flush=True)\ntime.sleep(30)"))

    def program_running() -> bool:  # the run's own python, not the slot's waiting sandbox
        for usage in scan_uids(uids).values():
            for pid in usage.pids:
                try:
                    if b"main.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        return True
                except OSError:
                    continue
        return False

    await wait_until(program_running, what="the program running")
    await asyncio.wait_for(ex.close(), 10)
    result = await asyncio.wait_for(task, 5)
    assert result.status == "killed", result
    assert_nothing_left(uids)


async def test_sandboxes_started_on_demand() -> None:
    """The same runs without pre-started sandboxes (the fallback path)."""
    ex = Executor(
        ExecutionLimits(max_concurrency=1, wall_ms=3000), prestart=False,
        languages={lang: LANGUAGES[lang] for lang in ("python", "bash", "c")},
    )
    await ex.start()
    try:
        assert ex.prestarted_pids == set()
        result = await ex.run("python", "import sys\nprint(sys.argv[1:], sys.stdin.read())", stdin="in", args=["a"])
        assert result.status == "ok" and result.stdout == "['a'] in\n", result
        result = await ex.run("bash", "for i in 1 2 3; do setsid sleep 60 & done; echo ok")
        assert result.stdout == "ok\n"
        if ex.is_available_language("c"):
            result = await ex.run("c", '#include <stdio.h>\nint main(void) { puts("compiled"); }\n')
            assert result.status == "ok" and result.stdout == "compiled\n", result
        result = await ex.run("python", "print('x', flush=True)\nimport time\ntime.sleep(30)", timeout_ms=500)
        assert result.status == "timeout" and result.stdout == "x\n"
        await wait_until(lambda: ex.running == 0, what="slot released")
        assert_nothing_left(ex.slot_uids)
    finally:
        await ex.close()
