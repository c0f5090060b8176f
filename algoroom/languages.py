"""The language registry: every language Algoroom knows, as data.

Session validation, ``GET /languages`` and the executor all read this one table. A
:class:`Language` says how to compile and run a program and how to ask the toolchain
for its version; the executor decides at startup (by running ``version_command``
inside the sandbox) which of them this machine can run, so a toolchain that is
installed but invisible to the sandbox (e.g. under ``/root``) is reported missing.

Commands are argv tuples run with ``/box`` (the run's private work dir) as the current
directory and ``PATH=/usr/bin:/bin``. ``{heap_mb}`` in a command is replaced by the
heap a managed runtime may use under the run's memory limit, so the runtime fails with
its own clean out-of-memory error instead of being killed by the kernel limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping

DEFAULT_LANGUAGE = "javascript"


@dataclass(frozen=True, slots=True)
class Language:
    id: str
    name: str
    file_name: str
    run: tuple[str, ...]
    version_command: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    #: Per-language floors on the run limits, keyed by ``ExecutionLimits`` field name:
    #: a JVM needs more memory and threads than the defaults, whatever the operator set.
    limit_overrides: Mapping[str, int] = field(default_factory=dict)
    #: Other names clients may use for this language (``py``, ``js``...).
    aliases: tuple[str, ...] = ()
    #: Extra environment inside the sandbox (the rest of the environment is scrubbed).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Text the runtime prints when an allocation fails: such a run is ``memory_limit``.
    memory_error_markers: tuple[str, ...] = ()


_NODE_OOM = (
    "JavaScript heap out of memory",
    "Array buffer allocation failed",
    "Fatal process out of memory",
    "Allocation failed",
    "std::bad_alloc",
)

LANGUAGES: dict[str, Language] = {
    lang.id: lang
    for lang in (
        Language(
            id="javascript",
            name="JavaScript (Node.js)",
            file_name="main.js",
            run=("node", "--max-old-space-size={heap_mb}", "main.js"),
            version_command=("node", "--version"),
            aliases=("js", "node", "nodejs"),
            memory_error_markers=_NODE_OOM,
        ),
        Language(
            id="python",
            name="Python 3",
            file_name="main.py",
            # -u: output written before a kill (timeout, limit) is not lost in a buffer.
            run=("python3", "-u", "main.py"),
            version_command=("python3", "--version"),
            aliases=("py", "python3"),
            env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"},
            memory_error_markers=("MemoryError",),
        ),
        Language(
            id="typescript",
            name="TypeScript (esbuild + Node.js)",
            file_name="main.ts",
            # esbuild strips types in ~30 ms (tsc takes seconds); it reports syntax errors,
            # not type errors.
            compile=(
                "esbuild", "main.ts", "--outfile=main.js", "--format=cjs", "--platform=node",
                "--log-level=warning", "--color=false",
            ),
            run=("node", "--max-old-space-size={heap_mb}", "main.js"),
            version_command=("esbuild", "--version"),
            aliases=("ts",),
            memory_error_markers=_NODE_OOM,
        ),
        Language(
            id="c",
            name="C (GCC)",
            file_name="main.c",
            compile=("gcc", "-O2", "-std=gnu17", "-pipe", "-o", "main", "main.c", "-lm"),
            run=("./main",),
            version_command=("gcc", "-dumpfullversion"),
        ),
        Language(
            id="cpp",
            name="C++ (G++)",
            file_name="main.cpp",
            compile=("g++", "-O2", "-std=gnu++20", "-pipe", "-o", "main", "main.cpp"),
            run=("./main",),
            version_command=("g++", "-dumpfullversion"),
            aliases=("c++",),
            memory_error_markers=("std::bad_alloc",),
        ),
        Language(
            id="java",
            name="Java (OpenJDK)",
            file_name="Main.java",
            compile=(
                "javac", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", "-J-XX:-UsePerfData",
                "-J-Xshare:auto", "-encoding", "UTF-8", "Main.java",
            ),
            run=(
                "java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
                "-Xshare:auto", "-Xmx{heap_mb}m", "-Xss8m", "Main",
            ),
            version_command=("javac", "-version"),
            limit_overrides={"memory_mb": 512, "processes": 128},
            memory_error_markers=("java.lang.OutOfMemoryError", "Native memory allocation"),
        ),
        Language(
            id="bash",
            name="Bash",
            file_name="main.sh",
            run=("bash", "main.sh"),
            version_command=("bash", "--version"),
            aliases=("sh", "shell"),
        ),
        Language(
            id="ruby",
            name="Ruby",
            file_name="main.rb",
            run=("ruby", "main.rb"),
            version_command=("ruby", "--version"),
            aliases=("rb",),
            memory_error_markers=("NoMemoryError", "failed to allocate memory"),
        ),
        Language(
            id="go",
            name="Go",
            file_name="main.go",
            compile=("go", "build", "-o", "main", "main.go"),
            run=("./main",),
            version_command=("go", "version"),
            aliases=("golang",),
            limit_overrides={"processes": 128},
            # A fresh build cache per run under the size-capped /tmp; no module lookups.
            env={"GOCACHE": "/tmp/go-cache", "GOPATH": "/tmp/go", "GO111MODULE": "off", "GOTOOLCHAIN": "local"},
            memory_error_markers=("runtime: out of memory", "fatal error: out of memory"),
        ),
        Language(
            id="rust",
            name="Rust",
            file_name="main.rs",
            # Stripped: an unstripped hello world is 11 MiB (the work dir and file size are capped).
            compile=("rustc", "-O", "-C", "strip=symbols", "-o", "main", "main.rs"),
            run=("./main",),
            version_command=("rustc", "--version"),
            aliases=("rs",),
            memory_error_markers=("memory allocation of",),
        ),
    )
}


def resolve_language(language_id: str) -> Language | None:
    """The language for an id or one of its aliases (case-insensitive), or None."""
    key = language_id.strip().lower()
    if key in LANGUAGES:
        return LANGUAGES[key]
    for lang in LANGUAGES.values():
        if key in lang.aliases:
            return lang
    return None
