"""What a run must not see or reach: network, host services, server files, env, processes."""

from __future__ import annotations

import ast
import asyncio
import itertools
import os
import socket
import uuid
from pathlib import Path

import pytest

from algoroom.execution import Executor

from .conftest import assert_still_healthy

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]


def _host_address() -> str | None:
    """This machine's own non-loopback IPv4 address, if it has one (never a remote host)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return None
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL":
            address = previous.split()[-1]
            if not address.startswith("127."):
                return address
    return None


async def test_only_an_unconfigured_loopback(executor: Executor) -> None:
    result = await executor.run("bash", "cat /proc/net/dev | tail -n +3 | cut -d: -f1")
    assert result.status == "ok", result
    assert result.stdout.split() == ["lo"]


async def test_no_host_loopback_service(executor: Executor) -> None:
    accepted = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # The listener is real: the host can reach it.
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await asyncio.wait_for(accepted.wait(), 5)
    accepted.clear()
    code = (
        "import socket, errno\n"
        "for host in ('127.0.0.1', 'localhost'):\n"
        "    try:\n"
        f"        socket.create_connection((host, {port}), timeout=2)\n"
        "        print('connected')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, e.errno))\n"
    )
    try:
        result = await executor.run("python", code)
    finally:
        server.close()
        await server.wait_closed()
    assert result.status == "ok", result
    assert "connected" not in result.stdout
    assert not accepted.is_set()


async def test_no_route_out(executor: Executor) -> None:
    address = _host_address()
    targets = [address] if address else []
    code = (
        "import socket, errno\n"
        f"for host in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, 22), timeout=2)\n"
        "        print('connected')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, e.errno))\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 80)\n"
        "    print('resolved')\n"
        "except OSError as e:\n"
        "    print('no dns')\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok", result
    lines = result.stdout.splitlines()
    assert lines[-1] == "no dns"
    assert all(line == "ENETUNREACH" for line in lines[:-1]), result.stdout


async def test_no_host_abstract_unix_socket(executor: Executor) -> None:
    name = f"algoroom-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen()
    try:
        code = (
            "import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"try:\n    s.connect('\\0{name}')\n    print('connected')\nexcept OSError as e:\n    print(e.errno)\n"
        )
        result = await executor.run("python", code)
    finally:
        listener.close()
    assert result.status == "ok", result
    assert result.stdout.strip() == "111"  # ECONNREFUSED: that name does not exist in the run's namespace


async def test_cannot_read_server_files(executor: Executor) -> None:
    targets = [str(REPO / "algoroom" / "execution" / "sandbox.py"), "/etc/shadow", "/root", "/work", "/home"]
    code = (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    print(path, os.path.exists(path))\n"
        "print(sorted(os.listdir('/etc')))\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok", result
    lines = result.stdout.splitlines()
    for line in lines[:-1]:
        assert line.endswith(" False"), line
    assert "shadow" not in lines[-1] and "passwd" in lines[-1]


async def test_cannot_see_host_processes(executor: Executor) -> None:
    code = (
        "import os\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
        f"print(os.path.exists('/proc/{os.getpid()}/environ'))\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok", result
    pids, host_pid_visible = result.stdout.splitlines()
    assert pids == "[1]"  # only itself, as pid 1 of its own namespace
    assert host_pid_visible == "False" or os.getpid() == 1


async def test_server_environment_does_not_leak(executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("ALGOROOM_TEST_SECRET", secret)
    code = (
        "import os\nprint(sorted(os.environ))\n"
        "print(open('/proc/self/environ', 'rb').read().decode())\n"
        "print(open('/proc/1/environ', 'rb').read().decode())\n"
    )
    result = await executor.run("python", code)
    assert result.status == "ok", result
    assert secret not in result.stdout and "ALGOROOM_TEST_SECRET" not in result.stdout
    names = ast.literal_eval(result.stdout.splitlines()[0])
    # SHLVL and _: set by the pre-started sandbox's bash
    assert set(names) <= {"PATH", "HOME", "TMPDIR", "LANG", "USER", "PWD", "PYTHONDONTWRITEBYTECODE",
                          "PYTHONIOENCODING", "LC_CTYPE", "SHLVL", "_"}


async def test_unprivileged_inside(executor: Executor) -> None:
    code = (
        "id -u; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; hostname\n"
        "unshare -U true 2>/dev/null && echo userns-allowed || echo userns-denied\n"
    )
    result = await executor.run("bash", code)
    assert result.status == "ok", result
    lines = result.stdout.split()
    assert lines[0] == "1000"
    assert "0000000000000000" in lines  # no effective capabilities
    assert lines[-1] == "userns-denied"
    await assert_still_healthy(executor)


async def test_runs_are_isolated_from_each_other(executor: Executor) -> None:
    name = f"algoroom-peer-{uuid.uuid4().hex}"
    server = (
        "import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.bind('\\0{name}')\ns.listen()\nprint('listening', flush=True)\ntime.sleep(1.5)\n"
    )
    client = (
        "import socket, time\ntime.sleep(0.5)\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"try:\n    s.connect('\\0{name}')\n    print('connected')\nexcept OSError as e:\n    print(e.errno)\n"
    )
    first, second = await asyncio.gather(executor.run("python", server), executor.run("python", client))
    assert first.stdout == "listening\n", first
    assert second.stdout.strip() == "111", second


async def test_no_server_fd_leaks_into_the_run(executor: Executor) -> None:
    result = await executor.run("python", "import os\nprint(sorted(int(fd) for fd in os.listdir('/proc/self/fd')))")
    assert result.status == "ok", result
    assert result.stdout == "[0, 1, 2, 3]\n"  # 3: the listing's own directory fd
