"""Hostile programs: each gets its verdict, and the executor stays healthy after it.

Limits come from conftest.TEST_LIMITS (3 s wall, 2 s CPU, 128 MiB, 32 processes,
16 KiB output, 8 MiB tmpfs, 4 MiB files).
"""

from __future__ import annotations

import dataclasses

import pytest

from algoroom.execution import Executor
from algoroom.languages import LANGUAGES

from .conftest import TEST_LIMITS, assert_still_healthy

pytestmark = pytest.mark.asyncio(loop_scope="session")

C_FORK_BOMB = """
#include <unistd.h>
int main(void) { for (;;) fork(); }
"""

C_MEMORY_BOMB = """
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
int main(void) {
    for (size_t total = 0;; total += 1 << 20) {
        char *p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "malloc failed after %zu MiB\\n", total >> 20); return 1; }
        memset(p, 1, 1 << 20);
    }
}
"""

PY_MULTIPROCESS_MEMORY = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        block = bytearray(60 * 1024 * 1024)  # 60 MiB each: under the per-process limit, over it in total
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(60)
print('parent waiting', flush=True)
time.sleep(60)
"""


def require(executor: Executor, language: str) -> None:
    if not executor.is_available_language(language):
        pytest.skip(f"{language} toolchain is not installed here")


# -- processes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "language,code",
    [
        ("python", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
        ("bash", ":(){ :|:& };:\nsleep 10"),  # pid 1 stays, so the bomb rages until the wall limit
        ("c", C_FORK_BOMB),
    ],
    ids=["python", "bash", "c"],
)
async def test_fork_bomb(executor: Executor, language: str, code: str) -> None:
    require(executor, language)
    result = await executor.run(language, code)
    assert not result.success
    assert result.status in ("timeout", "memory_limit", "runtime_error", "killed"), result
    await assert_still_healthy(executor)


async def test_process_limit_holds(executor: Executor) -> None:
    code = (
        "import os, time\nn = 0\n"
        "try:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError as e:\n    print(n, e.errno)\n"
    )
    result = await executor.run("python", code, timeout_ms=3000)
    assert result.status == "ok", result
    count, errno = result.stdout.split()
    assert int(count) < TEST_LIMITS.processes and errno == "11"  # EAGAIN
    await assert_still_healthy(executor)


async def test_background_processes_do_not_outlive_the_run(executor: Executor) -> None:
    code = (
        "for i in 1 2 3 4 5; do setsid sleep 300 & done\n"
        "( ( sleep 300 & ) & )\n"
        "nohup sleep 300 >/dev/null 2>&1 &\n"
        "disown -a\necho spawned\n"
    )
    result = await executor.run("bash", code)
    assert result.status == "ok", result
    assert result.stdout == "spawned\n"
    await assert_still_healthy(executor)


async def test_python_double_fork_daemon(executor: Executor) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(300)\n    os._exit(0)\n"
        "print('parent done')\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok" and result.stdout == "parent done\n", result
    await assert_still_healthy(executor)


async def test_kill_everything(executor: Executor) -> None:
    result = await executor.run("bash", "sleep 30 & kill -9 -1; echo survived")
    assert result.status == "ok", result
    assert result.stdout == "survived\n"  # -1 reaches nothing outside the run's pid namespace
    await assert_still_healthy(executor)


# -- memory ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "language,code",
    [
        ("python", "x = []\nwhile True:\n    x.append(bytearray(1024 * 1024))\n"),
        ("javascript", "const a = []; while (true) a.push(new Array(100000).fill(1.5));"),
        ("javascript", "const a = []; while (true) a.push(Buffer.alloc(1024 * 1024, 1));"),
        ("c", C_MEMORY_BOMB),
    ],
    ids=["python", "js-heap", "js-buffer", "c"],
)
async def test_memory_bomb(executor: Executor, language: str, code: str) -> None:
    require(executor, language)
    result = await executor.run(language, code)
    assert not result.success
    if language == "c":  # malloc returns NULL at RLIMIT_DATA: the program's own error path
        assert result.status in ("memory_limit", "runtime_error"), result
    else:
        assert result.status == "memory_limit", result
    await assert_still_healthy(executor)


async def test_memory_of_the_whole_run_is_bounded(executor: Executor) -> None:
    result = await executor.run("python", PY_MULTIPROCESS_MEMORY)
    assert result.status == "memory_limit", result
    assert "memory limit of 128 MiB" in result.error
    assert result.memory_kb > TEST_LIMITS.memory_mb * 1024
    await assert_still_healthy(executor)


# -- time ------------------------------------------------------------------------------


async def test_infinite_loop_keeps_output_before_the_kill(executor: Executor) -> None:
    result = await executor.run("python", "print('before')\nwhile True:\n    pass\n", timeout_ms=1000)
    assert result.status == "timeout", result
    assert result.error == "Execution timed out after 1000 ms"
    assert result.stdout == "before\n"
    assert 1000 <= result.execution_time_ms < 2000
    await assert_still_healthy(executor)


async def test_sleep_past_the_wall_limit(executor: Executor) -> None:
    result = await executor.run("bash", "echo start; sleep 60; echo never")
    assert result.status == "timeout", result
    assert result.stdout == "start\n"
    await assert_still_healthy(executor)


async def test_cpu_limit_per_process() -> None:
    # Its own executor: a wall limit far above the CPU limit, so a loaded machine cannot
    # turn the verdict into a wall-clock timeout.
    limits = dataclasses.replace(TEST_LIMITS, cpu_ms=1000, wall_ms=15000, max_concurrency=1)
    ex = Executor(limits, languages={"python": LANGUAGES["python"]})
    await ex.start()
    try:
        result = await ex.run("python", "print('spinning', flush=True)\nwhile True:\n    pass\n")
        assert result.status == "timeout", result
        assert result.signal == "SIGKILL"  # soft = hard: pid 1 would ignore SIGXCPU
        assert result.error == "Execution timed out after 1000 ms (CPU time limit)"
        assert result.stdout == "spinning\n"
        assert result.cpu_time_ms >= 1000 - 250
        await assert_still_healthy(ex)
    finally:
        await ex.close()


# -- output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "language,code",
    [
        ("python", "while True:\n    print('flood ' * 10)\n"),
        ("python", "import sys\nwhile True:\n    sys.stderr.write('err flood\\n')\n"),
        ("javascript", "for (;;) console.error('err flood ' + 'x'.repeat(50));"),
        ("python", "import sys\nsys.stdout.write('x' * 10_000_000)\n"),
        ("bash", "yes"),
    ],
    ids=["stdout", "stderr", "js-stderr", "one-huge-line", "yes"],
)
async def test_output_flood(executor: Executor, language: str, code: str) -> None:
    result = await executor.run(language, code)
    assert result.status == "output_limit", result
    assert result.truncated
    assert len(result.stdout.encode()) + len(result.stderr.encode()) == TEST_LIMITS.output_bytes
    assert result.execution_time_ms < TEST_LIMITS.wall_ms
    await assert_still_healthy(executor)


# -- files -----------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["/box", "/tmp", "/dev/shm"])
async def test_filling_a_writable_dir(executor: Executor, directory: str) -> None:
    code = (
        "import os, errno\nn = 0\ntry:\n"
        f"    while True:\n        with open(os.path.join('{directory}', f'f{{n}}'), 'wb') as f:\n"
        "            f.write(b'x' * 1024 * 1024)\n        n += 1\n"
        "except OSError as e:\n    print(n, errno.errorcode[e.errno])\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok", result
    count, error = result.stdout.split()
    assert int(count) <= TEST_LIMITS.workdir_mb and error == "ENOSPC"
    await assert_still_healthy(executor)


async def test_file_size_limit(executor: Executor) -> None:
    result = await executor.run("bash", "head -c 10000000 /dev/zero > big; echo after")
    assert result.stdout == "after\n" and "File size limit" in result.stderr, result
    await assert_still_healthy(executor)


@pytest.mark.parametrize("path", ["/", "/dev", "/usr/bin", "/etc"])
async def test_system_paths_are_read_only(executor: Executor, path: str) -> None:
    code = f"import os\ntry:\n    open(os.path.join('{path}', 'x'), 'w')\nexcept OSError as e:\n    print(e.errno)\n"
    result = await executor.run("python", code)
    assert result.status == "ok" and result.stdout.strip() in ("30", "13"), result  # EROFS or EACCES


async def test_nothing_carries_over_between_runs(executor: Executor) -> None:
    first = await executor.run("bash", "echo secret > /box/left; echo secret > /tmp/left; ls /box /tmp")
    assert first.status == "ok"
    second = await executor.run("bash", "ls -A /box /tmp /dev/shm")
    assert second.stdout.split() == ["/box:", "main.sh", "/dev/shm:", "/tmp:"]
