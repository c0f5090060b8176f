"""Settings: declared once as a table of name, default and help.

``Settings.from_env()`` reads ``ALGOROOM_*`` variables (and plain ``HOST``/``PORT``, as
the seed did) and fails fast on a bad value. ``create_app`` never reads the environment:
only ``__main__`` does, so an embedding service passes its own ``Settings``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def default_database_url() -> str:
    """``sqlite:///`` in ``$XDG_DATA_HOME/algoroom`` (``~/.local/share/algoroom``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return "sqlite:///" + os.path.join(data_home, "algoroom", "algoroom.db")


DEFAULT_CORS_ORIGINS = (
    "http://localhost:5173",
    "http://localhost:3000",
    "http://127.0.0.1:5173",
    "http://127.0.0.1:3000",
)


def _setting(default: Any, help: str, env: str | None = None) -> Any:
    metadata = {"help": help, "env": env}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "Interface to listen on (`--host` overrides).", env="HOST")
    port: int = _setting(8000, "TCP port to listen on (`--port` overrides).", env="PORT")
    cors_origins: tuple[str, ...] = _setting(
        DEFAULT_CORS_ORIGINS,
        "Comma-separated browser origins allowed by CORS and on WebSocket upgrades.",
    )
    database_url: str = _setting(
        "sqlite:///$XDG_DATA_HOME/algoroom/algoroom.db",
        "Where sessions are stored: `sqlite:///PATH`, `postgresql://...`, `redis://...` or "
        "`memory://` (lost on exit). The default's `$XDG_DATA_HOME` is `~/.local/share` when unset.",
    )
    redis_url: str = _setting(
        "",
        "Redis for running several processes as one (`redis://host:6379/0`): events and participant "
        "counts are shared through it. Empty: single process.",
    )
    redis_prefix: str = _setting(
        "algoroom", "Prefix of Algoroom's Redis keys and channel (several deployments can share one Redis)."
    )
    cluster_heartbeat_seconds: float = _setting(
        3.0, "How often each process refreshes its liveness in Redis and looks for dead processes."
    )
    cluster_dead_after_seconds: float = _setting(
        10.0, "A process silent this long is considered dead: its participants are removed everywhere."
    )
    session_ttl: int = _setting(
        7 * 24 * 3600,
        "Seconds after which a session with no participants and no change expires (swept in the background).",
    )
    yjs_flush_ms: int = _setting(
        50,
        "Yjs edits are saved, and sent to JSON sockets as one `code_update`, this many ms after a change "
        "(1 s for documents over 256 KiB).",
    )
    yjs_unload_seconds: float = _setting(
        30.0, "A document with no Yjs connection is saved and unloaded from memory after this many idle seconds."
    )
    max_body_bytes: int = _setting(1024 * 1024, "Largest accepted request body, in bytes (413 above).")
    ws_max_message_bytes: int = _setting(
        8 * 1024 * 1024, "Largest accepted WebSocket message, in bytes (the socket is closed with 1009 above)."
    )
    ws_heartbeat_seconds: float = _setting(
        30.0, "Interval of WebSocket pings; a peer that misses a pong is dropped."
    )
    ws_send_queue: int = _setting(
        256, "Messages that may wait for one slow WebSocket reader before it is disconnected (1013)."
    )
    ws_send_timeout_seconds: float = _setting(
        10.0, "Longest a single WebSocket send may stall before the reader is disconnected (1013)."
    )
    exec_enabled: bool = _setting(True, "Run code on POST /sessions/{id}/execute (false: answer 503).")
    exec_allow_unsandboxed: bool = _setting(
        False,
        "DEVELOPMENT ONLY: run code without the bubblewrap sandbox when it is unavailable. "
        "Logs a loud warning and marks every result.",
    )
    exec_cpu_ms: int = _setting(5000, "CPU time limit of each process of a run, in ms.")
    exec_wall_ms: int = _setting(10000, "Wall-clock limit of a run in ms (the maximum a client's `timeoutMs` gets).")
    exec_memory_mb: int = _setting(256, "Memory limit of a whole run (all its processes together), in MiB.")
    exec_processes: int = _setting(64, "Processes and threads a run may have at once.")
    exec_output_bytes: int = _setting(65536, "stdout + stderr cap of a run; the run is killed past it.")
    exec_file_size_bytes: int = _setting(16 * 1024 * 1024, "Largest file a run may write.")
    exec_open_files: int = _setting(256, "Open files per process of a run.")
    exec_workdir_mb: int = _setting(64, "Size of each private tmpfs of a run (work dir, /tmp, /dev/shm), in MiB.")
    exec_compile_wall_ms: int = _setting(15000, "Wall-clock limit of a compile step, in ms.")
    exec_compile_memory_mb: int = _setting(768, "Memory limit of a compile step, in MiB.")
    exec_max_concurrency: int = _setting(0, "Runs at once (0: one per CPU core).")
    exec_max_queue: int = _setting(-1, "Runs waiting for a slot before 429 EXECUTION_BUSY (-1: 4 per core).")
    log_level: str = _setting("INFO", "Logging level of the `algoroom` loggers.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``ALGOROOM_*`` variables, then apply explicit overrides."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            name = env_name(spec)
            if name in environ:
                values[spec.name] = _parse(spec, name, environ[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        for name in ("max_body_bytes", "ws_max_message_bytes", "ws_send_queue", "session_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.database_url.startswith("sqlite:///$XDG_DATA_HOME/"):
            object.__setattr__(self, "database_url", default_database_url())
        if isinstance(self.cors_origins, str):  # tolerate Settings(cors_origins="a,b")
            object.__setattr__(self, "cors_origins", _split(self.cors_origins))


def env_name(spec: dataclasses.Field) -> str:
    return spec.metadata.get("env") or f"ALGOROOM_{spec.name.upper()}"


def documented_settings() -> list[tuple[str, Any, str]]:
    """(environment variable, default, help) for every setting: the README table's source."""
    return [(env_name(s), _default(s), s.metadata["help"]) for s in dataclasses.fields(Settings)]


def markdown_table() -> str:
    """The README's configuration table (``python -m algoroom.settings`` prints it)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, default, help_text in documented_settings():
        if isinstance(default, tuple):
            shown = ",".join(default)
        elif isinstance(default, bool):
            shown = str(default).lower()
        else:
            shown = str(default)
        rows.append(f"| `{name}` | {f'`{shown}`' if shown else '(empty)'} | {help_text} |")
    return "\n".join(rows)


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse(spec: dataclasses.Field, name: str, raw: str) -> Any:
    kind = type(_default(spec))
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        if kind is tuple:
            return _split(raw)
        return kind(raw.strip())
    except ValueError:
        raise ValueError(f"invalid value for {name}: {raw!r} (expected {kind.__name__})") from None


if __name__ == "__main__":
    print(markdown_table())
