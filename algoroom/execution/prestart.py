"""Sandboxes started ahead of their runs, one per idle slot.

Setting up a sandbox (three exec wrappers, six namespaces, a dozen mounts) costs about as
much as starting a Python interpreter, and it does not depend on the run: so each idle
slot keeps one ready, its bash (pid 1) blocked reading a script pipe. A run then only
writes its script (source, arguments, its own limits, the command to exec) into the
pipe and its stdin into another; the sandbox is set up while nobody waits. It is the
same sandbox as a run started on demand, with the same uid, namespaces and mounts; its
rlimits start at the highest any language may get and the script lowers them to the
run's own before anything of the run executes.

A pre-started sandbox is used at most once; a new one is started when its slot is free
again. The executor falls back to starting on demand whenever none is ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..languages import Language
from .limits import ExecutionLimits
from .pipes import make_input_pipe, make_pipe
from .process import ProcessRun, StageLimits
from .sandbox import Sandbox, launcher_script
from .slots import Slot
from .watchdog import MemoryWatchdog, sweep_uid

log = logging.getLogger("algoroom.execution")


@dataclass
class Prestarted:
    run: ProcessRun
    compile_fd: int
    script_fd: int

    def prepare(self, lang: Language, limits: ExecutionLimits, code: str, stdin: str, args: tuple[str, ...]) -> None:
        """Give the waiting sandbox its run (takes effect when the run is executed)."""
        script = launcher_script(lang, limits, code=code, args=args, compile_fd=self.compile_fd,
                                 script_fd=self.script_fd)
        self.run.configure(StageLimits.of(limits, compiled=lang.compile is not None), script=script,
                           stdin=stdin.encode("utf-8"))


class PrestartPool:
    def __init__(
        self, sandbox: Sandbox, ceilings: ExecutionLimits, watchdog: MemoryWatchdog, spawn_env: dict[str, str]
    ) -> None:
        self._sandbox = sandbox
        self._ceilings = ceilings
        self._watchdog = watchdog
        self._env = spawn_env
        self._ready: dict[int, Prestarted] = {}
        self._cleanups: set[asyncio.Task[object]] = set()
        self._closed = False

    def start(self, slot: Slot) -> None:
        """Start a sandbox for ``slot`` (synchronous, about a millisecond; setup goes on in it)."""
        if self._closed or slot.index in self._ready:
            return
        info, compile_pipe = make_pipe(), make_pipe()
        script, stdin = make_input_pipe(), make_input_pipe()
        argv = self._sandbox.prestart_command(
            uid=slot.uid, ceilings=self._ceilings, info_fd=info[1], script_fd=script[0]
        )
        run = ProcessRun(
            argv, env=dict(self._env), stdin_pipe=stdin, script_pipe=script, compile_pipe=compile_pipe,
            info_pipe=info, pass_fds=(info[1], script[0], compile_pipe[1]), uid=slot.uid, watchdog=self._watchdog,
            limits=StageLimits.of(self._ceilings, compiled=False),
        )
        if run.spawn():
            self._ready[slot.index] = Prestarted(run, compile_fd=compile_pipe[1], script_fd=script[0])
        else:
            log.warning("could not pre-start a sandbox: %s", run.outcome.spawn_error)
            cleanup = asyncio.get_running_loop().create_task(run.execute())  # only cleans up: it never started
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    @property
    def pids(self) -> set[int]:
        """Host pids of the waiting sandboxes' outer bwrap processes."""
        return {ready.run.pid for ready in self._ready.values() if ready.run.pid is not None}

    def take(
        self, slot: Slot, lang: Language, limits: ExecutionLimits, code: str, stdin: str, args: tuple[str, ...]
    ) -> ProcessRun | None:
        """The slot's waiting sandbox, given this run, if it can take it.

        It stays the slot's (for :meth:`discard`) unless it took the run: bash strings
        cannot hold NUL, so a run with one in its source starts on demand.
        """
        ready = self._ready.get(slot.index)
        if ready is None or not ready.run.waiting:
            return None
        try:
            ready.prepare(lang, limits, code, stdin, args)
        except ValueError:
            return None
        del self._ready[slot.index]
        return ready.run

    async def discard(self, slot: Slot) -> None:
        """Kill the slot's sandbox, if any, and wait until nothing of it is left."""
        ready = self._ready.pop(slot.index, None)
        if ready is not None:
            await _end(ready.run, slot.uid)

    async def close(self, slots: list[Slot]) -> None:
        self._closed = True
        await asyncio.gather(*(self.discard(slot) for slot in slots), *self._cleanups, return_exceptions=True)


async def _end(run: ProcessRun, uid: int) -> None:
    run.kill("cancelled")
    await run.execute()
    await sweep_uid(uid)
