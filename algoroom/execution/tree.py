"""A run's process tree, seen from the server: killed in the right order, reaped once.

We spawn the exec chain that becomes bwrap (outside the run's namespaces); bwrap's
``--info-fd`` then tells us the host pid of the program, pid 1 of the run's pid
namespace. Both are held as pidfds, so a signal can never hit a process that reused one
of their pids. To kill a run we SIGKILL pid 1: the kernel ends everything else in its
pid namespace, and bwrap, still alive, reaps it and exits. Killing bwrap first would
leave pid 1 a zombie of the host's init for a while, still counted against the slot's
uid; bwrap is killed too only if it has not exited after a grace period, or when pid 1
is not known yet.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
from typing import Callable

from .watchdog import scan_pid_uid

#: After the program was SIGKILLed, how long bwrap may take to notice and exit.
OUTER_KILL_GRACE_S = 1.0

OnExit = Callable[[int, "resource.struct_rusage | None"], None]


class ProcessTree:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        proc: subprocess.Popen[bytes],
        *,
        uid: int | None,
        own_group: bool,
        on_exit: OnExit,
    ) -> None:
        self._loop = loop
        self.proc = proc
        self._uid = uid
        self._own_group = own_group
        self._on_exit = on_exit
        self._inner: int | None = None
        self._outer_timer: asyncio.TimerHandle | None = None
        self.exited = False
        self._pidfd: int | None = os.pidfd_open(proc.pid)
        loop.add_reader(self._pidfd, self._readable)

    def adopt_inner(self, pid: object) -> bool:
        """Hold the program's pid (from --info-fd) if it is still the run's process."""
        if not isinstance(pid, int) or self.exited or self._inner is not None:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # already gone
            return False
        if self._uid is not None and scan_pid_uid(pid)[:1] != (self._uid,):  # gone, and the pid reused
            os.close(pidfd)
            return False
        self._inner = pidfd
        return True

    def kill(self) -> None:
        if self.exited:
            return
        if self._inner is not None:
            try:
                signal.pidfd_send_signal(self._inner, signal.SIGKILL)
            except OSError:
                pass
            if self._outer_timer is None:
                self._outer_timer = self._loop.call_later(OUTER_KILL_GRACE_S, self.kill_outer)
            return
        self.kill_outer()

    def kill_outer(self) -> None:
        self._outer_timer = None
        if self.exited or self._pidfd is None:
            return
        if self._own_group:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except OSError:  # exited, not yet reaped
            pass

    def _readable(self) -> None:
        try:
            pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (should not happen): treat as exited
            pid, status, rusage = self.proc.pid, 0, None
        if pid == 0:
            return
        self.exited = True
        code = os.waitstatus_to_exitcode(status)
        self.proc.returncode = code
        self._close_handles()
        if self._own_group:  # unsandboxed: no pid namespace ends the stragglers for us
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
        self._on_exit(code, rusage)

    def _close_handles(self) -> None:
        if self._outer_timer is not None:
            self._outer_timer.cancel()
            self._outer_timer = None
        if self._inner is not None:
            os.close(self._inner)
            self._inner = None
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        """Release everything; if the process was never reaped (a bug upstream), kill and reap it now."""
        if not self.exited and self._pidfd is not None:
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(self.proc.pid, 0)  # SIGKILLed: returns promptly
            except ChildProcessError:
                pass
            self.proc.returncode = -signal.SIGKILL
            self.exited = True
        self._close_handles()
