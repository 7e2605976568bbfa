"""Long-lived commands with stdio pipes inside the bwrap sandbox (e.g. MCP servers).

``wrap_command(argv, ...)`` is a context manager that yields a plain argv: whoever spawns
it (``subprocess``, anyio, the MCP SDK's stdio client) gets a process whose stdin/stdout
are the sandboxed command's, with the isolation of a bwrap run: user/pid/net/ipc/uts/mount
namespaces, the seccomp deny list, a cgroup (memory, pids) plus rlimits, a fresh
unprivileged host uid (when root) that is uid 65534 inside with no capabilities, the
environment cleared to what is granted, the read-only system and generated ``/etc``,
private ``/tmp`` and ``/dev/shm`` tmpfs, a work directory at ``/workspace`` (its cwd), and
no network but loopback unless ``network="proxy"`` bridges the egress proxy's Unix socket
in. Leaving the context kills every process of the command (the cgroup) and removes the
work directory and the cgroup.

What differs from a one-shot run: no parent-side wall clock and no output caps (the
pipes belong to the spawner, and the command lives as long as it is needed); the CPU
limit (``RLIMIT_CPU``) is per process and defaults high (:data:`STDIO_LIMITS`).

The command's own files: ``ro_paths`` are bound read-only at the same paths. With
``auto_paths`` (the default) the program is found too: ``argv[0]``'s directory, and for a
Python virtual environment its prefix and the base interpreter it points to, plus the
directory of the script argument. Paths under a directory the sandbox's uid cannot
traverse (e.g. a pyenv interpreter under ``/root``, mode 0700) are made reachable without
opening that directory: the spawned helper, still root, enters a private mount namespace
where only those paths are mounted on a fresh tmpfs over the closed directory, then drops
to the sandbox's uid and executes bwrap. The host's mount table is not touched.

The argv is one-shot: the helper removes its launch files as it starts, so each spawn
needs its own ``wrap_command`` (a restarted server gets a fresh sandbox).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import seccomp
from .bwrap import SANDBOX_GID, BwrapBackend, host_ids
from .cgroup import RunCgroup
from .runner import rlimits_for
from .types import Limits, NetworkMode, RunSpec, SandboxError
from .workspace import WorkDir

MiB = 1 << 20
STDIO_LIMITS = Limits(wall_s=float("inf"), cpu_s=3600.0, memory_bytes=512 * MiB, pids=128,
                      disk_bytes=64 * MiB, tmp_bytes=32 * MiB, file_bytes=64 * MiB,
                      open_files=1024)

# Runs as root until its exec; stdlib only, no site. argv[1]: the launch file.
_HELPER_SRC = r"""
import ctypes, json, os, resource, sys
try:
    path = sys.argv[1]
    with open(path) as f:
        req = json.load(f)
    sfd = os.open(req["seccomp"], os.O_RDONLY)
    afd = os.open(req["args"], os.O_RDONLY)
    for p in (path, req["seccomp"], req["args"]):
        os.unlink(p)
    os.rmdir(os.path.dirname(path))
    for p in req["cgroup_procs"]:
        fd = os.open(p, os.O_WRONLY)
        os.write(fd, b"0")
        os.close(fd)
    if req["reach"]:
        libc = ctypes.CDLL(None, use_errno=True)
        def chk(rc, what):
            if rc != 0:
                raise OSError(ctypes.get_errno(), what)
        chk(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
        chk(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "make / private")
        # opened in the new namespace (a bind's source must be one of its mounts)
        held = [(p, os.open(p, os.O_PATH)) for p in req["reach"]]
        for d in req["hide"]:
            chk(libc.mount(b"tmpfs", d.encode(), b"tmpfs", 2 | 4 | 8,
                           b"mode=0755,size=65536"), "tmpfs over " + d)
        os.umask(0o022)
        for p, fd in held:
            if os.path.isdir("/proc/self/fd/%d" % fd):
                os.makedirs(p, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                open(p, "a").close()
            chk(libc.mount(("/proc/self/fd/%d" % fd).encode(), p.encode(), None,
                           0x1000 | 0x4000, None), "bind " + p)
            os.close(fd)
    for res, soft, hard in req["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    os.chdir("/")
    if req["gid"] is not None:
        os.setgroups([])
        os.setresgid(req["gid"], req["gid"], req["gid"])
    if req["uid"] is not None:
        os.setresuid(req["uid"], req["uid"], req["uid"])
    os.set_inheritable(sfd, True)
    os.set_inheritable(afd, True)
    argv = [req["bwrap"], "--seccomp", str(sfd), "--args", str(afd), "--", *req["argv"]]
    os.execve(argv[0], argv, {"PATH": "/usr/bin:/bin"})
except BaseException as e:
    os.write(2, ("shieldwall sandbox: %s: %s\n" % (type(e).__name__, e)).encode())
    os._exit(127)
"""

_SYSTEM = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")
_backend: BwrapBackend | None = None


def _bwrap(cgroup_root: str | None) -> BwrapBackend:
    global _backend
    if cgroup_root is not None:
        return BwrapBackend(cgroup_root)
    if _backend is None:
        _backend = BwrapBackend()
    return _backend


def _venv_paths(exe: str) -> list[str]:
    """A Python's own files: its virtual environment and the base interpreter's prefix."""
    out: list[str] = []
    p = Path(exe)
    cfg = p.parent.parent / "pyvenv.cfg"
    if cfg.is_file():
        out.append(str(p.parent.parent.resolve()))
        for line in cfg.read_text(errors="replace").splitlines():
            k, _, v = line.partition("=")
            if k.strip() == "home" and v.strip():
                out.append(str(Path(v.strip()).resolve().parent))
    real = p.resolve()
    if real.parent.name == "bin":
        out.append(str(real.parent.parent))
    else:
        out.append(str(real.parent))
    return out


def command_paths(argv: Sequence[str], cwd: str | None = None) -> list[str]:
    """What ``auto_paths`` binds read-only for ``argv``: the program and its script."""
    out: list[str] = []
    exe = shutil.which(argv[0]) or argv[0]
    if not exe.startswith(_SYSTEM) or os.path.realpath(exe) == os.path.realpath(sys.executable):
        if os.path.basename(exe).startswith("python"):
            out += _venv_paths(exe)
        else:
            out.append(str(Path(exe).resolve().parent))
    for a in argv[1:]:
        if _is_file(a, cwd):
            out.append(str(Path(cwd or ".", a).resolve().parent))
            break
    return [p for p in dict.fromkeys(out) if not p.startswith(_SYSTEM) and p != "/"]


def _is_file(a: str, cwd: str | None) -> bool:
    if a.startswith("-") or "\n" in a or "\0" in a or len(a) > 4096:
        return False
    try:
        return Path(cwd or ".", a).is_file()
    except OSError:
        return False


def _as_field(name: str, value: Any) -> Any:
    """A limit from YAML as its field's type (an int field must not get 5.0e8)."""
    return int(value) if isinstance(getattr(STDIO_LIMITS, name, 0.0), int) else float(value)


def _closed_ancestor(path: str) -> str | None:
    """The outermost directory above ``path`` that others may not traverse."""
    cur = "/"
    for part in Path(path).parts[1:-1]:
        cur = os.path.join(cur, part)
        try:
            mode = os.stat(cur).st_mode
        except OSError:
            return None
        if not mode & stat.S_IXOTH:
            return cur
    return None


@contextlib.contextmanager
def wrap_command(
    argv: Sequence[str],
    *,
    limits: Limits | Mapping[str, Any] | None = None,
    ro_paths: Sequence[str] = (),
    rw_paths: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    network: NetworkMode = "none",
    proxy_socket: str | None = None,
    cwd: str | None = None,
    auto_paths: bool = True,
    cgroup_root: str | None = None,
) -> Iterator[list[str]]:
    """Yield an argv that runs ``argv`` inside a bwrap sandbox with stdio pipes; see the
    module docstring. Raises :class:`SandboxError` when bwrap is unavailable."""
    if not argv:
        raise SandboxError("empty argv")
    be = _bwrap(cgroup_root)
    ok, why = be.available()
    if not ok:
        raise SandboxError(f"bwrap sandbox unavailable: {why}")
    if isinstance(limits, Limits):
        lim = limits
    else:  # numbers from YAML: each as the field's own type
        try:
            lim = STDIO_LIMITS.merged({k: _as_field(k, v) for k, v in (limits or {}).items()})
        except ValueError as e:
            raise SandboxError(str(e)) from e
    if network == "proxy" and not proxy_socket:
        raise SandboxError("network='proxy' needs the egress proxy's Unix socket path")
    argv = list(argv)
    for i, a in enumerate(argv[1:], 1):  # relative script paths: absolute, as the host sees
        if not os.path.isabs(a) and _is_file(a, cwd):
            argv[i] = str(Path(cwd or ".", a).resolve())
    ro = [str(Path(p)) for p in ro_paths]
    if auto_paths:
        ro += command_paths(argv, cwd)
    ro = list(dict.fromkeys(ro))
    for p in (*ro, *rw_paths):
        if not os.path.isabs(p):
            raise SandboxError(f"extra sandbox paths must be absolute: {p!r}")
        if not os.path.exists(p):
            raise SandboxError(f"sandbox path does not exist: {p!r}")
    root = os.geteuid() == 0
    uid = host_ids() if root else None
    reach: list[str] = []
    hide: set[str] = set()
    if root:
        for p in ro:
            closed = _closed_ancestor(p)
            if closed:
                reach.append(p)
                hide.add(closed)
    hide_list = sorted(hide, key=len)
    hide_list = [h for h in hide_list if not any(h.startswith(o + "/") for o in hide_list)]

    wd = WorkDir(lim.disk_bytes, uid, SANDBOX_GID if uid is not None else None)
    cg: RunCgroup | None = None
    private = tempfile.mkdtemp(prefix="shieldwall-stdio-")
    try:
        if not wd.mounted:
            be.prepare_workdir(wd.path, uid)
        spec = RunSpec(argv=argv, workdir=wd.path, limits=lim, env=dict(env or {}),
                       ro_paths=tuple(ro), rw_paths=tuple(rw_paths), network=network,
                       proxy_socket=proxy_socket, secrets=dict(secrets or {}), host_uid=uid)
        layout = be.cgroup_layout
        if layout is not None:
            cg = RunCgroup.create(layout, lim.memory_bytes, lim.pids)
        opts = be._options(spec)
        inner = list(argv)
        if network == "proxy":
            inner = be.proxy_argv(inner)
        files = {"seccomp": os.path.join(private, "seccomp.bpf"),
                 "args": os.path.join(private, "args")}
        Path(files["seccomp"]).write_bytes(seccomp.program())
        Path(files["args"]).write_bytes(b"".join(o.encode() + b"\0" for o in opts))
        rl = [(r, v, v + 1 if r == resource.RLIMIT_CPU else v) for r, v in rlimits_for(
            lim, address_space=cg is None, nproc=cg is None and root)]
        req = {**files, "bwrap": shutil.which("bwrap"), "argv": inner,
               "rlimits": rl, "uid": uid, "gid": SANDBOX_GID if root else None,
               "cgroup_procs": [str(d / "cgroup.procs") for d in (cg.dirs if cg else [])],
               "reach": reach, "hide": hide_list}
        launch = os.path.join(private, "launch.json")
        Path(launch).write_text(json.dumps(req))
        yield ["/usr/bin/python3", "-I", "-S", "-c", _HELPER_SRC, launch]
    finally:
        if cg is not None:
            cg.destroy()  # kills every process of the command first
        shutil.rmtree(private, ignore_errors=True)
        wd.close(save=False)
