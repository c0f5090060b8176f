"""Yjs benchmark: edit propagation latency through our server vs the Node reference server.

    python bench/bench_yjs.py                          # a fresh `python -m algoroom` vs @y/websocket-server
    python bench/bench_yjs.py --url http://HOST:PORT   # an already running algoroom instead

Latency: real y-websocket clients (``bench/node/typists.mjs``, all in one node process) in
one room; client A types probe characters, client B records when each arrives; every other
client types in the background (``--cps`` characters per second each). The same load runs
against the reference server ``@y/websocket-server`` 0.1.1 in the same run.

Memory: documents that received ``--edits`` single-character updates each, in a YRoom
(this process) and in a Y.Doc (node), as RSS growth per document; also after reloading each
from its compacted state.

Needs ``npm ci --prefix bench/node`` (and the repo's venv with pycrdt).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "bench" / "node"
sys.path.insert(0, str(ROOT))  # run from a checkout: algoroom and tests importable
from tests.processes import ServerProcess  # noqa: E402 - after the path is set
from tests.servers import free_port  # noqa: E402

REFERENCE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"


def start_algoroom(database_url: str, log_path: Path) -> ServerProcess:
    """``python -m algoroom`` on a free port (execution off), answering ``/health``."""
    server = ServerProcess(
        {"ALGOROOM_DATABASE_URL": database_url, "ALGOROOM_EXEC_ENABLED": "false", "ALGOROOM_LOG_LEVEL": "WARNING"},
        log_path,
    )
    asyncio.run(server.start())
    return server


def new_session(base: str) -> str:
    request = urllib.request.Request(base + "/sessions", data=b"{}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())["id"]


def start_process(args: list[str], ready: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if ready not in line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc


def run_typists(url: str, room: str, typists: int, samples: int, cps: float) -> dict:
    out = subprocess.run(
        ["node", str(NODE_DIR / "typists.mjs"), url, room, str(typists), str(samples), str(cps)],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def python_memory(docs: int, edits: int) -> dict:
    from pycrdt import Doc, Text

    from algoroom.yjs import YRoom
    from algoroom.yjs.protocol import encode_update

    class Sink:
        def send(self, frame: bytes) -> None:
            pass

    rng = random.Random(7)

    def updates_for() -> list[bytes]:
        client = Doc()
        text = client.get("code", type=Text)
        updates: list[bytes] = []
        client.observe(lambda event: updates.append(event.update))
        for i in range(edits):
            length = len(text)
            if length and rng.random() < 0.2:
                pos = rng.randrange(length)
                del text[pos : pos + 1]
            else:
                text.insert(rng.randint(0, length), "abcdefgh"[i % 8])
        return updates

    streams = [[encode_update(u) for u in updates_for()] for _ in range(docs)]
    before = rss()
    rooms = []
    for frames in streams:
        room = YRoom()
        peer = Sink()
        room.join(peer)
        for frame in frames:
            room.receive(peer, frame)
        rooms.append(room)
    after = rss()
    states = [room.encode_state() for room in rooms]
    started = time.perf_counter()
    rooms[0].encode_state()
    encode_ms = (time.perf_counter() - started) * 1000
    for room in rooms:
        room.close()
    del rooms, streams
    return {
        "perDocBytes": (after - before) / docs,
        "perDocReloadedBytes": python_reload_memory(states) / docs,
        "stateBytes": len(states[0]),
        "encodeMs": encode_ms,
    }


def python_reload_memory(states: list[bytes]) -> int:
    """RSS growth of loading ``states`` into rooms, in a fresh process: this one would reuse
    the memory its freed rooms left to the allocators, and show almost nothing."""
    with tempfile.TemporaryDirectory(prefix="algoroom-bench-yjs-") as tmp:
        path = Path(tmp) / "states.bin"
        path.write_bytes(b"".join(len(state).to_bytes(4, "big") + state for state in states))
        out = subprocess.run(
            [sys.executable, __file__, "--reload-states", str(path)],
            capture_output=True, text=True, timeout=600, check=True,
        )
    return int(out.stdout.strip().splitlines()[-1])


def reload_states(path: str) -> int:
    from algoroom.yjs import YRoom

    data, states = Path(path).read_bytes(), []
    while data:
        size = int.from_bytes(data[:4], "big")
        states.append(data[4 : 4 + size])
        data = data[4 + size :]
    before = rss()
    rooms = []
    for state in states:
        room = YRoom()
        room.load(state)
        rooms.append(room)
    return rss() - before


def node_memory(docs: int, edits: int) -> dict:
    out = subprocess.run(
        ["node", "--expose-gc", str(NODE_DIR / "memory.mjs"), str(docs), str(edits)],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running algoroom's base URL (http://host:port); default: start one")
    parser.add_argument(
        "--database-url", default="", help="store of the algoroom started here (default: SQLite in a temp dir)"
    )
    parser.add_argument("--typists", default="2,50", help="comma-separated typist counts (default 2,50)")
    parser.add_argument("--samples", type=int, default=1000, help="probe edits measured per run (default 1000)")
    parser.add_argument("--cps", type=float, default=5.0, help="background typing speed, chars/s each (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per server; best median kept")
    parser.add_argument("--docs", type=int, default=20, help="documents for the memory measurement")
    parser.add_argument("--edits", type=int, default=10_000, help="edits per document for the memory measurement")
    parser.add_argument("--reload-states", help=argparse.SUPPRESS)  # child mode of python_reload_memory
    args = parser.parse_args()
    if args.reload_states:
        print(reload_states(args.reload_states))
        return

    procs: list[subprocess.Popen] = []
    server: ServerProcess | None = None
    tmp = tempfile.TemporaryDirectory(prefix="algoroom-bench-yjs-")
    try:
        base = args.url
        if base is None:
            database_url = args.database_url or f"sqlite:///{tmp.name}/bench.db"
            server = start_algoroom(database_url, Path(tmp.name) / "server.log")
            base = server.url
        ours = base.replace("http", "ws", 1) + "/yjs"
        ref_port = free_port()
        proc = start_process(
            ["node", str(REFERENCE_SERVER)], ready="running at", env={"HOST": "127.0.0.1", "PORT": str(ref_port)}
        )
        procs.append(proc)
        reference = f"ws://127.0.0.1:{ref_port}"

        rows = []
        for typists in (int(n) for n in args.typists.split(",")):
            best: dict[str, dict] = {}
            for round_ in range(args.rounds):
                for label, url in (("algoroom (pycrdt)", ours), ("@y/websocket-server 0.1.1", reference)):
                    room = new_session(base) if url == ours else f"bench-{typists}-{round_}-{time.time_ns()}"
                    result = run_typists(url, room, typists, args.samples, args.cps)
                    if label not in best or (result["median"] or 1e9) < (best[label]["median"] or 1e9):
                        best[label] = result
            for label, result in best.items():
                rows.append((typists, label, result))

        print(f"\nEdit propagation A -> B ({args.samples} probes, background {args.cps:g} chars/s per typist, "
              f"best of {args.rounds} runs)")
        print(f"{'typists':>7}  {'server':<27} {'median ms':>9} {'p99 ms':>8} {'max ms':>8}")
        for typists, label, r in rows:
            note = f"  INCOMPLETE: {r['samples']} samples" if r.get("incomplete") else ""
            median, p99, worst = (r[k] if r[k] is not None else float("nan") for k in ("median", "p99", "max"))
            print(f"{typists:>7}  {label:<27} {median:>9.3f} {p99:>8.3f} {worst:>8.3f}{note}")
        for typists in sorted({t for t, _, _ in rows}):
            medians = {label: r["median"] or float("nan") for t, label, r in rows if t == typists}
            ratio = medians["algoroom (pycrdt)"] / medians["@y/websocket-server 0.1.1"]
            print(f"{typists:>7}  median ratio ours/node = {ratio:.2f}x (target <= 1.2x)")
    finally:
        if server is not None:
            server.terminate()
        for proc in procs:
            proc.terminate()
            proc.wait()
        tmp.cleanup()

    py = python_memory(args.docs, args.edits)
    js = node_memory(args.docs, args.edits)
    print(f"\nMemory per loaded document after {args.edits} single-character edits ({args.docs} documents)")
    print(f"{'server':<27} {'live KiB':>9} {'reloaded KiB':>13} {'state bytes':>12}")
    print(f"{'algoroom (pycrdt)':<27} {py['perDocBytes'] / 1024:>9.0f} {py['perDocReloadedBytes'] / 1024:>13.0f}"
          f" {py['stateBytes']:>12}")
    print(f"{'yjs (reference server doc)':<27} {js['perDocBytes'] / 1024:>9.0f}"
          f" {js['perDocReloadedBytes'] / 1024:>13.0f} {js['stateBytes']:>12}")
    print(f"encode_state of one document: {py['encodeMs']:.2f} ms")


if __name__ == "__main__":
    main()
