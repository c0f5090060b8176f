"""What happened to one run, as the process layer saw it, before it is judged.

process.py fills it in; result.py turns it into the RunResult a client sees. Kept apart
so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    """What happened to one spawned run, before it is judged (see result.py)."""

    exit_code: int | None = None
    #: A signal that ended the spawned process itself (we only do that when killing).
    term_signal: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    compile_output: bytes | None = None
    compile_status: int | None = None
    truncated: bool = False
    #: Why we killed it: timeout, compile_timeout, memory, output, cancelled.
    killed_for: str | None = None
    wall_ms: int = 0
    compile_ms: int | None = None
    cpu_ms: int = 0
    memory_kb: int = 0
    spawn_error: str | None = None
