"""Real Redis and PostgreSQL servers for tests, started from the Debian binaries.

Why real servers: the store's promises (atomic revisions across processes, durability,
Lua scripts, SQL semantics) are exactly what a fake would get wrong. Each server runs on a
free loopback port with its data in a temporary directory, and is gone after the test run.

- :func:`start_redis` / :func:`start_postgres`: context managers yielding a running
  :class:`RedisServer` / :class:`PostgresServer` (``.url``; Redis also ``.kill()`` /
  ``.start()`` for restart tests). They raise :class:`ServerUnavailable` when a binary is
  missing.
- ``redis_url`` / ``postgres_url``: session-scoped pytest fixtures (import them into a
  ``conftest.py``). They use ``ALGOROOM_TEST_REDIS_URL`` / ``ALGOROOM_TEST_POSTGRES_URL``
  when set (an already-running server), else start one; when that is impossible they skip
  with the reason, or fail when ``CI`` is set (CI must test every backend).

Binaries: ``redis-server`` on ``PATH`` (Debian package ``redis-server``); PostgreSQL's
``initdb``/``postgres``/``pg_isready`` from ``$PG_BIN``, else the newest
``/usr/lib/postgresql/*/bin`` (Debian package ``postgresql``), else ``PATH``. As root,
PostgreSQL runs as the ``postgres`` user (it refuses to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 60.0


class ServerUnavailable(RuntimeError):
    """This machine cannot run the server (the message says why and what to install)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server retries on a race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(ready, what: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``ready()`` until true; fail fast if the process died, with its log."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(delay)  # polling a server that has nothing to notify us with
        delay = min(delay * 2, 0.1)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- Redis -------------------------------------------------------------------------------


class RedisServer:
    """A ``redis-server`` on 127.0.0.1; :meth:`kill` then :meth:`start` restarts it in place."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise ServerUnavailable("redis-server not found on PATH (apt-get install redis-server)")
        self.appendonly = appendonly
        self.dir = Path(tempfile.mkdtemp(prefix="algoroom-redis-"))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart on the same port and data directory)."""
        for attempt in range(5):
            port = self.port or free_port()
            log = self.dir / "redis.log"
            args = [
                self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--logfile", str(log),
            ]  # fmt: skip
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
            try:
                _wait_until(lambda: self._pong(port), f"redis-server :{port}", self.process, log, STARTUP_TIMEOUT)
            except RuntimeError:
                if attempt == 4 or self.port:  # a fixed port (restart) cannot be changed
                    raise
                continue  # lost the race for that port: pick another
            self.port = port
            return

    @staticmethod
    def _pong(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9``: what a crash looks like to clients."""
        _stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def start_redis(*, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# --- PostgreSQL --------------------------------------------------------------------------


def _postgres_bin() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServerUnavailable("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)")
    return Path(initdb).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster (``initdb`` + ``postgres``) on 127.0.0.1, trust auth."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        for tool in ("initdb", "postgres", "pg_isready"):
            if not (self.bin / tool).exists():
                raise ServerUnavailable(f"{self.bin / tool} is missing (apt-get install postgresql)")
        self.user_kwargs: dict[str, object] = {}
        self.dir = Path(tempfile.mkdtemp(prefix="algoroom-pg-"))
        if os.geteuid() == 0:  # postgres refuses to run as root
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable(
                    "running as root and there is no 'postgres' user to run PostgreSQL as"
                ) from None
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self.user_kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            args,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            **self.user_kwargs,  # type: ignore[arg-type]
        )

    def start(self) -> None:
        if not self.data.exists():
            done = self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            if done.returncode:
                raise RuntimeError(f"initdb failed:\n{done.stdout.decode()}{done.stderr.decode()}")
        for attempt in range(5):
            port = free_port()
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(self.bin / "postgres"), "-D", str(self.data), "-p", str(port),
                        "-h", "127.0.0.1", "-k", str(self.dir), "-c", "max_connections=200",
                    ],  # fmt: skip
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                    **self.user_kwargs,  # type: ignore[arg-type]
                )  # fmt: skip
            try:
                _wait_until(lambda: self._ready(port), f"postgres :{port}", self.process, self.log, STARTUP_TIMEOUT)
            except RuntimeError:
                if attempt == 4:
                    raise
                continue
            self.port = port
            return

    def _ready(self, port: int) -> bool:
        done = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-t", "1"],
            stdin=subprocess.DEVNULL,
        )
        return done.returncode == 0

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # "fast" shutdown

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


# --- pytest fixtures ---------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, where every backend must be tested."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server's URL for this test run (``ALGOROOM_TEST_REDIS_URL`` or one we start)."""
    if os.environ.get("ALGOROOM_TEST_REDIS_URL"):
        yield os.environ["ALGOROOM_TEST_REDIS_URL"]
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_redis())
        except ServerUnavailable as exc:
            reason = str(exc)
        else:
            reason = ""
        if reason:
            unavailable(reason)
        yield server.url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL for this test run (``ALGOROOM_TEST_POSTGRES_URL`` or one we start)."""
    if os.environ.get("ALGOROOM_TEST_POSTGRES_URL"):
        yield os.environ["ALGOROOM_TEST_POSTGRES_URL"]
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_postgres())
        except ServerUnavailable as exc:
            reason = str(exc)
        else:
            reason = ""
        if reason:
            unavailable(reason)
        yield server.url
