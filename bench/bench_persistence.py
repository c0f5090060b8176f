"""Persistence and scale-out benchmark (dev-only, not a test): prints figures for the README.

1. Writes/s of ``PUT /sessions/{id}/code`` with 64 concurrent clients, per backend
   (SQLite, PostgreSQL, Redis), every request changing the code (so every one is a real,
   durable write), measured with wrk against a real ``python -m algoroom``.
2. Latency of a ``code_update`` from a ``PUT`` to a JSON socket: on the same process, and
   on another process through Redis (median, p99), in the same run.

    python bench/bench_persistence.py [--seconds 5] [--puts 300]

Needs ``wrk`` (Debian package) and the Debian ``redis-server`` and ``postgresql`` binaries
(the servers are started here, on free loopback ports, from tests/servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import ServerProcess  # noqa: E402
from tests.servers import start_postgres, start_redis  # noqa: E402

PUT_LUA = """
counter = 0
sessions = {}
init = function(args)
  for i, id in ipairs(args) do sessions[i] = id end
end
request = function()
  counter = counter + 1
  local id = sessions[(counter %% #sessions) + 1]
  local body = '{"code":"print(' .. counter .. ')  # %s"}'
  return wrk.format("PUT", "/sessions/" .. id .. "/code", {["Content-Type"] = "application/json"}, body)
end
"""


#: Every server here runs with execution off and quiet logs.
SERVER_ENV = {"ALGOROOM_EXEC_ENABLED": "false", "ALGOROOM_LOG_LEVEL": "WARNING"}


async def start_server(env: dict[str, str], log_dir: str) -> ServerProcess:
    server = ServerProcess({**SERVER_ENV, **env}, Path(log_dir) / f"algoroom-{uuid.uuid4().hex[:6]}.log")
    await server.start()
    return server


async def create_sessions(http: aiohttp.ClientSession, base: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        async with http.post(base + "/sessions", json={"language": "python"}) as resp:
            ids.append((await resp.json())["id"])
    return ids


def run_wrk(base: str, sessions: list[str], seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(PUT_LUA % uuid.uuid4().hex[:6])
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t1", "-c64", f"-d{seconds}s", "-s", lua.name, base, "--", *sessions],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} PUTs failed:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


async def writes_per_backend(seconds: int) -> list[tuple[str, float]]:
    results = []
    with start_redis(appendonly=True) as redis_server, start_postgres() as pg, tempfile.TemporaryDirectory() as tmp:
        backends = [
            ("sqlite", f"sqlite:///{tmp}/bench.db"),
            ("postgresql", pg.url),
            ("redis (AOF, fsync always)", redis_server.url),
        ]
        async with aiohttp.ClientSession() as http:
            for name, url in backends:
                server = await start_server({"ALGOROOM_DATABASE_URL": url}, tmp)
                try:
                    sessions = await create_sessions(http, server.url, 64)
                    run_wrk(server.url, sessions, 1)  # warm-up
                    results.append((name, run_wrk(server.url, sessions, seconds)))
                finally:
                    server.terminate()
    return results


async def cross_process_latency(puts: int) -> dict[str, list[float]]:
    with start_redis() as redis_server, tempfile.TemporaryDirectory() as tmp:
        env = {
            "ALGOROOM_DATABASE_URL": f"sqlite:///{tmp}/shared.db",
            "ALGOROOM_REDIS_URL": redis_server.url,
        }
        a, b = await asyncio.gather(start_server(env, tmp), start_server(env, tmp))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(a.url + "/sessions", json={}) as resp:
                    sid = (await resp.json())["id"]
                local = await http.ws_connect(f"{a.url}/ws/sessions/{sid}")
                remote = await http.ws_connect(f"{b.url}/ws/sessions/{sid}")
                samples: dict[str, list[float]] = {"same process": [], "other process (Redis)": []}

                async def arrival(ws, code: str) -> float:
                    while True:
                        message = json.loads((await ws.receive(timeout=10)).data)
                        if message.get("type") == "code_update" and message["code"] == code:
                            return time.perf_counter()

                for i in range(puts + 20):
                    code = f"v{i}"
                    waiters = asyncio.gather(arrival(local, code), arrival(remote, code))
                    sent = time.perf_counter()
                    async with http.put(f"{a.url}/sessions/{sid}/code", json={"code": code}) as resp:
                        assert resp.status == 200
                    t_local, t_remote = await waiters
                    if i >= 20:  # warm-up
                        samples["same process"].append((t_local - sent) * 1000)
                        samples["other process (Redis)"].append((t_remote - sent) * 1000)
                await local.close()
                await remote.close()
                return samples
        finally:
            a.terminate()
            b.terminate()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--puts", type=int, default=300)
    args = parser.parse_args()

    writes = await writes_per_backend(args.seconds)
    print(f"\nPUT /code writes/s, 64 concurrent clients over 64 sessions, every PUT a new text ({args.seconds} s)")
    for name, rate in writes:
        print(f"  {name:<28} {rate:>9,.0f} PUT/s")

    latency = await cross_process_latency(args.puts)
    print(f"\ncode_update latency from PUT sent to socket receipt ({args.puts} PUTs)")
    print(f"  {'path':<24} {'median ms':>9} {'p99 ms':>8}")
    for name, values in latency.items():
        print(f"  {name:<24} {statistics.median(values):>9.2f} {pct(values, 0.99):>8.2f}")
    added = statistics.median(latency["other process (Redis)"]) - statistics.median(latency["same process"])
    print(f"  cross-process adds {added:.2f} ms at the median (target < 2 ms)")


if __name__ == "__main__":
    asyncio.run(main())
