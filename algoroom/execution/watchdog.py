"""Who runs as a slot's uid, how much memory they hold, and killing them.

Every process of a run, and nothing else, runs as its slot's uid, so the uid is how the
executor finds a run's processes from the host: to bound the memory of the whole run
(RLIMIT_DATA is per process and we may not create cgroups on this machine, so a
watchdog sums the run's memory every 50 ms) and to make sure nothing of a run is left
before its slot is reused. We read ``/proc/PID/status`` rather than the owner of
``/proc/PID``: a process that makes itself non-dumpable shows up as owned by root there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("algoroom.execution")

SCAN_INTERVAL_S = 0.05


@dataclass
class UidUsage:
    pids: list[int] = field(default_factory=list)
    #: Anonymous + shared-memory resident KiB: what the run itself holds (not page cache).
    memory_kb: int = 0


def _field(data: bytes, name: bytes) -> bytes | None:
    start = data.find(b"\n" + name)
    if start < 0:
        return None
    start += len(name) + 1
    end = data.find(b"\n", start)
    return data[start:end if end >= 0 else None]


def scan_uids(uids: Iterable[int]) -> dict[int, UidUsage]:
    """The processes (and their memory) whose real uid is one of ``uids``, by uid."""
    wanted = set(uids)
    usage = {uid: UidUsage() for uid in wanted}
    if not wanted:
        return usage
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                data = f.read()
        except OSError:  # gone meanwhile
            continue
        uid_field = _field(data, b"Uid:")
        if uid_field is None:
            continue
        uid = int(uid_field.split()[0])
        if uid not in wanted:
            continue
        entry = usage[uid]
        entry.pids.append(int(name))
        for key in (b"RssAnon:", b"RssShmem:"):
            value = _field(data, key)
            if value:
                entry.memory_kb += int(value.split()[0])
    return usage


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is ``uid``; the number signalled.

    Each pid is pinned with a pidfd and its uid checked again through it before the
    signal, so a pid that was reused meanwhile by someone else's process is never hit.
    """
    killed = 0
    for pid in scan_uids([uid])[uid].pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if scan_pid_uid(pid)[:1] == (uid,):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed += 1
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return killed


def scan_pid_uid(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            value = _field(f.read(), b"Uid:")
    except OSError:
        return ()
    return tuple(int(v) for v in value.split()) if value else ()


def own_memory_high_water_kb() -> int:
    """The server's own peak RSS (VmHWM), or a huge number if it cannot be read."""
    try:
        with open("/proc/self/status", "rb") as f:
            value = _field(f.read(), b"VmHWM:")
        return int(value.split()[0]) if value else 1 << 40
    except (OSError, ValueError, IndexError):
        return 1 << 40


async def sweep_uid(uid: int, *, timeout_s: float = 5.0) -> bool:
    """Kill whatever still runs as ``uid`` and wait until it is gone; False if it would not go."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.002
    while True:
        if not scan_uids([uid])[uid].pids:
            return True
        kill_uid(uid)
        if loop.time() >= deadline:
            log.error("processes of sandbox uid %d survived SIGKILL for %.1f s", uid, timeout_s)
            return False
        await asyncio.sleep(delay)  # a SIGKILLed process exits on its own; nothing to wait on
        delay = min(delay * 2, 0.05)


@dataclass
class _Watch:
    uid: int
    limit_kb: int
    on_exceeded: Callable[[int], None]
    peak_kb: int = 0
    fired: bool = False


class MemoryWatchdog:
    """One task that samples every watched uid's memory and reports the first excess.

    One scan of /proc serves all concurrent runs; the task only runs while something
    is watched.
    """

    def __init__(self, interval_s: float = SCAN_INTERVAL_S) -> None:
        self._interval = interval_s
        self._watches: dict[int, _Watch] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, uid: int, limit_kb: int, on_exceeded: Callable[[int], None]) -> _Watch:
        entry = _Watch(uid, limit_kb, on_exceeded)
        self._watches[uid] = entry
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="algoroom-exec-watchdog")
        return entry

    def unwatch(self, entry: _Watch) -> None:
        if self._watches.get(entry.uid) is entry:
            del self._watches[entry.uid]

    async def close(self) -> None:
        self._watches.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while self._watches:
            await asyncio.sleep(self._interval)
            self.sample()

    def sample(self) -> None:
        """Scan once; call ``on_exceeded(used_kb)`` for each watch over its limit."""
        watches = list(self._watches.values())
        if not watches:
            return
        usage = scan_uids(w.uid for w in watches)
        for w in watches:
            used = usage[w.uid].memory_kb
            w.peak_kb = max(w.peak_kb, used)
            if used > w.limit_kb and not w.fired:
                w.fired = True
                try:
                    w.on_exceeded(used)
                except Exception:  # one run's callback must not stop the watchdog of the others
                    log.exception("memory watchdog callback failed")
