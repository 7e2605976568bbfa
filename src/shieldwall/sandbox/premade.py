"""Pre-made bwrap sandboxes: the next run's sandbox is set up while the last one settles.

A one-shot bwrap run spends most of its fixed cost before the program starts: executing
bwrap, making the user, pid, mount and cgroup namespaces, a dozen mounts (each followed by
a read of ``/proc/self/mountinfo``), pivoting the root and loading the seccomp filter.
None of that depends on the program, its arguments or its environment. So after a run,
a background thread starts bwrap again with the same options around a tiny *waiter*
(system Python, ``-I -S``): it is pid 1 of its fresh pid namespace, already uid 65534
with no capabilities, inside the seccomp filter, the cgroup and the rlimits, and blocks
on a pipe. The next run with exactly the same options writes its argv and environment
to that pipe; the waiter ``execve``s the program, which then runs exactly as it would
have in a sandbox made on the run's clock.

What is pre-made is fresh per run: each pre-made sandbox (its namespaces, cgroup, tmpfs
mounts, launcher and pipes) serves one run and is then discarded; the program is started
by ``execve`` from nothing (no interpreter state is carried over, unlike the warm pool's
zygote). Secrets and the environment reach the waiter only at dispatch, over the pipe,
never in an argv. A pre-made sandbox is keyed by every bwrap option of the run (work
directory, extra paths, tmpfs sizes, network mode), the host uid and the rlimits, so a
run can only be served by one made for precisely its sandbox; anything else runs cold.
The key also holds the device and inode that each bind source (work directory, extra
paths, the egress proxy's socket) names, so a path replaced since the sandbox was pre-made
(e.g. a restarted proxy's socket) sends the run down the cold path too. The waiter's own
start-up (a few ms of CPU) counts toward ``RLIMIT_CPU`` of the run (the reported usage
leaves it out).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .launcher import HOUSEKEEPING_DELAY_S, LauncherPool, Parked

# Runs inside the finished sandbox (uid 65534, seccomp, no capabilities) until its exec.
WAITER_SRC = r"""
import os, sys, json
fd = int(sys.argv[1])
os.write(int(sys.argv[2]), b"R")
os.close(int(sys.argv[2]))
chunks = []
while True:
    b = os.read(fd, 65536)
    if not b:
        break
    chunks.append(b)
os.close(fd)
if not chunks:
    os._exit(0)
req = json.loads(b"".join(chunks))
try:
    os.execvpe(req["argv"][0], req["argv"], req["env"])
except OSError as e:  # worded as bwrap words it, so both paths report sandbox_error
    os.write(2, ("bwrap: execvp %s: %s\n" % (req["argv"][0], e.strerror)).encode())
    os._exit(1)
"""


@dataclass
class Premade:
    """A started bwrap sandbox whose waiter blocks on ``ctl`` (our write end)."""

    key: Hashable
    workdir: str
    parked: Parked  # the launcher, now bwrap (its proc, pipes and cgroup)
    ctl: int

    def alive(self) -> bool:
        return self.parked.proc.poll() is None

    def go(self, argv: list[str], env: dict[str, str]) -> bool:
        """Hand the waiter its program; False when it is gone (the run must go cold)."""
        msg = json.dumps({"argv": argv, "env": env}).encode()
        try:
            view = memoryview(msg)
            while view:
                n = os.write(self.ctl, view)
                view = view[n:]
        except OSError:
            return False
        finally:
            self._close_ctl()
        return True

    def discard(self, pool: LauncherPool) -> None:
        self._close_ctl()  # the waiter reads EOF and exits
        pool.release(self.parked)

    def _close_ctl(self) -> None:
        fd, self.ctl = self.ctl, -1  # never close a number twice: it may be reused
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


# Makes a pre-made sandbox, or does other set-up work and returns None. Always on the
# cache's own long-lived thread: bwrap's --die-with-parent is a parent-death signal, which
# Linux sends when the *thread* that started the launcher ends, not the process.
Maker = Callable[[], "Premade | None"]


class PremadeCache:
    """At most ``size`` pre-made sandboxes, one per key; made on a background thread."""

    def __init__(self, pool: LauncherPool, size: int = 4) -> None:
        self.pool = pool
        self.size = size
        self._ready: dict[Hashable, Premade] = {}
        self._wanted: dict[Hashable, tuple[str, Maker]] = {}
        self._making: str | None = None  # the work directory of the one being made
        self._forgotten = False  # forget() was called for it meanwhile
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(_close_ref, weakref.ref(self))

    def take(self, key: Hashable) -> Premade | None:
        """The pre-made sandbox for ``key``, if one is ready (it is no longer cached)."""
        with self._lock:
            pm = self._ready.pop(key, None)
        if pm is not None and not pm.alive():
            pm.discard(self.pool)
            return None
        return pm

    def want(self, key: Hashable, workdir: str, make: Maker) -> None:
        """Make one for ``key`` in the background (after the current run has settled)."""
        with self._lock:
            if self._closed or key in self._ready:
                return
            self._wanted[key] = (workdir, make)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="shieldwall-premade",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def put(self, pm: Premade) -> None:
        """Cache one made elsewhere (a spare work directory's, see ``BwrapBackend``)."""
        self._store(pm, keep=True)

    def _store(self, pm: Premade, keep: bool) -> None:
        """Cache ``pm`` (unless not ``keep``, or closed), evicting the oldest beyond size."""
        with self._lock:
            old = self._ready.pop(pm.key, None)
            evict: list[Premade] = [] if old is None else [old]
            if self._closed or not keep:
                evict.append(pm)
            else:
                self._ready[pm.key] = pm
                while len(self._ready) > self.size:
                    evict.append(self._ready.pop(next(iter(self._ready))))
        for p in evict:
            p.discard(self.pool)

    def forget(self, workdir: str) -> None:
        """Drop what was made for ``workdir`` (its sandbox is closing)."""
        with self._lock:
            gone = [k for k, p in self._ready.items() if p.workdir == workdir]
            drop = [self._ready.pop(k) for k in gone]
            self._wanted = {k: w for k, w in self._wanted.items() if w[0] != workdir}
            if self._making == workdir:
                self._forgotten = True
        for p in drop:
            p.discard(self.pool)

    def ready_for(self, workdir: str) -> bool:
        with self._lock:
            return any(p.workdir == workdir for p in self._ready.values())

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=5.0)
            self._wake.clear()
            time.sleep(HOUSEKEEPING_DELAY_S)  # see .launcher
            while not self._closed:
                with self._lock:
                    if not self._wanted:
                        break
                    key = next(iter(self._wanted))
                    self._making, make = self._wanted.pop(key)
                    self._forgotten = False
                try:
                    pm = make()
                except Exception:  # the run that wanted it goes cold instead
                    pm = None
                with self._lock:
                    keep, self._making = not self._forgotten, None
                if pm is not None:
                    self._store(pm, keep)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._lock:
            items = list(self._ready.values())
            self._ready.clear()
            self._wanted.clear()
        for p in items:
            p.discard(self.pool)


def _close_ref(ref: weakref.ref[PremadeCache]) -> None:
    cache = ref()
    if cache is not None:
        cache.close()
