"""The executor: what the HTTP core calls to run a session's code.

It owns the machine-wide pieces (sandbox probe, detected languages, slots and their
uids, the memory watchdog) and turns ``run(language, code)`` into a RunResult. A
run's process work lives in a task of its own that holds the slot until every process
of the run is gone, so a caller that is cancelled (the client disconnected) gets its
CancelledError at once while the kill and cleanup finish behind it, and the slot is
never handed to the next run while anything of the previous one is alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ExecutionUnavailable, UnknownLanguage
from ..languages import LANGUAGES, Language
from .limits import ExecutionLimits
from .outcome import Outcome
from .pipes import make_pipe
from .prestart import PrestartPool
from .process import ProcessRun, StageLimits
from .result import UNSANDBOXED_WARNING, RunResult, judge
from .sandbox import Sandbox, SandboxTools, SandboxUnavailable, check_host, make_etc_dir
from .slots import DEFAULT_UID_BASE, Slot, SlotPool, UidLeases
from .unsandboxed import unsandboxed_run
from .watchdog import MemoryWatchdog, sweep_uid

log = logging.getLogger("algoroom.execution")

_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")
_SPAWN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_PROBE = Language(id="probe", name="sandbox probe", file_name="probe", run=("true",), version_command=())


class Executor:
    """Runs untrusted code in per-run bubblewrap sandboxes, a bounded number at a time."""

    def __init__(
        self,
        limits: ExecutionLimits | None = None,
        allow_unsandboxed: bool = False,
        *,
        languages: Mapping[str, Language] = LANGUAGES,
        uid_base: int = DEFAULT_UID_BASE,
        prestart: bool = True,
    ) -> None:
        self.limits = limits or ExecutionLimits()
        self.allow_unsandboxed = allow_unsandboxed
        self.available = False
        self.unavailable_reason: str | None = "the executor has not been started"
        self.unsandboxed = False
        self._registry = dict(languages)
        self._uid_base = uid_base
        self._versions: dict[str, str] = {}
        self._sandbox: Sandbox | None = None
        self._tools: SandboxTools | None = None
        self._leases: UidLeases | None = None
        self._etc_dir: str | None = None
        self._pool: SlotPool | None = None
        self._slots: list[Slot] = []
        self._prestart_enabled = prestart
        self._prestart: PrestartPool | None = None
        self._watchdog = MemoryWatchdog()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runs: set[ProcessRun] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Probe the sandbox and detect languages; never raises for an unusable host."""
        try:
            await self._start_sandbox()
        except SandboxUnavailable as exc:
            self._release_host_resources()
            if not self.allow_unsandboxed:
                self.unavailable_reason = str(exc)
                log.error("%s", exc)
                return
            self._start_unsandboxed(str(exc))
        await self._detect_languages()
        if not self._versions:
            self.available = False
            self.unavailable_reason = (
                "code execution is disabled: no language toolchain works in the sandbox; "
                "install python3 and nodejs (apt-get install python3 nodejs)"
            )
            log.error("%s", self.unavailable_reason)
            return
        self.available = True
        self.unavailable_reason = None
        if self._sandbox is not None and self._prestart_enabled:
            self._prestart = PrestartPool(self._sandbox, self._ceilings(), self._watchdog, _SPAWN_ENV)
            for slot in self._slots:
                self._prestart.start(slot)
        log.info(
            "code execution ready (%s, %d slots): %s",
            "UNSANDBOXED" if self.unsandboxed else "bubblewrap sandbox",
            self.limits.max_concurrency,
            ", ".join(f"{lang} {version}" for lang, version in self._versions.items()),
        )

    async def _start_sandbox(self) -> None:
        self._tools = SandboxTools.find()
        check_host()
        try:
            self._leases = UidLeases(self._uid_base)
            uids = self._leases.claim(self.limits.max_concurrency)
        except OSError as exc:
            raise SandboxUnavailable(f"code execution is disabled: {exc}") from None
        self._etc_dir = make_etc_dir()
        self._sandbox = Sandbox(self._tools, self._etc_dir)
        # A server killed mid-run leaves nothing (die-with-parent), but a uid is ours now: make sure.
        await asyncio.gather(*(sweep_uid(uid) for uid in uids))
        self._slots = [Slot(i, uid) for i, uid in enumerate(uids)]
        self._pool = SlotPool(list(self._slots), self.limits.max_queue)
        outcome = await self._execute(_PROBE, "", "", (), self.limits, bounded=False)
        if outcome.spawn_error is not None or outcome.exit_code != 0:
            detail = (outcome.spawn_error or outcome.stderr.decode("utf-8", "replace")).strip().splitlines()
            raise SandboxUnavailable(
                f"code execution is disabled: the sandbox does not start here "
                f"({detail[0] if detail else f'exit {outcome.exit_code}'}); run the server as real root on a host "
                "that allows unprivileged user namespaces (sysctl -w kernel.unprivileged_userns_clone=1; on Ubuntu "
                "also kernel.apparmor_restrict_unprivileged_userns=0), not inside a user namespace"
            )

    def _start_unsandboxed(self, why: str) -> None:
        self.unsandboxed = True
        self._sandbox = None
        self._pool = SlotPool(
            [Slot(i, -1) for i in range(self.limits.max_concurrency)], self.limits.max_queue
        )
        banner = "!" * 78
        log.warning(
            "\n%s\n!! %s\n!! (sandbox unusable: %s)\n%s", banner, UNSANDBOXED_WARNING, why, banner,
        )

    async def _detect_languages(self) -> None:
        async def detect(lang: Language) -> tuple[str, str | None]:
            probe = dataclasses.replace(lang, file_name=".version", run=lang.version_command, compile=None)
            limits = dataclasses.replace(
                self.limits.with_floors(lang.limit_overrides), wall_ms=15000, cpu_ms=15000, output_bytes=65536
            )
            outcome = await self._execute(probe, "", "", (), limits, bounded=False)
            if outcome.exit_code != 0 or outcome.killed_for is not None:
                return lang.id, None
            match = _VERSION_RE.search((outcome.stdout + outcome.stderr).decode("utf-8", "replace"))
            return lang.id, match.group(1) if match else None

        found = await asyncio.gather(*(detect(lang) for lang in self._registry.values()))
        self._versions = {lang_id: version for lang_id, version in found if version is not None}
        missing = sorted(set(self._registry) - set(self._versions))
        if missing:
            log.info("languages without a working toolchain here: %s", ", ".join(missing))

    async def close(self) -> None:
        """Kill every run, wait until all of it is gone, and release the slots' uids."""
        self._closing = True
        self.available = False
        self.unavailable_reason = "the executor is shut down"
        for run in list(self._runs):
            run.kill("cancelled")
        if self._prestart is not None:
            await self._prestart.close(self._slots)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._watchdog.close()
        self._release_host_resources()

    def _ceilings(self) -> ExecutionLimits:
        """The highest limits any available language may get: a pre-started sandbox's rlimits."""
        ceilings = self.limits
        for lang_id in self._versions:
            ceilings = ceilings.with_floors(self._registry[lang_id].limit_overrides)
        return ceilings

    def _release_host_resources(self) -> None:
        if self._leases is not None:
            self._leases.release()
            self._leases = None
        if self._etc_dir is not None:
            shutil.rmtree(self._etc_dir, ignore_errors=True)  # our own dir, never a box
            self._etc_dir = None

    # -- queries ---------------------------------------------------------------------

    def languages(self) -> list[dict[str, Any]]:
        """The available languages, for GET /languages."""
        return [
            {"id": lang.id, "name": lang.name, "version": self._versions[lang.id], "aliases": list(lang.aliases)}
            for lang in self._registry.values()
            if lang.id in self._versions
        ]

    @property
    def slot_uids(self) -> tuple[int, ...]:
        """The host uids of the slots (empty when unsandboxed): every process of a run runs as one."""
        if self._sandbox is None or self._pool is None:
            return ()
        return self._pool.uids

    @property
    def prestarted_pids(self) -> set[int]:
        """Host pids (outer bwrap) of the sandboxes waiting for their run; they and their
        descendants are the only processes of the slot uids between runs."""
        return self._prestart.pids if self._prestart is not None else set()

    @property
    def running(self) -> int:
        return self._pool.busy if self._pool is not None else 0

    @property
    def queued(self) -> int:
        return self._pool.waiting if self._pool is not None else 0

    def is_available_language(self, lang_id: str) -> bool:
        lang = self._resolve(lang_id)
        return lang is not None and lang.id in self._versions

    def _resolve(self, lang_id: str) -> Language | None:
        key = lang_id.strip().lower()
        if key in self._registry:
            return self._registry[key]
        return next((lang for lang in self._registry.values() if key in lang.aliases), None)

    # -- running ---------------------------------------------------------------------

    async def run(
        self,
        language_id: str,
        code: str,
        stdin: str = "",
        args: Sequence[str] = (),
        timeout_ms: int | None = None,
    ) -> RunResult:
        if not self.available or self._closing:
            raise ExecutionUnavailable(self.unavailable_reason or "code execution is unavailable")
        lang = self._resolve(language_id)
        if lang is None or lang.id not in self._versions:
            raise UnknownLanguage(language_id, sorted(self._versions))
        limits = self.limits.with_floors(lang.limit_overrides)
        limits = dataclasses.replace(limits, wall_ms=self.limits.clamp_wall_ms(timeout_ms))
        version = self._versions[lang.id]
        warning = UNSANDBOXED_WARNING if self.unsandboxed else None
        if not code.strip():
            return RunResult("ok", exit_code=0, language=lang.id, version=version, warning=warning)
        outcome = await self._execute(
            lang, code, stdin, tuple(str(a) for a in args), limits, bounded=True
        )
        return judge(outcome, language=lang, version=version, limits=limits, wall_ms=limits.wall_ms, warning=warning)

    async def _execute(
        self,
        lang: Language,
        code: str,
        stdin: str,
        args: tuple[str, ...],
        limits: ExecutionLimits,
        *,
        bounded: bool,
    ) -> Outcome:
        assert self._pool is not None
        slot = await self._pool.acquire(bounded=bounded)
        loop = asyncio.get_running_loop()
        started = loop.time()
        fds: list[int] = []
        try:
            # The probe and the version checks run before any sandbox is pre-started.
            taken = self._prestart.take(slot, lang, limits, code, stdin, args) if self._prestart is not None else None
            if taken is not None:
                run, workdir = taken, None
            else:
                if self._prestart is not None:
                    await self._prestart.discard(slot)  # a dead or unsuitable one: the uid must be clean
                run, workdir = self._prepare(slot, lang, code, stdin, args, limits, fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            self._pool.release(slot)
            raise
        result: asyncio.Future[Outcome] = loop.create_future()
        task = loop.create_task(self._drive(slot, run, fds, workdir, result, started))
        self._tasks.add(task)
        self._runs.add(run)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            run.kill("cancelled")
            raise

    def _prepare(
        self,
        slot: Slot,
        lang: Language,
        code: str,
        stdin: str,
        args: tuple[str, ...],
        limits: ExecutionLimits,
        fds: list[int],
    ) -> tuple[ProcessRun, str | None]:
        """The ProcessRun for one run; every fd it opens is appended to ``fds`` (closed after the run)."""
        stdin_fd = os.memfd_create("algoroom-stdin", os.MFD_CLOEXEC)
        fds.append(stdin_fd)
        if stdin:
            _write_all(stdin_fd, stdin.encode("utf-8"))
            os.lseek(stdin_fd, 0, os.SEEK_SET)
        compile_pipe = make_pipe() if lang.compile is not None else None
        common: dict[str, Any] = {
            "stdin_fd": stdin_fd,
            "compile_pipe": compile_pipe,
            "limits": StageLimits.of(limits, compiled=lang.compile is not None),
        }
        if self._sandbox is not None:
            info_pipe = make_pipe()  # both ends, like compile_pipe's, are the ProcessRun's to close
            source_fd = os.memfd_create("algoroom-source", os.MFD_CLOEXEC)
            fds.append(source_fd)
            _write_all(source_fd, code.encode("utf-8"))
            os.lseek(source_fd, 0, os.SEEK_SET)
            argv = self._sandbox.command(
                uid=slot.uid, language=lang, limits=limits, source_fd=source_fd,
                compile_fd=compile_pipe[1] if compile_pipe else None, info_fd=info_pipe[1], args=args,
            )
            pass_fds = (source_fd, info_pipe[1]) + ((compile_pipe[1],) if compile_pipe else ())
            run = ProcessRun(
                argv, env=dict(_SPAWN_ENV), pass_fds=pass_fds, info_pipe=info_pipe, uid=slot.uid,
                watchdog=self._watchdog, **common,
            )
            return run, None
        return unsandboxed_run(self._tools, lang, code, args, limits, compile_pipe, common)

    async def _drive(
        self,
        slot: Slot,
        run: ProcessRun,
        fds: list[int],
        workdir: str | None,
        result: asyncio.Future[Outcome],
        started: float,
    ) -> None:
        assert self._pool is not None
        try:
            try:
                outcome = await run.execute()
            except Exception as exc:  # a bug here must not kill the server or leak the slot
                log.exception("execution failed")
                outcome = Outcome(spawn_error=f"internal error: {exc}")
            finally:
                for fd in fds:
                    os.close(fd)
            if not result.done():
                result.set_result(outcome)
            if self._sandbox is not None and not run.reaped_by_sandbox:
                await sweep_uid(slot.uid)  # bwrap itself was killed: its pid 1 may still be dying
            if self._prestart is not None and not self._closing:
                self._prestart.start(slot)  # for the next run of this slot
        finally:
            if not result.done():
                result.set_result(Outcome(spawn_error="the run was interrupted"))
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            self._runs.discard(run)
            self._pool.release(slot, asyncio.get_running_loop().time() - started)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
