"""Running code WITHOUT a sandbox: the development-only opt-in (``allow_unsandboxed``).

Only used when the sandbox cannot work on this host and the operator asked for it
anyway: rlimits (prlimit) and a private temp dir, the process group killed at the end;
no namespaces, no separate uid, no memory watchdog. Every result carries
``UNSANDBOXED_WARNING``. Unlike the sandboxed path, the server writes the source into
the work dir and removes the dir afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from ..languages import Language
from .limits import ExecutionLimits
from .process import ProcessRun
from .sandbox import SandboxTools, compile_script, rlimit_args, sandbox_env, substitute


def unsandboxed_run(
    tools: SandboxTools | None,
    lang: Language,
    code: str,
    args: tuple[str, ...],
    limits: ExecutionLimits,
    compile_pipe: tuple[int, int] | None,
    common: dict[str, Any],
) -> tuple[ProcessRun, str]:
    """The ProcessRun and its work dir (the caller removes it after the run)."""
    prlimit = tools.prlimit if tools else shutil.which("prlimit") or "prlimit"
    bash = tools.bash if tools else shutil.which("bash") or "bash"
    workdir = tempfile.mkdtemp(prefix="algoroom-unsafe-")
    with open(os.path.join(workdir, lang.file_name), "w", encoding="utf-8") as f:
        f.write(code)
    compiled = lang.compile is not None
    memory_mb = limits.compile_stage_memory_mb if compiled else limits.memory_mb
    cpu_ms = limits.compile_stage_cpu_ms if compiled else limits.cpu_ms
    argv = [prlimit, *rlimit_args(limits, memory_mb=memory_mb, cpu_ms=cpu_ms), "--"]
    if compile_pipe is not None:
        argv += [bash, "-c", compile_script(lang, limits, compile_pipe[1]), "main", *args]
    else:
        argv += [*substitute(lang.run, limits), *args]
    env = sandbox_env(lang)
    env.update(HOME=workdir, TMPDIR=workdir)
    run = ProcessRun(
        argv, env=env, cwd=workdir, pass_fds=(compile_pipe[1],) if compile_pipe else (),
        own_process_group=True, **common,
    )
    return run, workdir
