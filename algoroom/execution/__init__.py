"""Sandboxed code execution, independent of the web framework.

``Executor`` runs a program in a language of the registry inside a per-run bubblewrap
sandbox and returns a ``RunResult``; ``ExecutionLimits`` configures it. The HTTP core
only translates between these and the wire.
"""

from .executor import Executor
from .limits import ExecutionLimits
from .result import STATUSES, UNSANDBOXED_WARNING, RunResult

__all__ = ["STATUSES", "UNSANDBOXED_WARNING", "ExecutionLimits", "Executor", "RunResult"]
