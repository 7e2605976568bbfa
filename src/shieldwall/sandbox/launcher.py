"""Pre-started launchers: the cold path of a sandbox run without the slow parts.

Moving a process into a v1 cgroup costs a kernel RCU grace period (~5-15 ms), and
forking a large Python parent costs a few ms more. Both are paid ahead of time here: a
background thread makes a fresh cgroup, starts a tiny launcher process (system Python,
``-I -S``) that joins it, and parks it on a control socket. A run hands the parked
launcher its argv, environment, rlimits, uid and fds (SCM_RIGHTS); the launcher applies
them and ``exec``s bwrap (or the command). Nothing of the run exists before dispatch:
each launcher, its cgroup and its pipes serve exactly one run and are then discarded.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .cgroup import CgroupLayout, RunCgroup, sweep_stale

# Runs as root until its exec; only stdlib, no site.
_LAUNCHER_SRC = r"""
import os, socket, resource, json, sys
ctl = socket.socket(fileno=int(sys.argv[1]))
if sys.argv[2] == "ns":
    # fresh network, IPC and UTS namespaces, made while parked (off the run's clock):
    # loopback up, hostname "sandbox", no other interface
    import ctypes, fcntl, struct
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x40000000 | 0x08000000 | 0x04000000) != 0:
        os.write(2, b"shieldwall launcher: unshare failed\n")
        os._exit(126)
    libc.sethostname(b"sandbox", 7)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))[:18])[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))
    s.close()
for a in sys.argv[3:]:
    fd = int(a)
    os.write(fd, b"0")
    os.close(fd)
ctl.send(b"R")
msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 16)
if not msg:
    os._exit(0)
req = json.loads(msg)
try:
    for res, soft, hard in req["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    names = {}
    for i, fd in enumerate(fds):
        os.set_inheritable(fd, True)
        names["@fd%d" % i] = str(fd)
    argv = [names.get(a, a) for a in req["argv"]]
    os.chdir(req["cwd"])
    if req.get("gid") is not None:
        os.setgroups([])
        os.setresgid(req["gid"], req["gid"], req["gid"])
    if req.get("uid") is not None:
        os.setresuid(req["uid"], req["uid"], req["uid"])
    ctl.close()
    os.execvpe(argv[0], argv, req["env"])
except BaseException as e:
    os.write(2, ("shieldwall launcher: %s: %s\n" % (type(e).__name__, e)).encode())
    os._exit(127)
"""


def _launcher_python() -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


# How long background set-up waits after a run ends before it starts (launchers here,
# pre-made sandboxes in .premade): on a 2-core machine, reaping and forking at once would
# take the CPU (and the GIL) from the caller's own work on the result, e.g. closing its
# Sandbox. The run itself was already contained: its processes are killed synchronously.
HOUSEKEEPING_DELAY_S = 0.03


@dataclass
class Parked:
    """A launcher waiting for its one run."""

    proc: subprocess.Popen[bytes]
    ctl: socket.socket
    cgroup: RunCgroup | None

    def dispatch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str,
                 rlimits: Sequence[tuple[int, int, int]], fds: Sequence[int],
                 uid: int | None, gid: int | None) -> None:
        """Hand over the run. ``argv`` may name the passed fds as ``@fd0``, ``@fd1``..."""
        msg = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd,
                          "rlimits": [list(r) for r in rlimits], "uid": uid, "gid": gid})
        socket.send_fds(self.ctl, [msg.encode()], list(fds))
        self.ctl.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.ctl.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=2)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                f.close()  # type: ignore[union-attr]
        if self.cgroup is not None:
            self.cgroup.destroy()


def start(layout: CgroupLayout | None, namespaces: bool = False,
          limits: tuple[int, int] = (64 << 20, 64)) -> Parked:
    """Start one launcher (synchronously) and wait until it has joined its cgroup (and,
    with ``namespaces``, entered fresh network, IPC and UTS namespaces: root only)."""
    cg = RunCgroup.create(layout, *limits) if layout is not None else None
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    procs_fds = [os.dup(fd) for fd in (cg._procs_fds if cg else [])]
    try:
        proc = subprocess.Popen(
            [_launcher_python(), "-I", "-S", "-c", _LAUNCHER_SRC, str(child.fileno()),
             "ns" if namespaces else "-", *map(str, procs_fds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(child.fileno(), *procs_fds), start_new_session=True, close_fds=True,
            env={"PATH": "/usr/bin:/bin"},
        )
    finally:
        child.close()
        for fd in procs_fds:
            os.close(fd)
    parked = Parked(proc, parent, cg)
    parent.settimeout(10)
    try:
        if parent.recv(1) != b"R":
            raise OSError("launcher did not start")
    except OSError:
        parked.discard()
        raise
    parent.settimeout(None)
    return parked


class LauncherPool:
    """Keeps ``size`` launchers parked; refills on a background thread."""

    def __init__(self, layout: CgroupLayout | None, size: int = 2,
                 namespaces: bool = False) -> None:
        self.layout = layout
        self.size = size
        self.namespaces = namespaces
        # (memory, pids) of the last run: new groups are made with these, so that a run
        # with the same limits writes no cgroup files on its clock
        self.limits_hint: tuple[int, int] = (64 << 20, 64)
        if layout is not None:
            sweep_stale(layout)
        self._ready: list[Parked] = []
        self._trash: list[Parked] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(_close_ref, weakref.ref(self))

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            # housekeeping (reaping the last launcher, removing its cgroup, starting the
            # next) waits a moment: right after a result the caller has work of its own
            time.sleep(HOUSEKEEPING_DELAY_S)
            while not self._closed:
                with self._lock:
                    trash, self._trash = self._trash, []
                    need = self.size - len(self._ready)
                for t in trash:
                    t.discard()
                if need <= 0:
                    break
                try:
                    p = start(self.layout, self.namespaces, self.limits_hint)
                except OSError:
                    break
                with self._lock:
                    if self._closed:
                        p.discard()
                        return
                    self._ready.append(p)

    def acquire(self) -> Parked:
        with self._lock:
            p = self._ready.pop(0) if self._ready else None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="shieldwall-launchers",
                                            daemon=True)
            self._thread.start()
        if p is None:  # otherwise the refill waits for release(), off this run's clock
            self._wake.set()
        if p is not None and p.proc.poll() is None:
            return p
        if p is not None:
            p.discard()
        return start(self.layout, self.namespaces, self.limits_hint)

    def release(self, parked: Parked) -> None:
        """After a run: kill what is left now; remove the cgroup on the background thread."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(parked.proc.pid, signal.SIGKILL)
        with self._lock:
            self._trash.append(parked)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._lock:
            items = self._ready + self._trash
            self._ready, self._trash = [], []
        for p in items:
            p.discard()


def _close_ref(ref: weakref.ref[LauncherPool]) -> None:
    pool = ref()
    if pool is not None:
        pool.close()
