"""The default backend: bubblewrap namespaces + a seccomp filter + a cgroup per run.

What a run sees: the host's ``/usr`` (and the ``/bin``, ``/lib`` links) read-only; a
generated ``/etc`` with only the loader cache, time zone, certificates and a two-line
``passwd``; its own ``/proc`` (new pid namespace: no host process is visible); a
minimal ``/dev``; ``/tmp`` and ``/dev/shm`` as small tmpfs; the work directory at
``/workspace``; no network interface but loopback; uid 65534 with no capabilities. The
root is remounted read-only. When the parent is root, bwrap itself is started as a fresh,
random, unprivileged host uid per sandbox, group 65534 (root's bwrap would map the
sandbox to host uid 0, which owns ``/etc/shadow`` and ``/root``), so even a kernel bug in
the user namespace meets an unprivileged uid that no other process shares. Extra paths
must be readable (ro) or group-writable (rw, ``chgrp 65534``) for that uid; so must the
egress proxy's Unix socket in ``network="proxy"`` mode.

Start-up cost: a one-shot run's program is pid 1 of its pid namespace (``--as-pid-1``:
no reaper in between, as in a container without an init; default signal actions do not
apply to pid 1 from inside, and when it exits the kernel kills the rest of the
namespace). As root, the parked launcher (see :mod:`.launcher`) has already entered fresh
network (loopback only, up), IPC and UTS (hostname ``sandbox``) namespaces before the run
is dispatched, so bwrap makes only the user, pid, mount and cgroup namespaces on the
run's clock; the sandbox's user namespace is a child of the host's, so it holds no
capability over those namespaces, as before. Long-lived stdio commands
(:mod:`.stdio`) get bwrap's own namespaces and its reaper. The launcher leads a fresh
session without a controlling terminal, so one-shot runs skip bwrap's ``--new-session``
(the seccomp filter refuses ``TIOCSTI`` as well).

A :class:`~shieldwall.sandbox.Sandbox` that runs again gets the next run's sandbox set up
in the background (:mod:`.premade`): the same bwrap, options and isolation, started ahead
around a waiter that ``execve``s the program at dispatch, one sandbox per run. A new
ephemeral Sandbox may adopt a spare work directory prepared the same way after the last
new Sandbox's run (:meth:`BwrapBackend.adopt_workdir`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
import secrets
import select
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import seccomp
from .cgroup import CgroupLayout, detect
from .launcher import LauncherPool
from .premade import WAITER_SRC, Premade, PremadeCache
from .runner import Launch, Started, finish, rlimits_for, start
from .types import ErrorKind, RunResult, RunSpec
from .workspace import WorkDir, default_root

SANDBOX_UID = 65534  # the uid *inside* the sandbox (and gVisor's guest uid)
SANDBOX_GID = 65534
HOST_UID_MIN = 1 << 20  # host uids for sandboxes: random, unused by any account


def host_ids() -> int:
    """A fresh host uid for one sandbox when we are root: not ``nobody``, which system
    services share, and not another sandbox's, so sandboxes cannot signal, trace or read
    each other's files even outside their namespaces. The group is always 65534, so that
    an operator can grant extra read-write paths with ``chgrp 65534; chmod g+rwX``."""
    return HOST_UID_MIN + secrets.randbelow((1 << 31) - HOST_UID_MIN)
WORKDIR = "/workspace"
PROXY_SOCKET_INSIDE = "/run/shieldwall/egress.sock"
PROXY_PORT = 3128
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives",
              "ssl", "ca-certificates", "mime.types")

GUARANTEES = frozenset({
    "no_network", "no_host_files", "no_host_processes", "no_host_env", "unprivileged",
    "syscall_filter", "memory_limit", "pids_limit", "cpu_limit", "disk_limit", "tmp_limit",
    "wall_timeout", "output_limit", "kills_all", "secret_redaction", "persistent_workspace",
    "subprocesses", "proxy_network",
})


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _sandbox_python() -> str:
    """An interpreter that lives under /usr (bound read-only) for code runs."""
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(cand):
            return cand
    return "/usr/bin/python3"


class BwrapBackend:
    name = "bwrap"
    strength = 30
    guarantees = GUARANTEES

    def __init__(self, cgroup_root: str | None = None) -> None:
        self.python = _sandbox_python()
        self._bwrap = bwrap_path()
        self._layout: CgroupLayout | None
        self._layout, self._cgroup_why = detect(cgroup_root)
        # as root, each parked launcher enters fresh net/IPC/UTS namespaces ahead of its
        # run, and bwrap inherits them instead of making its own on the run's clock
        self._pool = LauncherPool(self._layout, namespaces=os.geteuid() == 0)
        self._premades = PremadeCache(self._pool)
        self.premade_runs = 0  # runs served by a pre-made sandbox (tests, the bench)
        self._spare: tuple[WorkDir, int | None] | None = None
        self._spare_lock = threading.Lock()
        self._spare_making = False
        self._closing = False
        atexit.register(self._close_spare)
        if self._layout is None:  # no pids cgroup: RLIMIT_NPROC is no bound for root
            self.guarantees = GUARANTEES - {"pids_limit"}
        self._etc: str | None = None
        self._support: str | None = None
        self._root = os.geteuid() == 0

    # ----------------------------------------------------------------- availability
    def available(self) -> tuple[bool, str]:
        if not self._bwrap:
            return False, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
        if not seccomp.supported():
            return False, "no seccomp syscall table for this CPU architecture"
        return True, ("cgroup: " + (self._layout.describe() if self._layout else
                                    f"none ({self._cgroup_why}); rlimits only"))

    @property
    def cgroup_layout(self) -> CgroupLayout | None:
        return self._layout

    def _etc_dir(self) -> str:
        if not (self._etc and os.path.isdir(self._etc)):
            self._etc = make_etc_dir()
            atexit.register(shutil.rmtree, self._etc, True)
        return self._etc

    # ----------------------------------------------------------------- the command
    def _options(self, spec: RunSpec, prejoined: bool = False,
                 as_pid_1: bool = False, env: bool = True,
                 new_session: bool = True) -> list[str]:
        """bwrap's options. ``prejoined``: the process that executes bwrap is already in
        fresh network (loopback only), IPC and UTS (hostname ``sandbox``) namespaces of
        its own (a parked launcher made them), so bwrap does not make them again.
        ``as_pid_1``: the program is pid 1 of its pid namespace (no reaper process in
        between, as in a container without an init); when it ends the kernel kills
        every other process of the namespace. One-shot runs use this; long-lived stdio
        commands keep bwrap's reaper. ``env=False``: only ``PATH`` (a pre-made sandbox gets
        the program's environment at dispatch, see :mod:`.premade`). ``new_session=False``:
        the process that executes bwrap already leads a fresh session with no controlling
        terminal (a launcher, started with ``setsid``), so bwrap's own ``setsid`` would add
        nothing but a new scheduler autogroup on the run's clock, which on a busy machine
        starts the program behind every other session's accumulated credit."""
        lim = spec.limits
        o = ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID),
             "--unshare-pid", *(["--as-pid-1"] if as_pid_1 else []), "--unshare-cgroup-try"]
        if not prejoined:
            o += ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox"]
        o += [
            "--die-with-parent", *(["--new-session"] if new_session else []),
            "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr",
        ]
        for top in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
            p = "/" + top
            if os.path.islink(p):
                o += ["--symlink", os.readlink(p), p]
            elif os.path.isdir(p):
                o += ["--ro-bind", p, p]
        o += ["--ro-bind", self._etc_dir(), "/etc"]
        o += [
            "--proc", "/proc", "--dev", "/dev",
            # paths inside the sandbox: fresh, size-limited tmpfs mounts
            "--size", str(lim.tmp_bytes), "--tmpfs", "/tmp",  # noqa: S108
            "--size", str(lim.tmp_bytes), "--tmpfs", "/dev/shm",  # noqa: S108
            "--bind", spec.workdir, WORKDIR,
        ]
        for p in spec.ro_paths:
            o += ["--ro-bind", p, p]
        for p in spec.rw_paths:
            o += ["--bind", p, p]
        if spec.network == "proxy":
            if not spec.proxy_socket:
                raise ValueError("network='proxy' needs proxy_socket")
            o += ["--dir", "/run/shieldwall",
                  "--ro-bind", str(Path(__file__).with_name("bridge.py")),
                  "/run/shieldwall/bridge.py",
                  "--bind", spec.proxy_socket, PROXY_SOCKET_INSIDE]
        o += ["--chdir", WORKDIR, "--clearenv"]
        for k, v in (self._env(spec) if env else {"PATH": SYSTEM_PATH}).items():
            o += ["--setenv", k, v]
        o += ["--remount-ro", "/"]
        return o

    def _env(self, spec: RunSpec) -> dict[str, str]:
        env = {"PATH": SYSTEM_PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "TMPDIR": "/tmp",  # noqa: S108
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
        if spec.network == "proxy":
            url = f"http://127.0.0.1:{PROXY_PORT}"
            for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                      "all_proxy"):
                env[k] = url
            env["SHIELDWALL_EGRESS_SOCKET"] = PROXY_SOCKET_INSIDE
        env.update(spec.env)
        env.update(spec.secrets)
        return env

    def command(self, spec: RunSpec, argv: Sequence[str]) -> tuple[list[str], list[int]]:
        """The bwrap argv and the fds it must inherit. Options (env values included) go
        through ``--args FD`` so they never show in the host's process list."""
        assert self._bwrap
        sfd = seccomp.filter_fd()
        # the launcher that executes bwrap leads a session of its own (see _options)
        opts = self._options(spec, prejoined=self._pool.namespaces, as_pid_1=True,
                             new_session=False)
        afd = os.memfd_create("shieldwall-bwrap-args", 0)
        os.write(afd, b"".join(a.encode() + b"\0" for a in opts))
        os.lseek(afd, 0, os.SEEK_SET)
        if spec.network == "proxy":
            argv = self.proxy_argv(argv)
        # the launcher renumbers passed fds: argv names them @fd0, @fd1
        return ([self._bwrap, "--seccomp", "@fd0", "--args", "@fd1", "--", *argv],
                [sfd, afd, *spec.extra_fds])

    def proxy_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` behind the in-sandbox bridge to the egress proxy's socket."""
        return [self.python, "-I", "/run/shieldwall/bridge.py", PROXY_SOCKET_INSIDE,
                str(PROXY_PORT), "--", *argv]

    # ----------------------------------------------------------------- running
    def prepare_workdir(self, path: str, uid: int | None) -> None:
        """Give the work directory to the sandbox's host uid (when we are root)."""
        if self._root and uid is not None:
            os.chown(path, uid, SANDBOX_GID)

    def launch(self, spec: RunSpec) -> tuple[Launch, list[int]]:
        """The run, ready for the runner; the caller closes the fds once it started."""
        argv, fds = self.command(spec, spec.argv)
        has_cg = self._layout is not None
        return Launch(
            argv=argv, env={"PATH": SYSTEM_PATH}, limits=spec.limits, backend=self.name,
            pool=self._pool, cwd="/", pass_fds=fds,
            uid=_run_uid(spec, self._root), gid=SANDBOX_GID if self._root else None,
            rlimits=rlimits_for(spec.limits, address_space=not has_cg,
                                nproc=not has_cg and self._root),
            stdin=spec.stdin, secrets=spec.secrets,
            disk_usage=lambda: dir_usage(spec.workdir), signal_exit_codes=True,
        ), fds

    def start(self, spec: RunSpec) -> Started | RunResult:
        launch, fds = self.launch(spec)
        try:
            return start(launch)
        finally:
            for fd in fds[:2]:  # ours; extra_fds belong to the caller
                with contextlib.suppress(OSError):
                    os.close(fd)

    def execute(self, spec: RunSpec, premake_next: bool = False) -> RunResult:
        """One run. ``premake_next``: afterwards, set up a sandbox with the same options in
        the background for the next run (see :mod:`.premade`); a run whose sandbox was
        pre-made that way uses it, whatever this flag says."""
        ok, why = self.available()
        if not ok:
            return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=self.name,
                             message=why)
        key = self._premade_key(spec)
        started: Started | RunResult | None = None
        if key is not None:
            pm = self._premades.take(key)
            if pm is not None:
                started = self._start_premade(pm, spec)
                if started is not None:
                    self.premade_runs += 1
        if started is None:
            started = self.start(spec)
        if isinstance(started, RunResult):
            return started
        r = finish(started, spec.stdin)
        if key is not None and premake_next:
            template = replace(spec, argv=(), env={}, secrets={}, stdin=b"")
            self._premades.want(key, spec.workdir,
                                lambda: self._make_premade(template, key))
        if r.exit_code == 1 and r.stderr.startswith("bwrap: ") and not r.stdout:
            # bwrap itself failed to set up the sandbox (e.g. a bind source not reachable
            # by uid 65534): nothing of the program ran
            return replace(r, error=ErrorKind.SANDBOX_ERROR, exit_code=None,
                           message=r.stderr.strip().splitlines()[0])
        return r

    # ----------------------------------------------------------------- pre-made
    def forget(self, workdir: str) -> None:
        """Discard what was pre-made for ``workdir`` (its sandbox is closing)."""
        self._premades.forget(workdir)

    # ----------------------------------------------------------------- spare work dirs
    def adopt_workdir(self, disk_bytes: int) -> tuple[WorkDir, int | None] | None:
        """A spare ephemeral work directory (fresh tmpfs of ``disk_bytes`` under the
        default root, a fresh host uid, nothing run in it yet) whose sandbox is already
        pre-made for the options of the last new sandbox's run; None when there is none.
        The caller owns it from now on. A sandbox made with other options still gets a
        correct run: its first run goes cold and the pre-made one is discarded."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        wd, uid = spare
        if wd.disk_bytes != disk_bytes or Path(wd.outer).parent != default_root():
            self._drop_spare(wd)
            return None
        return wd, uid

    def want_spare(self, spec: RunSpec) -> None:
        """Prepare, in the background, a spare ephemeral work directory with a sandbox
        pre-made for it, for the next new Sandbox whose run has ``spec``'s options (its
        work directory and host uid aside; see :meth:`adopt_workdir`). Called by a
        closing ephemeral Sandbox, so that the work does not compete with its runs."""
        template = replace(spec, argv=(), env={}, secrets={}, stdin=b"", workdir="",
                           host_uid=None)
        with self._spare_lock:
            if self._spare_making or self._closing:
                return
            self._spare_making = True
        self._premades.want(("spare",), "", lambda: self._make_spare(template))

    def _make_spare(self, template: RunSpec) -> None:
        wd: WorkDir | None = None
        try:
            uid = host_ids() if self._root else None
            wd = WorkDir(template.limits.disk_bytes, uid, SANDBOX_GID if self._root else None)
            if not wd.mounted:
                self.prepare_workdir(wd.path, uid)
            spec = replace(template, workdir=wd.path, host_uid=uid)
            key = self._premade_key(spec)
            if key is not None:
                self._premades.put(self._make_premade(spec, key))
            with self._spare_lock:
                old, self._spare = self._spare, (wd, uid)
                if self._closing:
                    old, self._spare = self._spare, None
            wd = None
            if old is not None:
                self._drop_spare(old[0])
        except OSError:
            pass  # no spare this time: the next new Sandbox makes its own work directory
        finally:
            if wd is not None:
                self._drop_spare(wd)
            with self._spare_lock:
                self._spare_making = False

    def _drop_spare(self, wd: WorkDir) -> None:
        self._premades.forget(wd.path)
        wd.close(save=False)

    def _close_spare(self) -> None:
        with self._spare_lock:
            self._closing = True
            spare, self._spare = self._spare, None
        if spare is not None:
            self._drop_spare(spare[0])

    def spare_ready(self) -> bool:
        """Whether a spare work directory with its pre-made sandbox is waiting."""
        with self._spare_lock:
            spare = self._spare
        return spare is not None and self._premades.ready_for(spare[0].path)

    def premade_ready(self, workdir: str) -> bool:
        """Whether a pre-made sandbox for ``workdir`` is set up and its waiter parked."""
        return self._premades.ready_for(workdir)

    def _premade_key(self, spec: RunSpec) -> tuple[object, ...] | None:
        """Everything a pre-made sandbox fixes: bwrap's options (minus the environment),
        the host uid/gid and the rlimits. None: this run cannot use one."""
        if spec.extra_fds:
            return None
        opts = self._options(spec, prejoined=self._pool.namespaces, as_pid_1=True, env=False,
                             new_session=False)
        rl = self._rlimits(spec)
        # what each bind names now: a path replaced since (e.g. a restarted proxy's
        # socket) no longer matches what a pre-made sandbox bound
        sources = [spec.workdir, *spec.ro_paths, *spec.rw_paths]
        if spec.network == "proxy" and spec.proxy_socket:
            sources.append(spec.proxy_socket)
        try:
            inodes = tuple((st.st_dev, st.st_ino) for st in map(os.stat, sources))
        except OSError:
            return None
        return (spec.workdir, _run_uid(spec, self._root), tuple(opts), tuple(rl), inodes)

    def _rlimits(self, spec: RunSpec) -> list[tuple[int, int]]:
        has_cg = self._layout is not None
        return rlimits_for(spec.limits, address_space=not has_cg,
                           nproc=not has_cg and self._root)

    def _make_premade(self, template: RunSpec, key: tuple[object, ...]) -> Premade:
        """Start bwrap around the waiter (on the background thread)."""
        assert self._bwrap
        parked = self._pool.acquire()
        sfd = afd = rfd = wfd = ready_r = ready_w = -1
        try:
            if parked.cgroup is not None:
                parked.cgroup.set_limits(template.limits.memory_bytes, template.limits.pids)
            sfd = seccomp.filter_fd()
            afd = os.memfd_create("shieldwall-bwrap-args", 0)
            opts = key[2]
            assert isinstance(opts, tuple)
            os.write(afd, b"".join(str(a).encode() + b"\0" for a in opts))
            os.lseek(afd, 0, os.SEEK_SET)
            rfd, wfd = os.pipe()
            ready_r, ready_w = os.pipe()
            argv = [self._bwrap, "--seccomp", "@fd0", "--args", "@fd1", "--",
                    self.python, "-I", "-S", "-c", WAITER_SRC, "@fd2", "@fd3"]
            rl = [(r, v, v + 1 if r == resource.RLIMIT_CPU else v)
                  for r, v in self._rlimits(template)]
            parked.dispatch(argv, {"PATH": SYSTEM_PATH}, "/", rl,
                            [sfd, afd, rfd, ready_w], _run_uid(template, self._root),
                            SANDBOX_GID if self._root else None)
            os.close(ready_w)
            ready_w = -1
            # the waiter says "R" once it is parked (EOF: bwrap or the waiter failed)
            ok, _, _ = select.select([ready_r], [], [], 10.0)
            if not ok or os.read(ready_r, 1) != b"R":
                raise OSError("the pre-made sandbox did not start")
        except BaseException:
            self._pool.release(parked)
            if wfd >= 0:
                os.close(wfd)
            raise
        finally:
            for fd in (sfd, afd, rfd, ready_r, ready_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        return Premade(key, template.workdir, parked, wfd)

    def _start_premade(self, pm: Premade, spec: RunSpec) -> Started | None:
        """Dispatch the run to its pre-made sandbox; None: it is gone, run cold."""
        lim = spec.limits
        base = (0, 0)
        try:
            if pm.parked.cgroup is not None:
                self._pool.limits_hint = (lim.memory_bytes, lim.pids)
                pm.parked.cgroup.set_limits(lim.memory_bytes, lim.pids)
                pm.parked.cgroup.reset_peak()
                base = pm.parked.cgroup.cpu_us()
        except OSError:
            pm.discard(self._pool)
            return None
        argv = list(spec.argv)
        if spec.network == "proxy":
            argv = self.proxy_argv(argv)
        if not pm.go(argv, self._env(spec)):
            pm.discard(self._pool)
            return None
        launch = Launch(
            argv=argv, env={}, limits=lim, backend=self.name, pool=self._pool,
            uid=_run_uid(spec, self._root), gid=SANDBOX_GID if self._root else None,
            stdin=spec.stdin,
            secrets=spec.secrets, disk_usage=lambda: dir_usage(spec.workdir),
            signal_exit_codes=True, cpu_base_us=base,
        )
        return Started(launch, pm.parked)


def make_etc_dir() -> str:
    """A generated /etc, made once per backend and bound as one read-only mount: the
    loader cache and config, time zone, certificates (links into /usr), alternatives
    (links), and a two-user passwd/group, hosts and nsswitch. Nothing else of /etc."""
    d = tempfile.mkdtemp(prefix="shieldwall-etc-")
    for name in _ETC_FILES:
        src = Path("/etc") / name
        dst = Path(d) / name
        with contextlib.suppress(OSError):
            if name == "localtime":
                shutil.copyfile(src.resolve(), dst)
            elif src.is_symlink():
                os.symlink(os.readlink(src), dst)
            elif src.is_dir():
                shutil.copytree(src, dst, symlinks=True,
                                ignore=shutil.ignore_patterns("private"))
            elif src.is_file():
                shutil.copyfile(src, dst)
    files = {
        "passwd": f"root:x:0:0::/:/usr/sbin/nologin\nsandbox:x:{SANDBOX_UID}:{SANDBOX_GID}"
                  f"::{WORKDIR}:/bin/sh\n",
        "group": f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        "hostname": "sandbox\n",
    }
    for name, text in files.items():
        (Path(d) / name).write_text(text)
    for root, dirs, fnames in os.walk(d):
        for n in dirs:
            os.chmod(os.path.join(root, n), 0o755)  # noqa: S103 - read-only system files
        for n in fnames:
            f = os.path.join(root, n)
            if not os.path.islink(f):
                os.chmod(f, 0o644)
    os.chmod(d, 0o755)  # noqa: S103 - bound read-only; readable by the sandbox uid
    return d



def _run_uid(spec: RunSpec, root: bool) -> int | None:
    if not root:
        return None
    return spec.host_uid if spec.host_uid is not None else SANDBOX_UID


def dir_usage(path: str) -> int:
    """Bytes used under ``path``: from statvfs when it is its own (tmpfs) mount, else a walk."""
    try:
        if os.path.ismount(path):
            st = os.statvfs(path)
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        total = 0
        for root, _dirs, files in os.walk(path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_blocks * 512
        return total
    except OSError:
        return 0
