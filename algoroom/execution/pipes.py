"""The pipes between the server and a run, and what comes through them.

Each pipe is enlarged to 128 KiB with ``F_SETPIPE_SZ``: on the default 64 KiB a Node
stderr flood in a tight loop died with ``std::bad_alloc`` in a third of the runs
instead of hitting the output cap cleanly. Read ends are non-blocking (read from the
event loop); both ends are close-on-exec, and only the fds the run must have are passed
to it explicitly.

The compile stage reports on its own pipe: the compiler's output, then a trailer
(``\\n``, bash's ``times`` and the exit status, a line each; see sandbox.compile_script).
"""

from __future__ import annotations

import asyncio
import fcntl
import os

PIPE_SIZE = 128 * 1024
READ_CHUNK = 65536
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: Bytes kept from the end of the compile stream: enough for the trailer.
_TAIL = 1024


class Stream:
    """One pipe's read end and what was kept of it."""

    __slots__ = ("chunks", "eof", "fd", "name", "size", "tail")

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.chunks: list[bytes] = []
        self.size = 0
        self.tail = b""
        self.eof = False

    def keep_with_tail(self, chunk: bytes, cap: int) -> None:
        """Keep up to ``cap`` bytes from the start, and always the last bytes (the trailer)."""
        self.tail = (self.tail + chunk)[-_TAIL:]
        room = cap - self.size
        if room > 0:
            self.chunks.append(chunk[:room])
        self.size += len(chunk)


def make_pipe(*, nonblocking_read: bool = True) -> tuple[int, int]:
    """A pipe (both ends close-on-exec) enlarged to PIPE_SIZE; its read end non-blocking
    when we read it, blocking when a run does (see :func:`make_input_pipe`)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # over /proc/sys/fs/pipe-max-size: keep the default size
        pass
    if nonblocking_read:
        os.set_blocking(r, False)
    return r, w


def make_input_pipe() -> tuple[int, int]:
    """A pipe into a run (its stdin, its script): the read end, the run's, stays blocking."""
    return make_pipe(nonblocking_read=False)


def parse_times(line: bytes) -> int:
    """bash ``times`` line ``0m0.151s 0m0.042s`` -> user + system ms."""
    total = 0.0
    for part in line.split():
        text = part.decode("ascii", "replace").rstrip("s")
        minutes, _, seconds = text.partition("m")
        try:
            total += int(minutes) * 60 + float(seconds)
        except ValueError:
            return 0
    return round(total * 1000)


def parse_compile_trailer(stream: Stream, cap: int) -> tuple[int | None, int, bytes]:
    """(exit status or None if the stage never finished, compiler CPU ms, compiler output)."""
    output = b"".join(stream.chunks)
    parts = stream.tail.rsplit(b"\n", 4)
    if len(parts) != 5 or parts[4] != b"" or not parts[3].isdigit():
        return None, 0, output
    if stream.size <= cap:  # the trailer is inside what was kept: cut it off
        output = output.rsplit(b"\n", 4)[0]
    return int(parts[3]), parse_times(parts[2]), output


class Feeder:
    """Writes data into pipes (a run's script, its stdin) and closes them, never blocking
    the event loop on a reader that takes its time; a reader that goes away (EPIPE) just
    did not want the rest."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: dict[int, memoryview] = {}

    def feed(self, fd: int, data: bytes) -> None:
        os.set_blocking(fd, False)
        self._pending[fd] = memoryview(data)
        self._write(fd, registered=False)

    def _write(self, fd: int, registered: bool = True) -> None:
        view = self._pending[fd]
        try:
            while view:
                view = view[os.write(fd, view):]
        except BlockingIOError:
            self._pending[fd] = view
            if not registered:
                self._loop.add_writer(fd, self._write, fd)
            return
        except OSError:
            pass
        if registered:
            self._loop.remove_writer(fd)
        del self._pending[fd]
        os.close(fd)

    def close(self) -> None:
        for fd in self._pending:
            self._loop.remove_writer(fd)
            os.close(fd)
        self._pending.clear()
