"""The limits of one run, as one frozen value.

The HTTP core builds an :class:`ExecutionLimits` from its ``ALGOROOM_EXEC_*`` settings
and hands it to the executor; the executor derives each run's effective limits from it
(per-language floors, the client's clamped ``timeoutMs``). Defaults are comparable to
Judge0's: 5 s CPU, 10 s wall, 256 MiB, 64 processes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _cores() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ExecutionLimits:
    #: CPU seconds per process (RLIMIT_CPU has 1 s granularity: rounded up).
    cpu_ms: int = 5000
    #: Wall-clock limit of the run stage; the real bound on a run (RLIMIT_CPU is per process).
    wall_ms: int = 10000
    #: Memory of the whole run, all processes together (watchdog), and of each process (RLIMIT_DATA).
    memory_mb: int = 256
    #: Processes and threads at once (RLIMIT_NPROC of the slot's own uid).
    processes: int = 64
    #: stdout + stderr together; the run is killed past it and the result marked truncated.
    output_bytes: int = 65536
    #: Largest file a run may write (RLIMIT_FSIZE).
    file_size_bytes: int = 16 * 1024 * 1024
    #: Open file descriptors per process (RLIMIT_NOFILE).
    open_files: int = 256
    #: Size of each private tmpfs of a run: the work dir /box, /tmp and /dev/shm.
    workdir_mb: int = 64
    #: Wall-clock limit of the compile stage (compiled languages only).
    compile_wall_ms: int = 15000
    #: Memory limit of the compile stage (compilers need more than most programs).
    compile_memory_mb: int = 768
    #: Runs at once; each slot has its own uid and network namespace.
    max_concurrency: int = field(default_factory=_cores)
    #: Runs waiting for a slot; past it run() raises ExecutionBusy.
    max_queue: int = field(default_factory=lambda: 4 * _cores())

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"ExecutionLimits.{f.name} must be an int, not {value!r}")
            minimum = 0 if f.name == "max_queue" else 1
            if value < minimum:
                raise ValueError(f"ExecutionLimits.{f.name} must be >= {minimum}, not {value}")

    def clamp_wall_ms(self, requested_ms: int | None) -> int:
        """A client's requested timeout, clamped to the configured maximum (and to >= 1 ms)."""
        if requested_ms is None:
            return self.wall_ms
        return max(1, min(int(requested_ms), self.wall_ms))

    def with_floors(self, floors: Mapping[str, int]) -> ExecutionLimits:
        """These limits raised to a language's floors (a JVM needs more than a script)."""
        changes = {name: max(getattr(self, name), value) for name, value in floors.items() if hasattr(self, name)}
        return dataclasses.replace(self, **changes) if changes else self

    @property
    def compile_stage_memory_mb(self) -> int:
        """Memory of a compiled language's whole sandbox: the compiler's or the program's."""
        return max(self.memory_mb, self.compile_memory_mb)

    @property
    def compile_stage_cpu_ms(self) -> int:
        """CPU of a compiled language's whole sandbox: the compiler may use its wall time."""
        return max(self.cpu_ms, self.compile_wall_ms)

    @property
    def heap_mb(self) -> int:
        """Heap a managed runtime (V8, JVM) gets: room left for its own native memory."""
        return max(16, self.memory_mb * 3 // 4)
