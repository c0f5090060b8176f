"""Seeing one spawned run through: pipes, deadlines, memory, exit, kill.

Why it is built this way:

- ``subprocess.Popen`` without ``preexec_fn`` spawns with vfork (about 1 ms whatever the
  server's size); ``close_fds`` keeps every server fd out of the sandbox.
- We own the pipes (pipes.py) and read them with ``loop.add_reader`` until EOF, always,
  even past the output cap: a writer on an undrained pipe blocks until the wall limit.
  asyncio's own subprocess transport is not used, so CPython issue 119710
  (``Process.wait()`` waits for pipe EOF on 3.11-3.13) does not apply.
- Exit is observed and killing done through pidfds (tree.py); the spawned process is
  reaped with ``wait4``, whose rusage covers every process of the run that was reaped
  inside it (with ``--as-pid-1`` that is all of them): the run's CPU time.
- Stages: a compiled language first compiles (its own deadline and memory limit, its
  output on a third pipe ending in a status trailer), then runs with the run limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from .limits import ExecutionLimits
from .outcome import Outcome
from .pipes import READ_CHUNK, Feeder, Stream, make_pipe, parse_compile_trailer
from .tree import ProcessTree
from .watchdog import MemoryWatchdog, own_memory_high_water_kb

log = logging.getLogger("algoroom.execution")

#: After the process exited and was killed, how long its pipes may take to reach EOF.
EOF_GRACE_S = 2.0


@dataclass(frozen=True)
class StageLimits:
    """What a ProcessRun enforces itself (the rest are rlimits set by its command line)."""

    output_cap: int
    wall_ms: int
    memory_kb: int
    compiled: bool = False
    compile_wall_ms: int = 0
    compile_memory_kb: int = 0

    @classmethod
    def of(cls, limits: ExecutionLimits, *, compiled: bool) -> StageLimits:
        return cls(
            output_cap=limits.output_bytes, wall_ms=limits.wall_ms, memory_kb=limits.memory_mb * 1024,
            compiled=compiled, compile_wall_ms=limits.compile_wall_ms,
            compile_memory_kb=limits.compile_stage_memory_mb * 1024,
        )


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
        info_pipe: tuple[int, int] | None = None,
        cwd: str = "/",
        limits: StageLimits,
        uid: int | None = None,
        watchdog: MemoryWatchdog | None = None,
        own_process_group: bool = False,
    ) -> None:
        self._argv = list(argv)
        self._env = env
        self._stdin_fd = stdin_fd
        self._pass_fds = pass_fds
        self._compile_pipe = compile_pipe
        self._info_pipe = info_pipe
        self._stdin_pipe = stdin_pipe
        self._script_pipe = script_pipe
        self._script = b""
        self._stdin_data = b""
        self._feeder: Feeder | None = None
        self._spawned = False
        self._armed = False
        self._cwd = cwd
        self._uid = uid
        self._watchdog = watchdog
        self._own_group = own_process_group
        self._set_limits(limits)

        self.outcome = Outcome()
        self._captured = 0
        self._streams: list[Stream] = []
        self._compile_stream: Stream | None = None
        self._info_stream: Stream | None = None
        self._tree: ProcessTree | None = None
        self._exited = False
        self._rusage_cpu_ms = 0
        self._max_rss_kb = 0
        self._server_hwm_kb = 0
        self._compile_cpu_ms = 0
        self._timer: asyncio.TimerHandle | None = None
        self._grace: asyncio.TimerHandle | None = None
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
                proc = subprocess.Popen(  # noqa: ASYNC220 -- vfork + exec: returns in about a ms
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
        self._tree = ProcessTree(loop, proc, uid=self._uid, own_group=self._own_group, on_exit=self._on_exit)
        for stream in self._all_streams():
            loop.add_reader(stream.fd, self._on_readable, stream)
        if self._info_stream is not None:
            loop.add_reader(self._info_stream.fd, self._on_info_readable)
        return True

    @property
    def pid(self) -> int | None:
        return self._tree.proc.pid if self._tree is not None and not self._exited else None

    @property
    def waiting(self) -> bool:
        """Spawned, not started, and still alive: usable as a pre-started sandbox."""
        return self._spawned and not self._armed and not self._exited

    def configure(self, limits: StageLimits, *, script: bytes = b"", stdin: bytes = b"") -> None:
        """Set the limits of the run a pre-started sandbox is about to get, and its input."""
        self._set_limits(limits)
        self._script = script
        self._stdin_data = stdin

    def _set_limits(self, limits: StageLimits) -> None:
        self._compiled = limits.compiled
        self._cap = limits.output_cap
        self._wall_s = limits.wall_ms / 1000
        self._compile_wall_s = limits.compile_wall_ms / 1000
        self._memory_kb = limits.memory_kb
        self._compile_memory_kb = limits.compile_memory_kb

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
        self._feeder = Feeder(loop)
        for pipe, data in ((self._script_pipe, self._script), (self._stdin_pipe, self._stdin_data)):
            if pipe is not None:
                self._feeder.feed(pipe[1], data)

    @property
    def reaped_by_sandbox(self) -> bool:
        """bwrap exited by itself, so it reaped pid 1, and the kernel had ended every other
        process of the pid namespace before that: nothing of the run can be left."""
        return self._exited and self.outcome.exit_code is not None and self.outcome.spawn_error is None

    def kill(self, reason: str) -> None:
        """Kill the whole run (first reason wins). Safe at any time, also after exit."""
        if self.outcome.killed_for is None and not self._exited:
            self.outcome.killed_for = reason
        if self._tree is not None and not self._exited:
            self._tree.kill()

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
            if self._tree is not None and self._tree.adopt_inner(info.get("child-pid")):
                if self.outcome.killed_for is not None:  # a kill came before we knew the pid
                    self._tree.kill()
        self._loop.remove_reader(stream.fd)
        os.close(stream.fd)
        stream.eof = True

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

    def _on_exit(self, code: int, rusage: resource.struct_rusage | None) -> None:
        assert self._loop is not None
        self._t_exit = self._loop.time()
        self._exited = True
        if code < 0:
            self.outcome.term_signal = -code
        else:
            self.outcome.exit_code = code
        if rusage is not None:
            self._rusage_cpu_ms = round((rusage.ru_utime + rusage.ru_stime) * 1000)
            self._max_rss_kb = rusage.ru_maxrss
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
        for handle in (self._timer, self._grace):
            if handle is not None:
                handle.cancel()
        self._timer = self._grace = None
        if self._feeder is not None:
            self._feeder.close()
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
        if self._tree is not None:
            self._tree.close()  # kills and reaps it if execute() itself failed midway
            self._exited = True
