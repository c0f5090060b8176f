"""Execution slots: a bounded number of runs at once, a bounded queue, one uid per slot.

A slot is what a run holds while it exists: its own host uid, so the per-uid process
limit and the watchdog's view are the run's alone. Uids are claimed host-wide with
``flock`` on a lock file per uid, so two executors on one machine (test workers, a
second server, the benchmark beside a server) never share a uid; the kernel releases
the lock when the process dies, however it dies.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import math
import os
from dataclasses import dataclass

from ..errors import ExecutionBusy

DEFAULT_UID_BASE = 2_000_000_000
UID_RANGE = 4096
LOCK_DIR_CANDIDATES = ("/run/lock", "/run", "/tmp")


@dataclass(frozen=True)
class Slot:
    index: int
    uid: int


class UidLeases:
    """Host-wide exclusive claims on sandbox uids, held for the executor's lifetime."""

    def __init__(self, base: int = DEFAULT_UID_BASE) -> None:
        self._base = base
        self._fds: dict[int, int] = {}
        self._dir = self._lock_dir()

    @staticmethod
    def _lock_dir() -> str:
        for parent in LOCK_DIR_CANDIDATES:
            if os.access(parent, os.W_OK):
                path = os.path.join(parent, "algoroom-exec")
                os.makedirs(path, mode=0o700, exist_ok=True)
                return path
        raise OSError("no writable directory for sandbox uid lock files")

    def claim(self, count: int) -> list[int]:
        uids: list[int] = []
        for uid in range(self._base, self._base + UID_RANGE):
            if len(uids) == count:
                break
            fd = os.open(os.path.join(self._dir, f"uid-{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._fds[uid] = fd
            uids.append(uid)
        if len(uids) < count:
            self.release()
            raise OSError(f"could not claim {count} free sandbox uids from {self._base}")
        return uids

    def release(self) -> None:
        for fd in self._fds.values():
            os.close(fd)  # closing the last fd of the lock file drops the flock
        self._fds.clear()


class SlotPool:
    """FIFO hand-out of free slots; waiting is bounded by ``max_queue``."""

    def __init__(self, slots: list[Slot], max_queue: int) -> None:
        self._free: collections.deque[Slot] = collections.deque(slots)
        self.uids = tuple(slot.uid for slot in slots)
        self._size = len(slots)
        self._max_queue = max_queue
        self._waiters: collections.deque[asyncio.Future[Slot]] = collections.deque()
        #: Smoothed seconds a slot is held, for Retry-After.
        self._hold_ema_s = 1.0

    @property
    def busy(self) -> int:
        return self._size - len(self._free)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def retry_after_seconds(self) -> int:
        """Roughly when a new request would get a slot: queued runs ahead, divided among slots."""
        return max(1, math.ceil(self._hold_ema_s * (self.waiting + 1) / max(1, self._size)))

    async def acquire(self, *, bounded: bool = True) -> Slot:
        """A free slot, waiting in line if need be; ExecutionBusy if the line is full."""
        if self._free and not self._waiters:
            return self._free.popleft()
        if bounded and len(self._waiters) >= self._max_queue:
            raise ExecutionBusy(self.retry_after_seconds())
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed over just as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, slot: Slot, held_s: float | None = None) -> None:
        if held_s is not None:
            self._hold_ema_s = 0.8 * self._hold_ema_s + 0.2 * held_s
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)
