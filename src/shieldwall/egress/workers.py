"""Pre-fork workers for ``shieldwall proxy --workers N``.

One event loop uses one CPU. With ``--workers N`` the parent holds the TCP port
(:func:`~shieldwall.egress.proxy.reserve_port`: bound with ``SO_REUSEPORT``, not
listening) and opens the Unix socket, then forks N workers. Each worker listens on the
port with ``SO_REUSEPORT`` (the kernel spreads new connections over the listening
workers) and accepts on the shared Unix socket. The parent supervises: a worker that
dies is replaced (new connections go to the others meanwhile; ones already queued on the
dead worker's socket are reset), and workers that keep dying stop the whole proxy rather
than leave it half up. SIGTERM or SIGINT to the parent stops every worker, which
drains its connections and closes its audit log before it exits. SIGHUP reloads: the
parent checks the policy file again and, if it is good, replaces the workers one by one
(a new one listening before the old one drains), so there is no moment without a
listener; a bad file is reported and the running workers stay.

The parent stays small: it validates the policy and opens sockets, and each worker
builds its own wall (policy, stores, audit log, detectors) after the fork, so no thread,
database connection or model session crosses a fork. Workers share what the policy
shares: counters in ``store.backend: redis``, the audit log's file or database (several
writers serialise on its lock; the proxy writes with ``audit.sequence: commit``, so only
a worker's flusher ever waits for that lock, never its event loop). What stays per
worker: kept upstream connections, the credential cache and the early-refusal audit
rate (``per_second`` each).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("shieldwall.egress.workers")


@dataclass
class Supervisor:
    """Forks ``n`` workers running ``child(index, ready_fd)`` and keeps them running.

    ``child`` returns an exit status; it writes one byte to ``ready_fd`` once it accepts
    connections. :meth:`run` returns when the workers are stopped: 0 after SIGTERM or
    SIGINT, 1 when a worker failed before it was ready or workers died more than
    ``max_restarts`` times within ``window`` seconds. On SIGHUP, ``check`` (if given) is
    asked whether a reload may go ahead (``None``) or why not (a message), and the
    workers are then replaced one at a time."""

    n: int
    child: Callable[[int, int], int]
    ready: Callable[[], None] | None = None
    check: Callable[[], str | None] | None = None
    ready_timeout: float = 120.0
    max_restarts: int = 5
    window: float = 30.0
    grace: float = 10.0
    pids: dict[int, int] = field(default_factory=dict)  # pid -> worker index
    reloads: int = 0
    _stopping: bool = False
    _reload: bool = False
    _retired: set[int] = field(default_factory=set)  # replaced by a reload: their exit is expected
    _deaths: list[float] = field(default_factory=list)
    _wake: tuple[int, int] = (-1, -1)  # the signal wake-up pipe (read, write)

    def _fork(self, index: int) -> tuple[int, int]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(r)
                for fd in self._wake:
                    if fd >= 0:
                        os.close(fd)
                signal.set_wakeup_fd(-1)
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(s, signal.SIG_DFL)
                code = self.child(index, w)
            except BaseException:  # report, then leave without running the parent's atexit
                log.exception("proxy worker %d failed", index)
            finally:
                os._exit(code)
        os.close(w)
        self.pids[pid] = index
        return pid, r

    def _signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        elif signum != signal.SIGCHLD:
            self.stop()

    def stop(self) -> None:
        """Ask every worker to stop (SIGTERM); :meth:`run` then reaps them and returns."""
        self._stopping = True
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        # Signals only set flags (and wake the loop through a pipe); the loop acts on them.
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_fd = signal.set_wakeup_fd(wake_w)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        old = {s: signal.signal(s, self._signal) for s in sigs}
        self._wake = (wake_r, wake_w)
        try:
            if not self._start_all():
                stopped = self._stopping  # a signal while starting is a stop, not a failure
                self.stop()
                self._reap_all()
                return 0 if stopped else 1
            if self.ready is not None:
                self.ready()
            return self._watch()
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, h in old.items():
                signal.signal(s, h)
            os.close(wake_r)
            os.close(wake_w)
            self._wake = (-1, -1)

    def _await_ready(self, pipes: dict[int, int]) -> bool:
        """Wait for a byte on each pipe (fd -> pid); False if a worker ended first, the
        time ran out or a stop came. Closes the pipes."""
        deadline = time.monotonic() + self.ready_timeout
        ok = True
        while pipes and not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("proxy workers not ready after %.0fs", self.ready_timeout)
                ok = False
                break
            readable, _, _ = select.select(list(pipes), [], [], min(left, 1.0))
            for r in readable:
                got = os.read(r, 1)
                os.close(r)
                pid = pipes.pop(r)
                if not got:  # closed without a byte: the worker ended before it listened
                    log.error("proxy worker %d (pid %d) exited before it was ready",
                              self.pids.get(pid, -1), pid)
                    ok = False
            if not ok:
                break
        for r in pipes:
            os.close(r)
        return ok and not self._stopping

    def _start_all(self) -> bool:
        pipes = {}
        for i in range(self.n):
            pid, r = self._fork(i)
            pipes[r] = pid
        return self._await_ready(pipes)

    def _reap_all(self) -> None:
        deadline = time.monotonic() + self.grace
        while self.pids:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                break
            if pid:
                self.pids.pop(pid, None)
                continue
            if time.monotonic() > deadline:
                for p in list(self.pids):
                    log.warning("proxy worker pid %d did not stop in %.0fs: killed", p, self.grace)
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = float("inf")
            time.sleep(0.05)

    def _watch(self) -> int:
        while True:
            if self._stopping:
                self._reap_all()
                return 0
            if self._reload:
                self._reload = False
                self._do_reload()
                continue
            reaped = self._reap_one()
            if reaped == "give up":
                self.stop()
                self._reap_all()
                return 1
            if reaped == "none":
                select.select([self._wake[0]], [], [], 1.0)
                try:
                    while os.read(self._wake[0], 512):
                        pass
                except BlockingIOError:
                    pass

    def _reap_one(self) -> str:
        """Reap one ended worker and replace it unless it was retired or we are stopping:
        "none" (none had ended), "reaped", or "give up" (too many deaths)."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return "none"
        if not pid:
            return "none"
        index = self.pids.pop(pid, None)
        if index is None or pid in self._retired or self._stopping:
            self._retired.discard(pid)
            return "reaped"
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"status {os.WEXITSTATUS(status)}")
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < self.window] + [now]
        if len(self._deaths) > self.max_restarts:
            log.error("proxy worker %d (pid %d) ended with %s: more than %d worker deaths "
                      "in %.0fs, stopping the proxy", index, pid, how, self.max_restarts,
                      self.window)
            return "give up"
        log.warning("proxy worker %d (pid %d) ended with %s: starting a new one", index, pid, how)
        _, r = self._fork(index)
        os.close(r)  # its readiness is not awaited: the others serve meanwhile
        return "reaped"

    def _do_reload(self) -> None:
        problem = self.check() if self.check is not None else None
        if problem:
            log.error("reload refused, the running workers stay: %s", problem)
            return
        for old_pid, index in sorted(self.pids.items(), key=lambda kv: kv[1]):
            if old_pid in self._retired:
                continue
            pid, r = self._fork(index)
            if not self._await_ready({r: pid}):
                log.error("reload stopped: the new worker %d did not start; the running "
                          "workers stay", index)
                self._retired.add(pid)
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                return
            self._retired.add(old_pid)
            try:
                os.kill(old_pid, signal.SIGTERM)  # it drains its connections, then exits
            except ProcessLookupError:
                pass
        self.reloads += 1
        log.info("reloaded: %d workers on the policy as it now stands", self.n)
