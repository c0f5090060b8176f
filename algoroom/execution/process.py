"""Seeing one spawned run through: pipes, deadlines, memory, exit, kill.

Why it is built this way:

- ``subprocess.Popen`` without ``preexec_fn`` spawns with vfork (about 1 ms whatever the
  server's size); ``close_fds`` keeps every server fd out of the sandbox.
- We own the pipes (pipes.py) and read them with ``loop.add_reader`` until EOF, always,
  even past the output cap: a writer on an undrained pipe blocks until the wall limit.
  asyncio's own subprocess transport is not used, so CPython issue 119710
  (``Process.wait()`` waits for pipe EOF on 3.11-3.13) does not apply.
- Exit is observed through a pidfd and reaped with ``wait4``, whose rusage covers every
  process of the run that was reaped inside it (with ``--as-pid-1`` that is all of
  them): the run's CPU time. Signals go through the pidfd, so a reused pid is never hit.
- Stages: a compiled language first compiles (its own deadline and memory limit, its
  output on a third pipe ending in a status trailer), then runs with the run limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
from collections.abc import Sequence

from .outcome import Outcome
from .pipes import READ_CHUNK, Stream, make_pipe, parse_compile_trailer
from .watchdog import MemoryWatchdog, own_memory_high_water_kb, scan_pid_uid

log = logging.getLogger("algoroom.execution")

#: After the process exited and was killed, how long its pipes may take to reach EOF.
EOF_GRACE_S = 2.0
#: After the program was SIGKILLed, how long bwrap may take to notice and exit.
OUTER_KILL_GRACE_S = 1.0


class ProcessRun:
    """One spawn of a run's argv, watched until it and its pipes are done.

    ``kill()`` may be called at any time (client gone, shutdown); ``execute()`` always
    returns once the spawned process is reaped and its pipes are at EOF.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        stdin_fd: int | None = None,
        stdin_pipe: tuple[int, int] | None = None,
        script_pipe: tuple[int, int] | None = None,
        pass_fds: tuple[int, ...] = (),
        compile_pipe: tuple[int, int] | None = None,
        compiled: bool | None = None,
        info_pipe: tuple[int, int] | None = None,
        cwd: str = "/",
        output_cap: int,
        wall_ms: int,
        compile_wall_ms: int | None = None,
        uid: int | None = None,
        watchdog: MemoryWatchdog | None = None,
        memory_kb: int = 0,
        compile_memory_kb: int = 0,
        own_process_group: bool = False,
    ) -> None:
        self._argv = list(argv)
        self._env = env
        self._stdin_fd = stdin_fd
        self._pass_fds = pass_fds
        self._compile_pipe = compile_pipe
        self._compiled = compile_pipe is not None if compiled is None else compiled
        self._info_pipe = info_pipe
        self._stdin_pipe = stdin_pipe
        self._script_pipe = script_pipe
        self._script = b""
        self._stdin_data = b""
        self._feeding: dict[int, memoryview] = {}
        self._spawned = False
        self._armed = False
        self._cwd = cwd
        self._cap = output_cap
        self._wall_s = wall_ms / 1000
        self._compile_wall_s = None if compile_wall_ms is None else compile_wall_ms / 1000
        self._uid = uid
        self._watchdog = watchdog
        self._memory_kb = memory_kb
        self._compile_memory_kb = compile_memory_kb
        self._own_group = own_process_group

        self.outcome = Outcome()
        self._captured = 0
        self._streams: list[Stream] = []
        self._compile_stream: Stream | None = None
        self._info_stream: Stream | None = None
        #: pidfd of the program itself (pid 1 of the run's namespace), from bwrap's --info-fd.
        self._inner_pidfd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._exited = False
        self._rusage_cpu_ms = 0
        self._max_rss_kb = 0
        self._server_hwm_kb = 0
        self._compile_cpu_ms = 0
        self._timer: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._outer_kill: asyncio.TimerHandle | None = None
        self._watch = None
        self._done: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t_start = 0.0
        self._t_run = 0.0
        self._t_exit = 0.0

    # -- public ---------------------------------------------------------------------

    def spawn(self) -> bool:
        """Start the process (synchronous: vfork + exec, about a millisecond); False if it failed.

        A pre-started sandbox is spawned ahead of its run and waits, blocked on its script
        pipe, until ``execute()`` feeds it.
        """
        loop = self._loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._spawned = True
        to_close: list[int] = []
        try:
            out_r, out_w = make_pipe()
            to_close.append(out_w)
            self._streams.append(Stream("stdout", out_r))
            err_r, err_w = make_pipe()
            to_close.append(err_w)
            self._streams.append(Stream("stderr", err_r))
            for pipe in (self._compile_pipe, self._info_pipe, self._script_pipe, self._stdin_pipe):
                if pipe is not None:  # the child's end is closed here once it has it
                    to_close.append(pipe[1] if pipe in (self._compile_pipe, self._info_pipe) else pipe[0])
            if self._uid is not None:
                # The run's own uid owns the pipes it is given, as on any normal system: a
                # root-owned 0600 pipe cannot be reopened through /dev/stdout, /dev/fd/N...
                try:
                    for fd in (out_w, err_w) + tuple(
                        p[0] for p in (self._compile_pipe, self._script_pipe, self._stdin_pipe) if p is not None
                    ):
                        os.fchown(fd, self._uid, self._uid)
                except OSError as exc:
                    self.outcome.spawn_error = f"cannot give the run's pipes to uid {self._uid}: {exc}"
                    self._exited = True
                    return False
            if self._compile_pipe is not None:
                self._compile_stream = Stream("compile", self._compile_pipe[0])
            if self._info_pipe is not None:
                self._info_stream = Stream("info", self._info_pipe[0])
            stdin = self._stdin_pipe[0] if self._stdin_pipe is not None else self._stdin_fd
            try:
                self._proc = subprocess.Popen(  # noqa: ASYNC220 -- vfork + exec: returns in about a ms
                    self._argv,
                    stdin=stdin,
                    stdout=out_w,
                    stderr=err_w,
                    pass_fds=self._pass_fds,
                    close_fds=True,
                    env=self._env,
                    cwd=self._cwd,
                    start_new_session=self._own_group,
                )
            except OSError as exc:
                self.outcome.spawn_error = f"could not start {self._argv[0]}: {exc}"
                self._exited = True
                return False
        finally:
            for fd in to_close:
                os.close(fd)
        self._server_hwm_kb = own_memory_high_water_kb()
        self._pidfd = os.pidfd_open(self._proc.pid)
        loop.add_reader(self._pidfd, self._on_exit_readable)
        for stream in self._all_streams():
            loop.add_reader(stream.fd, self._on_readable, stream)
        if self._info_stream is not None:
            loop.add_reader(self._info_stream.fd, self._on_info_readable)
        return True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and not self._exited else None

    @property
    def waiting(self) -> bool:
        """Spawned, not started, and still alive: usable as a pre-started sandbox."""
        return self._spawned and not self._armed and not self._exited

    def configure(
        self,
        *,
        compiled: bool,
        output_cap: int,
        wall_ms: int,
        compile_wall_ms: int | None,
        memory_kb: int,
        compile_memory_kb: int,
        script: bytes = b"",
        stdin: bytes = b"",
    ) -> None:
        """Set the limits of the run a pre-started sandbox is about to get, and its input."""
        self._compiled = compiled
        self._cap = output_cap
        self._wall_s = wall_ms / 1000
        self._compile_wall_s = None if compile_wall_ms is None else compile_wall_ms / 1000
        self._memory_kb = memory_kb
        self._compile_memory_kb = compile_memory_kb
        self._script = script
        self._stdin_data = stdin

    async def execute(self) -> Outcome:
        try:
            if not self._spawned and not self.spawn():
                return self.outcome
            if not self._exited and self.outcome.killed_for is None:
                self._arm()
            assert self._done is not None
            await self._done
            return self._finish()
        finally:
            self._cleanup()

    def _arm(self) -> None:
        """The run starts now: its clock, deadline, memory watch, and its input."""
        loop = self._loop
        assert loop is not None
        self._armed = True
        self._t_start = self._t_run = loop.time()
        first_stage = self._compile_wall_s if self._compiled else self._wall_s
        self._timer = loop.call_at(self._t_start + first_stage, self._on_deadline)
        if self._watchdog is not None and self._uid is not None:
            limit = self._compile_memory_kb if self._compiled else self._memory_kb
            self._watch = self._watchdog.watch(self._uid, limit, lambda used: self.kill("memory"))
        for pipe, data in ((self._script_pipe, self._script), (self._stdin_pipe, self._stdin_data)):
            if pipe is not None:
                self._feed(pipe[1], data)

    def _feed(self, fd: int, data: bytes) -> None:
        """Write ``data`` to a pipe and close it, without blocking the loop on a slow reader."""
        assert self._loop is not None
        os.set_blocking(fd, False)
        view = memoryview(data)
        self._feeding[fd] = view

        def write() -> None:
            nonlocal view
            try:
                while view:
                    view = view[os.write(fd, view):]
            except BlockingIOError:
                self._feeding[fd] = view
                if not registered[0]:
                    self._loop.add_writer(fd, write)
                    registered[0] = True
                return
            except OSError:  # the reader is gone (EPIPE): the program did not want it all
                pass
            if registered[0]:
                self._loop.remove_writer(fd)
            del self._feeding[fd]
            os.close(fd)

        registered = [False]
        write()

    @property
    def reaped_by_sandbox(self) -> bool:
        """bwrap exited by itself, so it reaped pid 1, and the kernel had ended every other
        process of the pid namespace before that: nothing of the run can be left."""
        return self._exited and self.outcome.exit_code is not None and self.outcome.spawn_error is None

    def kill(self, reason: str) -> None:
        """Kill the whole run (first reason wins). Safe at any time, also after exit."""
        if self.outcome.killed_for is None and not self._exited:
            self.outcome.killed_for = reason
        if self._exited or self._pidfd is None or self._proc is None:
            return
        if self._inner_pidfd is not None:
            # Kill the program while bwrap is alive to reap it: killing bwrap first would
            # leave pid 1 a zombie of the host's init for a while, holding the slot's uid.
            # bwrap then exits by itself; it is killed too only if it has not after a grace.
            try:
                signal.pidfd_send_signal(self._inner_pidfd, signal.SIGKILL)
            except OSError:
                pass
            if self._loop is not None and self._outer_kill is None:
                self._outer_kill = self._loop.call_later(OUTER_KILL_GRACE_S, self._kill_outer)
            return
        self._kill_outer()

    def _kill_outer(self) -> None:
        self._outer_kill = None
        if self._exited or self._pidfd is None or self._proc is None:
            return
        if self._own_group:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except OSError:  # already exited, not yet reaped
            pass

    # -- event callbacks -------------------------------------------------------------

    def _all_streams(self) -> list[Stream]:
        return self._streams + ([self._compile_stream] if self._compile_stream is not None else [])

    def _on_readable(self, stream: Stream) -> None:
        for _ in range(16):  # bounded, so one flooding run cannot starve the event loop
            try:
                chunk = os.read(stream.fd, READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._on_eof(stream)
                return
            if stream is self._compile_stream:
                self._take_compile(stream, chunk)
            else:
                self._take_output(stream, chunk)

    def _on_info_readable(self) -> None:
        """bwrap's --info-fd: a JSON object with the program's host pid, then EOF."""
        stream = self._info_stream
        assert stream is not None and self._loop is not None
        try:
            chunk = os.read(stream.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if chunk and stream.size < 65536:
            stream.chunks.append(chunk)
            stream.size += len(chunk)
            try:
                info = json.loads(b"".join(stream.chunks))
            except ValueError:
                return  # incomplete yet
            self._adopt_inner(info.get("child-pid"))
        self._loop.remove_reader(stream.fd)
        os.close(stream.fd)
        stream.eof = True

    def _adopt_inner(self, pid: object) -> None:
        if not isinstance(pid, int) or self._exited or self._inner_pidfd is not None:
            return
        try:
            self._inner_pidfd = os.pidfd_open(pid)
        except OSError:  # already gone
            return
        if self._uid is not None and scan_pid_uid(pid)[:1] != (self._uid,):  # gone and the pid reused meanwhile
            os.close(self._inner_pidfd)
            self._inner_pidfd = None
        elif self.outcome.killed_for is not None:  # a kill came before we knew the pid
            self.kill(self.outcome.killed_for)

    def _take_output(self, stream: Stream, chunk: bytes) -> None:
        room = self._cap - self._captured
        if room > 0:
            kept = chunk[:room]
            stream.chunks.append(kept)
            self._captured += len(kept)
        if len(chunk) > room:
            self.outcome.truncated = True
            self.kill("output")

    def _take_compile(self, stream: Stream, chunk: bytes) -> None:
        stream.keep_with_tail(chunk, self._cap)

    def _on_eof(self, stream: Stream) -> None:
        assert self._loop is not None
        self._loop.remove_reader(stream.fd)
        os.close(stream.fd)
        stream.eof = True
        if stream is self._compile_stream and self._compiled:
            self._compile_finished(stream)
        self._check_done()

    def _compile_finished(self, stream: Stream) -> None:
        """The compile stage ended: parse its trailer and arm the run stage's limits."""
        assert self._loop is not None
        now = self._loop.time()
        status, cpu_ms, output = parse_compile_trailer(stream, self._cap)
        self._compile_cpu_ms = cpu_ms
        self.outcome.compile_output = output
        self.outcome.compile_status = status
        self.outcome.compile_ms = round((now - self._t_start) * 1000)
        if status != 0 or self._exited:
            return
        self._t_run = now
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(now + self._wall_s, self._on_deadline)
        if self._watch is not None:
            self._watch.limit_kb = self._memory_kb
            self._watch.peak_kb = 0

    def _on_deadline(self) -> None:
        self._timer = None
        in_compile = self._compiled and self._compile_stream is not None and not self._compile_stream.eof
        self.kill("compile_timeout" if in_compile else "timeout")

    def _on_exit_readable(self) -> None:
        assert self._loop is not None and self._proc is not None and self._pidfd is not None
        try:
            pid, status, rusage = os.wait4(self._proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (should not happen): treat as exited
            pid, status, rusage = self._proc.pid, 0, None
        if pid == 0:
            return
        self._t_exit = self._loop.time()
        self._exited = True
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = code
        if code < 0:
            self.outcome.term_signal = -code
        else:
            self.outcome.exit_code = code
        if rusage is not None:
            self._rusage_cpu_ms = round((rusage.ru_utime + rusage.ru_stime) * 1000)
            self._max_rss_kb = rusage.ru_maxrss
        for handle in (self._timer, self._outer_kill):
            if handle is not None:
                handle.cancel()
        self._timer = self._outer_kill = None
        if self._own_group:  # unsandboxed: no pid namespace ends the stragglers for us
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except OSError:
                pass
        if not self._check_done():
            self._grace = self._loop.call_later(EOF_GRACE_S, self._on_grace_expired)

    def _on_grace_expired(self) -> None:
        """The process is gone but something still holds its pipes open: stop waiting."""
        self._grace = None
        log.warning("run pipes still open %.1f s after exit; closing them", EOF_GRACE_S)
        for stream in self._all_streams():
            if not stream.eof:
                self._on_eof(stream)

    def _check_done(self) -> bool:
        if self._exited and all(s.eof for s in self._all_streams()):
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
            return True
        return False

    # -- end -------------------------------------------------------------------------

    def _finish(self) -> Outcome:
        o = self.outcome
        o.stdout = b"".join(self._streams[0].chunks)
        o.stderr = b"".join(self._streams[1].chunks)
        o.wall_ms = max(0, round((self._t_exit - self._t_run) * 1000))
        compiled = self._compiled
        o.cpu_ms = max(0, self._rusage_cpu_ms - self._compile_cpu_ms)
        peak = self._watch.peak_kb if self._watch is not None else 0
        # ru_maxrss is the largest single process of the run, but the vfork'ed spawn starts
        # from the server's own memory high-water mark: only a figure above it is the run's.
        # With a compile stage it is the compiler's.
        rss = self._max_rss_kb if not compiled and self._max_rss_kb > self._server_hwm_kb else 0
        o.memory_kb = max(peak, rss)
        return o

    def _cleanup(self) -> None:
        loop = self._loop
        for handle in (self._timer, self._grace, self._outer_kill):
            if handle is not None:
                handle.cancel()
        self._timer = self._grace = self._outer_kill = None
        if self._inner_pidfd is not None:
            os.close(self._inner_pidfd)
            self._inner_pidfd = None
        for fd in list(self._feeding):
            if loop is not None:
                loop.remove_writer(fd)
            os.close(fd)
        self._feeding.clear()
        if not self._armed:  # never fed: our ends of the input pipes are still open
            for pipe in (self._script_pipe, self._stdin_pipe):
                if pipe is not None:
                    os.close(pipe[1])
        if self._info_stream is not None and not self._info_stream.eof:
            if loop is not None:
                loop.remove_reader(self._info_stream.fd)
            os.close(self._info_stream.fd)
            self._info_stream.eof = True
        if self._watch is not None and self._watchdog is not None:
            self._watchdog.unwatch(self._watch)
        if loop is not None:
            for stream in self._all_streams():
                if not stream.eof:
                    loop.remove_reader(stream.fd)
                    os.close(stream.fd)
                    stream.eof = True
            if self._pidfd is not None:
                loop.remove_reader(self._pidfd)
        if self._pidfd is not None and self._proc is not None and not self._exited:
            # Only reached if execute() itself failed: never leave the process behind.
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(self._proc.pid, 0)  # SIGKILLed: returns promptly
            except ChildProcessError:
                pass
            self._proc.returncode = -signal.SIGKILL
            self._exited = True
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
