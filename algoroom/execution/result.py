"""The result of a run, and the one place that decides its status.

Statuses follow Piston/Judge0 but keep the memory verdict Judge0 lacks (users there
infer it from exit 137): ``ok``, ``runtime_error``, ``compile_error``, ``timeout``,
``memory_limit``, ``output_limit``, ``killed`` (ended by a signal) and
``internal_error``. ``error`` is what a person should read: the program's stderr, then
the reason we stopped it, if we did, on the last line.

A program's own death by signal is seen through bwrap, which exits with 128 + signal
number: a program that calls ``exit(139)`` itself is reported as SIGSEGV too.
"""

from __future__ import annotations

import math
import signal as _signal
from dataclasses import dataclass
from typing import Any

from ..languages import Language
from .limits import ExecutionLimits
from .outcome import Outcome

STATUSES = (
    "ok", "runtime_error", "compile_error", "timeout", "memory_limit", "output_limit", "killed", "internal_error",
)

CPU_SLACK_MS = 250

#: Put in ``warning`` of every result when the executor runs without its sandbox.
UNSANDBOXED_WARNING = (
    "UNSAFE: this server runs code WITHOUT a sandbox (development mode); never expose it to untrusted users"
)


@dataclass(frozen=True)
class RunResult:
    status: str
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    compile_output: str | None = None
    execution_time_ms: int = 0
    cpu_time_ms: int = 0
    memory_kb: int = 0
    truncated: bool = False
    language: str = ""
    version: str | None = None
    warning: str | None = None

    @property
    def success(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The wire's ExecutionResult (camelCase); ``output`` is stdout as the seed frontend expects."""
        return {
            "success": self.success,
            "output": self.stdout,
            "error": self.error,
            "executionTime": self.execution_time_ms,
            "status": self.status,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exitCode": self.exit_code,
            "signal": self.signal,
            "compileOutput": self.compile_output,
            "cpuTimeMs": self.cpu_time_ms,
            "memoryKb": self.memory_kb,
            "truncated": self.truncated,
            "language": self.language,
            "version": self.version,
            "warning": self.warning,
        }


def _text(data: bytes | None) -> str:
    return data.decode("utf-8", "replace") if data else ""


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _with_reason(stderr: str, reason: str) -> str:
    return f"{stderr.rstrip()}\n{reason}" if stderr.strip() else reason


def judge(
    outcome: Outcome,
    *,
    language: Language,
    version: str | None,
    limits: ExecutionLimits,
    wall_ms: int,
    warning: str | None = None,
) -> RunResult:
    """Turn what happened to a run into its RunResult."""
    stdout, stderr = _text(outcome.stdout), _text(outcome.stderr)
    compile_output = None if outcome.compile_output is None else _text(outcome.compile_output)
    common: dict[str, Any] = {
        "stdout": stdout,
        "stderr": stderr,
        "compile_output": compile_output,
        "execution_time_ms": outcome.wall_ms,
        "cpu_time_ms": outcome.cpu_ms,
        "memory_kb": outcome.memory_kb,
        "truncated": outcome.truncated,
        "language": language.id,
        "version": version,
        "warning": warning,
    }
    if outcome.spawn_error is not None:
        return RunResult("internal_error", error=outcome.spawn_error, **common)

    killed = outcome.killed_for
    in_compile = language.compile is not None and outcome.compile_status is None
    if killed == "compile_timeout":
        common["execution_time_ms"] = 0
        return RunResult("timeout", error=f"Compilation timed out after {limits.compile_wall_ms} ms", **common)
    if killed == "memory":
        what = "Compilation" if in_compile else "Execution"
        mb = limits.compile_memory_mb if in_compile else limits.memory_mb
        return RunResult("memory_limit", error=_with_reason(stderr, f"{what} exceeded the memory limit of {mb} MiB"),
                         signal="SIGKILL", **common)
    if outcome.compile_status not in (None, 0):
        return RunResult("compile_error", error=compile_output or "Compilation failed",
                         exit_code=outcome.compile_status, **common)
    if killed == "timeout":
        return RunResult("timeout", error=_with_reason(stderr, f"Execution timed out after {wall_ms} ms"),
                         signal="SIGKILL", **common)
    if killed == "output":
        reason = f"Output limit exceeded ({limits.output_bytes} bytes of stdout and stderr)"
        return RunResult("output_limit", error=_with_reason(stderr, reason), signal="SIGKILL", **common)
    if killed is not None:
        return RunResult("killed", error=_with_reason(stderr, "Execution was cancelled"), signal="SIGKILL", **common)
    if outcome.term_signal is not None:  # the sandbox itself was killed from outside
        name = _signal_name(outcome.term_signal)
        return RunResult("killed", error=_with_reason(stderr, f"Killed by {name}"), signal=name, **common)

    code = outcome.exit_code
    if code == 0:
        return RunResult("ok", error=None, exit_code=0, **common)
    if code == 1 and stderr.startswith("bwrap:"):
        return RunResult("internal_error", error=f"Sandbox setup failed: {stderr.strip()}", exit_code=code, **common)
    if any(marker in stderr for marker in language.memory_error_markers):
        reason = f"Execution exceeded the memory limit of {limits.memory_mb} MiB"
        return RunResult("memory_limit", error=_with_reason(stderr, reason), exit_code=code, **common)
    if code is not None and 128 < code <= 128 + 64:
        number = code - 128
        name = _signal_name(number)
        cpu_limit_ms = 1000 * max(1, math.ceil(limits.cpu_ms / 1000))  # RLIMIT_CPU is whole seconds
        # rusage lags the scheduler clock that RLIMIT_CPU checks by a tick or so.
        if number in (_signal.SIGXCPU, _signal.SIGKILL) and outcome.cpu_ms >= cpu_limit_ms - CPU_SLACK_MS:
            reason = f"Execution timed out after {limits.cpu_ms} ms (CPU time limit)"
            return RunResult("timeout", error=_with_reason(stderr, reason), exit_code=code, signal=name, **common)
        if number == _signal.SIGXFSZ:
            reason = f"File size limit exceeded ({limits.file_size_bytes} bytes)"
            return RunResult("runtime_error", error=_with_reason(stderr, reason), exit_code=code, signal=name,
                             **common)
        return RunResult("killed", error=_with_reason(stderr, f"Killed by {name}"), exit_code=code, signal=name,
                         **common)
    return RunResult("runtime_error", error=stderr.strip() and stderr or f"Process exited with code {code}",
                     exit_code=code, **common)
