"""The command line that puts one run in a bubblewrap sandbox, and the host checks it needs.

A run is launched as a chain of small exec wrappers, not with ``preexec_fn`` (which
forces ``fork()`` of the whole server, ms per spawn at a few hundred MiB of RSS):

    prlimit (rlimits) -> setpriv (the slot's own uid, no caps, no_new_privs) -> bwrap -> program

Each wrapper execs the next, so the pid we spawn is the pid we kill. Why each piece
(measured facts are in shared/notes/sandbox.md):

- the slot's own unprivileged uid: RLIMIT_NPROC is ignored for root, and a per-uid
  budget shared between runs would let one run starve another;
- bwrap with new user, pid, mount, ipc, uts and network namespaces: a fresh
  network namespace per run has no interface but its own loopback, so neither the
  network, the host's loopback services nor its abstract unix sockets are reachable,
  and two concurrent runs cannot talk to each other;
- ``--as-pid-1``: the program is pid 1 of its namespace, so when it exits the kernel
  kills everything it left (setsid/double-forked daemons included) and no bwrap reaper
  is left as a zombie counting against the uid's process budget;
- ``--die-with-parent``: if the server dies, even by SIGKILL, the run dies too;
- a read-only view of /usr and a few files of /etc only (no /home, /root, /work, /run,
  /var, /sys), /usr/local hidden, size-capped private tmpfs for /box (the work dir),
  /tmp and /dev/shm, and the root and /dev remounted read-only so nothing else can be
  filled; the source goes in with ``--file`` from a memfd, so the server never writes
  into (or follows a path inside) a box;
- ``--disable-userns``: no nested user namespace, hence no nested pid namespace either,
  so the run cannot hide processes from its uid or its pid 1.

A compiled language runs ``bash -c`` as pid 1: the compiler first, its output on a
separate pipe followed by a status trailer, then the program ``exec``'d in its place
with the run stage's tighter limits. A pre-started sandbox (prestart.py) is the same
sandbox with bash as pid 1 waiting for ``launcher_script``, which writes the source with
a builtin, lowers the rlimits to the run's and ``exec``s the same stage script.
"""

from __future__ import annotations

import glob
import math
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass

from ..languages import Language
from .limits import ExecutionLimits

BOX = "/box"
SANDBOX_UID = 1000
SANDBOX_PATH = "/usr/bin:/bin"
HOSTNAME = "algoroom"

#: Host paths under /etc a toolchain needs, bound read-only if present. Everything else of
#: the sandbox's /etc is our own (passwd, group, hosts), one bind for the lot: each mount
#: costs bwrap a syscall or three and a read of the mount table, on every run.
_ETC_PATHS = (
    "/etc/alternatives",  # /usr/bin/java, cc, ... are symlinks through it
    "/etc/ld.so.cache",  # the multiarch library dirs are only known through it
)
_ETC_GLOBS = ("/etc/java-*",)  # the JVM reads its security and logging config from there

#: A minimal /dev, cheaper than bwrap's --dev (no devpts, tty or full: no run has a terminal).
_DEV = (
    "--tmpfs", "/dev",
    *(arg for node in ("null", "zero", "random", "urandom") for arg in ("--dev-bind", f"/dev/{node}", f"/dev/{node}")),
    "--symlink", "/proc/self/fd", "/dev/fd",
    "--symlink", "/proc/self/fd/0", "/dev/stdin",
    "--symlink", "/proc/self/fd/1", "/dev/stdout",
    "--symlink", "/proc/self/fd/2", "/dev/stderr",
)

_PASSWD = f"box:x:{SANDBOX_UID}:{SANDBOX_UID}:box:{BOX}:/bin/sh\n"
_GROUP = f"box:x:{SANDBOX_UID}:\n"
_HOSTS = f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost\n"


class SandboxUnavailable(Exception):
    """The sandbox cannot work on this host; the message says how to fix it (one line)."""


@dataclass(frozen=True)
class SandboxTools:
    bwrap: str
    prlimit: str
    setpriv: str
    bash: str

    @classmethod
    def find(cls) -> SandboxTools:
        found = {}
        hints = {
            "bwrap": "apt-get install bubblewrap",
            "prlimit": "apt-get install util-linux",
            "setpriv": "apt-get install util-linux",
            "bash": "apt-get install bash",
        }
        missing = []
        for name in hints:
            path = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
            if path is None:
                missing.append(name)
            found[name] = path
        if missing:
            fixes = sorted({hints[name] for name in missing})
            raise SandboxUnavailable(
                f"code execution is disabled: {', '.join(missing)} not found; install with: {'; '.join(fixes)}"
            )
        return cls(**found)


def check_host() -> None:
    """Raise SandboxUnavailable if this host cannot give each run its own uid and namespaces."""
    if os.geteuid() != 0:
        raise SandboxUnavailable(
            "code execution is disabled: the server must run as root to give each execution slot its own "
            "unprivileged uid (RLIMIT_NPROC only holds per uid); run it as root, or set "
            "ALGOROOM_EXEC_ALLOW_UNSANDBOXED=1 for local development only"
        )
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read()) == 0:
                raise SandboxUnavailable(
                    "code execution is disabled: user namespaces are off; enable them with "
                    "'sysctl -w user.max_user_namespaces=15000'"
                )
    except FileNotFoundError:
        raise SandboxUnavailable("code execution is disabled: this kernel has no user namespaces") from None
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                raise SandboxUnavailable(
                    "code execution is disabled: unprivileged user namespaces are off; enable them with "
                    "'sysctl -w kernel.unprivileged_userns_clone=1'"
                )
    except FileNotFoundError:
        pass


def host_etc_paths() -> list[str]:
    paths = [p for p in _ETC_PATHS if os.path.exists(p)]
    for pattern in _ETC_GLOBS:
        paths += sorted(glob.glob(pattern))
    return paths


def make_etc_dir() -> str:
    """The sandbox's /etc: a root-owned dir, read-only to others, made once per executor.

    It holds our own passwd, group and hosts, and empty mount points for the host paths
    of ``host_etc_paths()``, which are bound over them read-only.
    """
    base = "/run" if os.access("/run", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="algoroom-exec-etc-", dir=base)
    os.chmod(path, 0o755)
    for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hosts", _HOSTS)):
        file_path = os.path.join(path, name)
        with open(file_path, "w") as f:
            f.write(text)
        os.chmod(file_path, 0o644)
    for host in host_etc_paths():
        mount_point = os.path.join(path, os.path.basename(host))
        if os.path.isdir(host):
            os.mkdir(mount_point, 0o755)
        else:
            open(mount_point, "w").close()
            os.chmod(mount_point, 0o644)
    return path


def _system_mounts(etc_dir: str) -> list[str]:
    """bwrap arguments for the read-only system view, computed once per executor."""
    args = ["--ro-bind", "/usr", "/usr"]
    if os.path.isdir("/usr/local"):  # not the system's: whatever was installed by hand stays out
        args += ["--tmpfs", "/usr/local", "--remount-ro", "/usr/local"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    args += ["--ro-bind", etc_dir, "/etc"]
    for host in host_etc_paths():
        if os.path.exists(os.path.join(etc_dir, os.path.basename(host))):
            args += ["--ro-bind", host, host]
    return args


def rlimit_args(limits: ExecutionLimits, *, memory_mb: int, cpu_ms: int) -> list[str]:
    """prlimit options.

    CPU: soft = hard, so the kernel sends SIGKILL at the limit: the program is pid 1 of
    its namespace, and pid 1 never receives a signal it has no handler for (SIGXCPU).
    """
    cpu_s = max(1, math.ceil(cpu_ms / 1000))
    return [
        # +1: the outer bwrap process runs as the slot uid too.
        f"--nproc={limits.processes + 1}",
        f"--nofile={limits.open_files}",
        f"--fsize={limits.file_size_bytes}",
        f"--cpu={cpu_s}:{cpu_s}",
        f"--data={memory_mb * 1024 * 1024}",
        "--core=0",
        "--memlock=0",
        "--msgqueue=0",
    ]


def substitute(argv: tuple[str, ...], limits: ExecutionLimits) -> list[str]:
    return [part.replace("{heap_mb}", str(limits.heap_mb)) for part in argv]


def stage_script(language: Language, limits: ExecutionLimits, compile_fd: int, *, ceilings: bool) -> str:
    """bash: compile (if the language does) with output to ``compile_fd``, then exec the program.

    The trailer after the compiler's output is ``\\n``, bash's ``times`` (the second
    line is the compiler's CPU time) and the exit status, each on its own line. With
    ``ceilings`` the sandbox was started with limits high enough for any language
    (pre-started), and each stage first lowers them to its own.
    """
    cpu_s = max(1, math.ceil(limits.cpu_ms / 1000))
    # -u: counted in the run's own user namespace, so without the outer bwrap (prlimit's +1).
    run_limits = f"-d {limits.memory_mb * 1024} -t {cpu_s}" + (f" -u {limits.processes}" if ceilings else "")
    run_cmd = shlex.join(substitute(language.run, limits))
    fd = compile_fd
    if language.compile is None:
        return f"exec {fd}>&-\nulimit {run_limits} || exit 125\nexec {run_cmd} \"$@\"\n"
    compile_cmd = shlex.join(substitute(language.compile, limits))
    compile_limits = ""
    if ceilings:
        compile_cpu_s = max(1, math.ceil(limits.compile_stage_cpu_ms / 1000))
        compile_mb = limits.compile_stage_memory_mb
        compile_limits = f"ulimit -d {compile_mb * 1024} -t {compile_cpu_s} -u {limits.processes} || exit 125\n"
    return (
        compile_limits
        + f"{compile_cmd} >&{fd} 2>&1 </dev/null\n"
        "s=$?\n"
        f"{{ printf '\\n'; times; printf '%s\\n' \"$s\"; }} >&{fd}\n"
        f"exec {fd}>&-\n"
        '[ "$s" = 0 ] || exit 0\n'
        f"ulimit {run_limits} || exit 125\n"
        f'exec {run_cmd} "$@"\n'
    )


def compile_script(language: Language, limits: ExecutionLimits, compile_fd: int) -> str:
    return stage_script(language, limits, compile_fd, ceilings=False)


_BASH_ESCAPES = {i: f"\\x{i:02x}" for i in range(256) if not 0x20 <= i < 0x7F}
_BASH_ESCAPES.update({ord("'"): "\\'", ord("\\"): "\\\\"})


def bash_quote(text: str) -> str:
    """``$'...'`` of any text without NUL, byte for byte (bash strings cannot hold NUL)."""
    if "\0" in text:
        raise ValueError("NUL in text")
    return "$'" + text.encode("utf-8", "surrogateescape").decode("latin-1").translate(_BASH_ESCAPES) + "'"


def launcher_script(
    language: Language,
    limits: ExecutionLimits,
    *,
    code: str,
    args: tuple[str, ...],
    compile_fd: int,
    script_fd: int,
) -> bytes:
    """What a pre-started sandbox's bash reads (whole, then runs): write the source, exec the run.

    The source goes in through a bash builtin (no exec), quoted byte for byte: the server
    still never writes into a box itself.
    """
    lines = [f"exec {script_fd}<&-"]
    lines += [f"export {key}={bash_quote(value)}" for key, value in language.env.items()]
    lines.append(f"printf '%s' {bash_quote(code)} > {shlex.quote(language.file_name)} || exit 125")
    lines.append("set -- " + " ".join(bash_quote(arg) for arg in args))
    return ("\n".join(lines) + "\n" + stage_script(language, limits, compile_fd, ceilings=True)).encode("ascii")


class Sandbox:
    """Builds the argv of sandboxed runs on this host."""

    def __init__(self, tools: SandboxTools, etc_dir: str) -> None:
        self.tools = tools
        self.etc_dir = etc_dir
        self._system = _system_mounts(etc_dir)

    def _prefix(
        self, *, uid: int, limits: ExecutionLimits, memory_mb: int, cpu_ms: int, info_fd: int, files: list[str],
        env: dict[str, str],
    ) -> list[str]:
        tmpfs_bytes = str(limits.workdir_mb * 1024 * 1024)
        argv = [self.tools.prlimit, *rlimit_args(limits, memory_mb=memory_mb, cpu_ms=cpu_ms), "--"]
        argv += [
            self.tools.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]
        argv += [
            self.tools.bwrap,
            "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--disable-userns",
            "--die-with-parent", "--new-session", "--as-pid-1", "--info-fd", str(info_fd),
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", HOSTNAME,
            *self._system,
            "--proc", "/proc",
            *_DEV,
            "--size", tmpfs_bytes, "--tmpfs", "/dev/shm",
            "--size", tmpfs_bytes, "--tmpfs", "/tmp",
            "--size", tmpfs_bytes, "--perms", "0755", "--tmpfs", BOX,
            *files,
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--chdir", BOX,
            "--clearenv",
        ]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        return argv

    def command(
        self,
        *,
        uid: int,
        language: Language,
        limits: ExecutionLimits,
        source_fd: int,
        compile_fd: int | None,
        info_fd: int,
        args: tuple[str, ...] = (),
    ) -> list[str]:
        """A run started on demand: the source comes in with ``--file``, the limits are its own."""
        compiled = language.compile is not None
        argv = self._prefix(
            uid=uid, limits=limits, info_fd=info_fd, env=sandbox_env(language),
            memory_mb=limits.compile_stage_memory_mb if compiled else limits.memory_mb,
            cpu_ms=limits.compile_stage_cpu_ms if compiled else limits.cpu_ms,
            files=["--perms", "0644", "--file", str(source_fd), f"{BOX}/{language.file_name}"],
        )
        if compiled:
            assert compile_fd is not None
            return argv + [self.tools.bash, "-c", compile_script(language, limits, compile_fd), "main", *args]
        return argv + [*substitute(language.run, limits), *args]

    def prestart_command(self, *, uid: int, ceilings: ExecutionLimits, info_fd: int, script_fd: int) -> list[str]:
        """A sandbox started ahead of its run, every namespace and mount in place, its bash
        blocked reading ``script_fd`` (``launcher_script``). Its rlimits are ``ceilings``,
        the highest any language may get; the script lowers them to the run's own."""
        argv = self._prefix(
            uid=uid, limits=ceilings, info_fd=info_fd, env=sandbox_env(None), files=[],
            memory_mb=ceilings.compile_stage_memory_mb,
            cpu_ms=ceilings.compile_stage_cpu_ms,
        )
        return argv + [self.tools.bash, "-c", f". /dev/fd/{script_fd}", "main"]


def sandbox_env(language: Language | None) -> dict[str, str]:
    env = {"PATH": SANDBOX_PATH, "HOME": BOX, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "USER": "box"}
    if language is not None:
        env.update(language.env)
    return env
