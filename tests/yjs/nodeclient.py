"""Drive a real Yjs client (``node/client.mjs``: yjs + y-websocket) from asyncio tests.

``async with NodeClient(url, room) as client:`` spawns the node script; each method sends
one JSON command and awaits its reply. Waiting (for text, sync, awareness) happens inside
node on Yjs events, bounded by a timeout: no sleeps, no polling. Indices are UTF-16 code
units, as in browsers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).with_name("node")
CLIENT_SCRIPT = NODE_DIR / "client.mjs"
#: Extra time on top of a node-side timeout before the Python side gives up on a reply.
REPLY_GRACE = 5.0


def node_executable() -> str | None:
    return shutil.which("node")


def node_deps_installed() -> bool:
    return (NODE_DIR / "node_modules" / "y-websocket" / "package.json").is_file()


class NodeClientError(RuntimeError):
    """The node client answered ``ok: false`` (a timeout, an unknown command...)."""


class NodeClient:
    def __init__(self, url: str, room: str, *, name: str = "client") -> None:
        self.url, self.room, self.name = url, room, name
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: list[str] = []
        self._stderr_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> NodeClient:
        node = node_executable()
        if node is None:
            raise RuntimeError("node is not on PATH")
        self._proc = await asyncio.create_subprocess_exec(
            node, str(CLIENT_SCRIPT), self.url, self.room,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,  # replies may carry a multi-megabyte text
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        self._reader = asyncio.create_task(self._read_stdout())
        self._stderr_task = asyncio.create_task(self._read_stderr())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            message = json.loads(line)
            if "event" in message:
                self.events.append(message)
                continue
            future = self._replies.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(NodeClientError(f"{self.name} exited: {''.join(self._stderr)[-2000:]}"))

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            self._stderr.append(line.decode(errors="replace"))

    async def call(self, cmd: str, *, reply_timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        self._proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **args}).encode() + b"\n")
        await self._proc.stdin.drain()
        reply = await asyncio.wait_for(future, reply_timeout)
        if not reply["ok"]:
            raise NodeClientError(f"{self.name}: {cmd}: {reply['error']}")
        return reply

    async def _wait(self, cmd: str, timeout: float, **args: Any) -> dict[str, Any]:
        return await self.call(cmd, timeout=int(timeout * 1000), reply_timeout=timeout + REPLY_GRACE, **args)

    # -- document
    async def client_id(self) -> int:
        return (await self.call("client_id"))["clientId"]

    async def text(self) -> str:
        return (await self.call("text"))["text"]

    async def insert(self, index: int, text: str) -> None:
        await self.call("insert", index=index, text=text)

    async def insert_repeat(self, index: int, text: str, count: int) -> None:
        await self.call("insert_repeat", index=index, text=text, count=count)

    async def delete(self, index: int, length: int) -> None:
        await self.call("delete", index=index, length=length)

    async def wait_for_text(self, text: str, timeout: float = 5.0) -> None:
        await self._wait("wait_text", timeout, text=text)

    async def wait_for_length(self, length: int, timeout: float = 5.0) -> None:
        await self._wait("wait_length", timeout, length=length)

    # -- connection
    async def wait_synced(self, timeout: float = 5.0) -> None:
        await self._wait("wait_synced", timeout)

    async def wait_connected(self, connected: bool = True, timeout: float = 5.0) -> None:
        await self._wait("wait_status", timeout, connected=connected)

    async def disconnect(self) -> None:
        await self.call("disconnect")

    async def connect(self) -> None:
        await self.call("connect")

    # -- awareness and cursors
    async def set_awareness(self, state: Any) -> None:
        await self.call("set_awareness", state=state)

    async def awareness(self) -> dict[int, Any]:
        return {int(k): v for k, v in (await self.call("awareness"))["states"].items()}

    async def wait_for_awareness(self, client_id: int, present: bool, timeout: float = 5.0) -> float:
        """Wait until ``client_id``'s state is (or is no longer) known; returns elapsed seconds."""
        reply = await self._wait("wait_awareness", timeout, clientId=client_id, present=present)
        return reply["elapsedMs"] / 1000

    async def stick(self, name: str, index: int, assoc: int = 0) -> None:
        """Remember a cursor at ``index`` as a Yjs relative position."""
        await self.call("stick", name=name, index=index, assoc=assoc)

    async def sticky_index(self, name: str) -> int | None:
        return (await self.call("sticky_index", name=name))["index"]

    # -- lifetime
    def kill(self) -> None:
        """End the process abruptly (SIGKILL): its socket dies without a close handshake."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            try:
                await self.call("close", reply_timeout=5.0)
            except (NodeClientError, asyncio.TimeoutError, ConnectionError):
                pass
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        else:
            await proc.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                await asyncio.wait_for(task, 5.0)
