"""Benchmark code execution: the sandboxed executor against a bare spawn, in one run.

For Python ``print(1)`` and JavaScript ``console.log(1)``:
- latency (median, p99) of ``Executor.run`` and, with ``--url`` of a running server, of
  ``POST {url}/sessions/{id}/execute`` end to end, interleaved with a bare
  ``python3 -c``/``node -e`` spawn (asyncio subprocess, pipes drained) so all see the
  same machine;
- throughput (runs/s) of ``2 x cores`` concurrent clients for ``--seconds`` each.

Targets (issue 3): median <= 1.5x the bare spawn, p99 <= 3x its own median.

    sudo .venv/bin/python bench/bench_execute.py [--url http://127.0.0.1:8080] [--runs 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algoroom.execution import ExecutionLimits, Executor  # noqa: E402

CASES = {
    "python": ("print(1)", ["/usr/bin/python3", "-c", "print(1)"]),
    "javascript": ("console.log(1)", ["/usr/bin/node", "-e", "console.log(1)"]),
}

Job = Callable[[], Awaitable[None]]


#: The bare spawn gets the sandbox's clean environment, not the benchmark's: otherwise
#: a host variable such as NODE_EXTRA_CA_CERTS (loaded at every node start) is timed
#: on one side only.
BARE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


async def bare_spawn(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=BARE_ENV, cwd="/tmp",
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out == b"1\n", (proc.returncode, out)


def executor_job(executor: Executor, language: str, code: str) -> Job:
    async def job() -> None:
        result = await executor.run(language, code)
        assert result.status == "ok" and result.stdout == "1\n", result

    return job


async def http_job_for(http, url: str, language: str, code: str) -> Job:
    async with http.post(f"{url}/sessions", json={"language": language}) as resp:
        assert resp.status == 201, await resp.text()
        session_id = (await resp.json())["id"]
    async with http.put(f"{url}/sessions/{session_id}/code", json={"code": code}) as resp:
        assert resp.status == 200, await resp.text()

    async def job() -> None:
        async with http.post(f"{url}/sessions/{session_id}/execute") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["success"] and body["output"] == "1\n", body

    return job


async def timed(job: Job) -> float:
    start = time.perf_counter()
    await job()
    return (time.perf_counter() - start) * 1000


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return statistics.median(ordered), p99


async def throughput(job: Job, clients: int, seconds: float) -> float:
    deadline = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await job()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return done / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="base URL of a running algoroom server, for the end-to-end figures")
    parser.add_argument("--runs", type=int, default=200, help="latency samples per path (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput phase")
    parser.add_argument("--languages", default=",".join(CASES), help="comma-separated: python,javascript")
    options = parser.parse_args()

    cores = os.cpu_count() or 1
    clients = 2 * cores
    executor = Executor(ExecutionLimits(max_concurrency=cores, max_queue=4 * clients))
    await executor.start()
    if not executor.available:
        sys.exit(f"executor unavailable: {executor.unavailable_reason}")
    http = None
    if options.url:
        import aiohttp

        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients * 2))
    rows = []
    try:
        for language in options.languages.split(","):
            code, bare_argv = CASES[language]
            paths: dict[str, Job] = {
                "bare spawn": lambda argv=bare_argv: bare_spawn(argv),
                "Executor.run": executor_job(executor, language, code),
            }
            if http is not None:
                paths["POST /execute"] = await http_job_for(http, options.url.rstrip("/"), language, code)
            for job in paths.values():  # warm up caches, JIT-less but page cache and pyc
                for _ in range(5):
                    await job()
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(options.runs):  # interleaved: every path sees the same machine state
                for name, job in paths.items():
                    samples[name].append(await timed(job))
            bare_median = summary(samples["bare spawn"])[0]
            for name, job in paths.items():
                median, p99 = summary(samples[name])
                rate = await throughput(job, clients, options.seconds)
                rows.append((language, name, median, p99, median / bare_median, p99 / median, rate))
    finally:
        if http is not None:
            await http.close()
        await executor.close()

    print(f"\n{options.runs} sequential runs per path, interleaved; throughput: {clients} clients x "
          f"{options.seconds:g} s; {cores} cores, {executor.limits.max_concurrency} slots\n")
    header = ("language", "path", "median ms", "p99 ms", "median/bare", "p99/median", "runs/s")
    print("{:<11} {:<14} {:>10} {:>8} {:>12} {:>11} {:>8}".format(*header))
    for language, name, median, p99, ratio, tail, rate in rows:
        print(f"{language:<11} {name:<14} {median:>10.1f} {p99:>8.1f} {ratio:>11.2f}x {tail:>10.2f}x {rate:>8.1f}")
    print("\ntargets: median/bare <= 1.50x, p99/median <= 3.00x")


if __name__ == "__main__":
    asyncio.run(main())
