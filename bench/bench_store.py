"""Store-level write throughput: ``update_code`` calls per second with concurrent writers.

Why store level: it isolates what the persistence layer costs from HTTP parsing; the
HTTP-level ``PUT`` benchmark builds on it. Each writer loops ``update_code`` on its own
session (``--shared-session``: all on one, the worst case for row contention) with a
``--code-bytes`` buffer, for ``--seconds`` after a one-second warm-up.

Servers: PostgreSQL and Redis are started from the Debian binaries in temp dirs (the test
helpers in ``tests/servers.py``) unless ``--postgres-url`` / ``--redis-url`` point at running
ones. ``--redis-aof`` starts Redis with ``appendonly yes, appendfsync always`` (every write
fsynced before Redis replies) instead of no persistence.

    .venv/bin/python bench/bench_store.py --backends memory,sqlite,postgresql,redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algoroom.sessions import Session  # noqa: E402
from algoroom.store import SessionStore, open_store  # noqa: E402
from algoroom.store.memory import MemoryStore  # noqa: E402
from tests.servers import start_postgres, start_redis  # noqa: E402


async def run(store: SessionStore, writers: int, seconds: float, code_bytes: int, shared: bool) -> dict[str, float]:
    sessions = [Session.new("python") for _ in range(1 if shared else writers)]
    for session in sessions:
        await store.create(session)
    code = ("x" * 63 + "\n") * (code_bytes // 64) + "y" * (code_bytes % 64)
    latencies: list[float] = []
    count = 0
    measuring = False
    stop = False

    # memory:// never suspends, so its writers must yield or the timer would never run.
    yield_each_time = isinstance(store, MemoryStore)

    async def writer(n: int) -> None:
        nonlocal count
        session_id = sessions[n % len(sessions)].id
        while not stop:
            started = time.perf_counter()
            await store.update_code(session_id, code)
            if yield_each_time:
                await asyncio.sleep(0)
            if measuring:
                latencies.append(time.perf_counter() - started)
                count += 1

    tasks = [asyncio.create_task(writer(n)) for n in range(writers)]
    await asyncio.sleep(1.0)  # warm-up: connections, statement caches, WAL file growth
    measuring = True
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - began
    stop = True
    await asyncio.gather(*tasks)
    latencies.sort()
    return {
        "writes_per_s": count / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="memory,sqlite,postgresql,redis")
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--code-bytes", type=int, default=1024)
    parser.add_argument("--shared-session", action="store_true")
    parser.add_argument("--sqlite-options", default="", help="e.g. synchronous=normal")
    parser.add_argument("--postgres-url", default=os.environ.get("ALGOROOM_BENCH_POSTGRES_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("ALGOROOM_BENCH_REDIS_URL"))
    parser.add_argument("--redis-aof", action="store_true")
    args = parser.parse_args()

    print(
        f"# {args.writers} writers, {args.code_bytes} B code, "
        f"{'one shared session' if args.shared_session else 'one session each'}, {args.seconds:.0f} s, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    print(f"{'backend':<12} {'writes/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    with contextlib.ExitStack() as stack:
        for backend in args.backends.split(","):
            if backend == "memory":
                url = "memory://"
            elif backend == "sqlite":
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="algoroom-bench-"))
                url = f"sqlite:///{folder}/bench.db" + (f"?{args.sqlite_options}" if args.sqlite_options else "")
            elif backend == "postgresql":
                url = args.postgres_url or stack.enter_context(start_postgres()).url
            elif backend == "redis":
                url = args.redis_url or stack.enter_context(start_redis(appendonly=args.redis_aof)).url
            else:
                parser.error(f"unknown backend {backend!r}")

            async def one(url: str = url) -> dict[str, float]:
                async with open_store(url) as store:
                    return await run(store, args.writers, args.seconds, args.code_bytes, args.shared_session)

            result = asyncio.run(one())
            label = backend + ("+aof" if backend == "redis" and args.redis_aof else "")
            print(
                f"{label:<12} {result['writes_per_s']:>10,.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
