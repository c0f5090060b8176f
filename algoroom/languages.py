"""The language registry: every language Algoroom knows, as data.

Session validation, ``GET /languages`` and the executor all read this one table. A
:class:`Language` says how to compile and run a program and how to ask the toolchain
for its version; the executor decides at startup which of them this machine can run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_LANGUAGE = "javascript"


@dataclass(frozen=True, slots=True)
class Language:
    id: str
    name: str
    file_name: str
    run: tuple[str, ...]
    version_command: tuple[str, ...]
    compile: tuple[str, ...] | None = None
    #: Per-language adjustments to the run limits (e.g. a JVM needs more memory).
    limit_overrides: dict[str, int] = field(default_factory=dict)


LANGUAGES: dict[str, Language] = {
    lang.id: lang
    for lang in (
        Language(
            id="javascript",
            name="JavaScript (Node.js)",
            file_name="main.js",
            run=("node", "main.js"),
            version_command=("node", "--version"),
        ),
        Language(
            id="python",
            name="Python 3",
            file_name="main.py",
            run=("python3", "-u", "main.py"),
            version_command=("python3", "--version"),
        ),
    )
}
