"""The parent side of every process-based run: spawn, feed stdin, read stdout/stderr under
caps, enforce the wall clock, kill everything left, classify how the run ended.

Backends differ in the command they build (bwrap, runsc, plain exec); what happens around
the command is the same, and lives here so that every backend gets the same timeouts,
output caps, secret redaction and error kinds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import selectors
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from .launcher import LauncherPool, Parked
from .types import ErrorKind, Limits, RunResult, Usage

TRUNCATION_MARKER = "\n[shieldwall: output truncated at {cap} bytes; {n} more bytes not shown]\n"
_ENOSPC_TEXT = ("No space left on device", "[Errno 28]", "Disk quota exceeded", "File too large")


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """Replace each secret value with ``[REDACTED:NAME]``; a trailing partial secret too."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if len(value) >= 4:
            text = text.replace(value, f"[REDACTED:{name}]")
    for name, value in secrets.items():  # a secret cut in half by truncation
        for k in range(min(len(value) - 1, len(text)), 3, -1):
            if text.endswith(value[:k]):
                text = text[:-k] + f"[REDACTED:{name}]"
                break
    return text


@dataclass
class _Stream:
    cap: int
    buf: bytearray = field(default_factory=bytearray)
    total: int = 0

    def feed(self, data: bytes) -> bool:
        """Keep up to the cap; return True once the program wrote past it."""
        self.total += len(data)
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        return self.total > self.cap

    def text(self, secrets: Mapping[str, str]) -> str:
        s = redact(self.buf.decode("utf-8", "replace"), secrets)
        if self.total > self.cap:
            s += TRUNCATION_MARKER.format(cap=self.cap, n=self.total - self.cap)
        return s


def rlimits_for(limits: Limits, *, address_space: bool, nproc: bool) -> list[tuple[int, int]]:
    cpu = max(1, int(limits.cpu_s + 0.999))
    out = [
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    if address_space:
        out.append((resource.RLIMIT_AS, limits.memory_bytes))
    if nproc:
        out.append((resource.RLIMIT_NPROC, limits.pids))
    return out


@dataclass
class Launch:
    argv: Sequence[str]  # may name passed fds as "@fd0", "@fd1", ...
    env: Mapping[str, str]
    limits: Limits
    backend: str
    pool: LauncherPool
    cwd: str = "/"
    pass_fds: Sequence[int] = ()
    uid: int | None = None  # drop to this host uid/gid before exec (root only)
    gid: int | None = None
    rlimits: Sequence[tuple[int, int]] = ()
    stdin: bytes = b""
    secrets: Mapping[str, str] = field(default_factory=dict)
    disk_usage: Callable[[], int] | None = None  # bytes used in the work dir after the run
    # bwrap reports the sandboxed program's death by signal as exit 128+N; map it back
    signal_exit_codes: bool = False
    # stop the run once the cgroup has used this much CPU (for runtimes that do not enforce
    # RLIMIT_CPU themselves, e.g. gVisor's Sentry)
    cpu_watch_s: float | None = None
    # CPU (user, system) microseconds the run's group had used before the program started
    # (a pre-made sandbox's set-up and waiter): not the program's, left out of its usage
    cpu_base_us: tuple[int, int] = (0, 0)


@dataclass
class Started:
    """A dispatched run whose output has not been collected yet (warm pools hold these)."""

    launch: Launch
    parked: Parked


def start(launch: Launch) -> Started | RunResult:
    """Hand the run to a parked launcher. A RunResult means it could not start."""
    try:
        parked = launch.pool.acquire()
    except OSError as e:
        return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=launch.backend,
                         message=f"could not start the sandbox launcher: {e}")
    rl = [(r, v, v + 1 if r == resource.RLIMIT_CPU else v) for r, v in launch.rlimits]
    try:
        if parked.cgroup is not None:
            launch.pool.limits_hint = (launch.limits.memory_bytes, launch.limits.pids)
            parked.cgroup.set_limits(*launch.pool.limits_hint)
        parked.dispatch(launch.argv, launch.env, launch.cwd, rl, launch.pass_fds,
                        launch.uid, launch.gid)
    except OSError as e:
        launch.pool.release(parked)
        return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=launch.backend,
                         message=f"could not start the sandbox: {e}")
    return Started(launch, parked)


def execute(launch: Launch) -> RunResult:
    started = start(launch)
    if isinstance(started, RunResult):
        return started
    return finish(started, launch.stdin)


def abandon(started: Started) -> None:
    """Kill a started run that will never be collected."""
    started.launch.pool.release(started.parked)


def finish(started: Started, stdin: bytes, status_fd: int | None = None) -> RunResult:
    """Feed stdin, collect output under the caps and the wall clock (counted from now),
    kill what is left, classify. Releases the launcher in every case.

    ``status_fd``: a pipe on which the sandboxed program reports its own exit code when it
    is done (the warm pool's zygote); the result is then ready without waiting for the
    sandbox's teardown, which proceeds in the background."""
    try:
        return _collect(started.launch, started.parked, stdin, time.monotonic(), status_fd)
    finally:
        started.launch.pool.release(started.parked)


def _collect(launch: Launch, parked: Parked, stdin: bytes, t0: float,
             status_fd: int | None = None) -> RunResult:
    limits = launch.limits
    proc, cgroup = parked.proc, parked.cgroup
    out, err = _Stream(limits.stdout_bytes), _Stream(limits.stderr_bytes)
    streams = {proc.stdout: out, proc.stderr: err}
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        assert f is not None
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    if status_fd is not None:
        sel.register(status_fd, selectors.EVENT_READ)
    if proc.stdin is not None:
        rest = _write_now(proc.stdin, stdin)
        if rest:  # on a thread: a program that never reads must not block us
            threading.Thread(target=_feed, args=(proc.stdin, rest), daemon=True).start()
        else:
            proc.stdin.close()
    deadline = t0 + limits.wall_s
    stopped: ErrorKind | None = None
    status: int | None = None
    rusage: resource.struct_rusage | None = None
    open_streams = 2
    early = False
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped = ErrorKind.TIMEOUT
            break
        if launch.cpu_watch_s is not None and cgroup is not None:
            st_cpu = cgroup.stats()
            if (st_cpu["cpu_user_us"] + st_cpu["cpu_sys_us"]) / 1e6 > launch.cpu_watch_s:
                stopped = ErrorKind.CPU_LIMIT
                break
        tick = 0.1 if launch.cpu_watch_s is not None else 0.25
        for key, _ in sel.select(timeout=min(remaining, tick)):
            fobj = key.fileobj
            if fobj == status_fd:
                report = os.read(status_fd, 64).strip()
                sel.unregister(status_fd)
                if report.lstrip(b"-").isdigit():
                    status = (int(report) & 0xFF) << 8  # as waitpid would encode exit(N)
                    early = True
                    break
                continue
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(fobj)
                open_streams -= 1
                continue
            if streams[fobj].feed(data):  # type: ignore[index]
                stopped = ErrorKind.OUTPUT_LIMIT
        if stopped or early:
            break
        if status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                # the leader is gone: give stragglers holding the pipes a moment, then stop
                deadline = min(deadline, time.monotonic() + 0.5)
    wall = time.monotonic() - t0
    if stopped is None and status is None:
        # both pipes closed: the leader is exiting; wait for it, within the deadline
        status, rusage = _wait_exit(proc.pid, deadline)
        if status is None:
            stopped = ErrorKind.TIMEOUT
    if stopped or status is None or early:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    cg_stats = cgroup.stats() if cgroup else {}
    if cgroup and not early:  # early: the pool's release finishes the kill off the clock
        cgroup.kill()
    if status is None:
        _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by us; keep Popen from waiting again
    # drain what is buffered (bounded)
    for pipe, st_ in streams.items():
        with contextlib.suppress(OSError, ValueError, AttributeError):
            while True:
                data = os.read(pipe.fileno(), 65536)  # type: ignore[union-attr]
                if not data:
                    break
                st_.feed(data)
    sel.close()
    for f in (proc.stdout, proc.stderr):
        with contextlib.suppress(OSError):
            f.close()  # type: ignore[union-attr]

    exit_code: int | None = None
    sig: int | None = None
    if os.WIFEXITED(status):
        exit_code = os.WEXITSTATUS(status)
        if launch.signal_exit_codes and exit_code > 128 and exit_code - 128 < 65:
            sig, exit_code = exit_code - 128, None
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    if stopped is not None:
        exit_code, sig = None, sig or signal.SIGKILL
    disk = launch.disk_usage() if launch.disk_usage else 0
    if cgroup is not None and cgroup.counts_cpu:
        # the group holds exactly the run's processes (and, before the program, a
        # pre-made sandbox's set-up, subtracted); rusage would add the launcher's start-up
        cpu_user = max(0, cg_stats.get("cpu_user_us", 0) - launch.cpu_base_us[0]) / 1e6
        cpu_sys = max(0, cg_stats.get("cpu_sys_us", 0) - launch.cpu_base_us[1]) / 1e6
    else:
        cpu_user = rusage.ru_utime if rusage else 0.0
        cpu_sys = rusage.ru_stime if rusage else 0.0
    usage = Usage(
        wall_s=wall, cpu_user_s=cpu_user, cpu_sys_s=cpu_sys,
        max_rss_bytes=(rusage.ru_maxrss * 1024) if rusage else 0,
        memory_peak_bytes=cg_stats.get("memory_peak", 0), pids_peak=cg_stats.get("pids_peak", 0),
        disk_bytes=disk, stdout_bytes=out.total, stderr_bytes=err.total,
    )
    stderr_text = err.text(launch.secrets)
    error, message = _classify(launch, stopped, exit_code, sig, cg_stats, usage, stderr_text,
                               cgroup is not None)
    return RunResult(
        stdout=out.text(launch.secrets), stderr=stderr_text, exit_code=exit_code,
        error=error, usage=usage, backend=launch.backend, signal=sig,
        truncated=out.total > out.cap or err.total > err.cap, message=message,
    )


def _wait_exit(pid: int, deadline: float) -> tuple[int | None, resource.struct_rusage | None]:
    """Reap ``pid`` once it exits, until ``deadline``: woken by a pidfd, not by polling."""
    pid_, st, ru = os.wait4(pid, os.WNOHANG)
    if pid_:
        return st, ru
    pfd = -1
    with contextlib.suppress(OSError, AttributeError):
        pfd = os.pidfd_open(pid)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, None
            if pfd >= 0:
                select.select([pfd], [], [], remaining)
            else:
                time.sleep(0.0005)
            pid_, st, ru = os.wait4(pid, os.WNOHANG)
            if pid_:
                return st, ru
    finally:
        if pfd >= 0:
            os.close(pfd)


def _write_now(pipe: IO[bytes], data: bytes) -> bytes:
    """Write what the pipe takes without blocking (all of a small input); the rest."""
    if not data:
        return b""
    fd = pipe.fileno()
    try:
        os.set_blocking(fd, False)
        n = os.write(fd, data)
    except BlockingIOError:
        n = 0
    except OSError:  # the program closed its stdin: nothing more to give it
        return b""
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)
    return data[n:]


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):
        pipe.write(data)
    with contextlib.suppress(OSError, ValueError):
        pipe.close()


def _classify(launch: Launch, stopped: ErrorKind | None, exit_code: int | None,
              sig: int | None, cg: dict[str, int], usage: Usage,
              stderr: str, has_cgroup: bool) -> tuple[ErrorKind | None, str]:
    limits = launch.limits
    if stopped is ErrorKind.OUTPUT_LIMIT:
        return stopped, "output exceeded the cap; the run was stopped"
    if stopped is ErrorKind.CPU_LIMIT:
        return stopped, f"CPU limit of {limits.cpu_s} s reached; the run was stopped"
    if cg.get("oom_kills", 0) > 0:
        return ErrorKind.MEMORY_LIMIT, f"memory limit of {limits.memory_bytes} bytes reached"
    if exit_code == 0 and sig is None and stopped is None:
        return None, ""
    if cg.get("pids_max_hits", 0) > 0:
        return ErrorKind.PIDS_LIMIT, f"process limit of {limits.pids} reached"
    if sig == signal.SIGXCPU or (
        sig == signal.SIGKILL and usage.cpu_user_s + usage.cpu_sys_s >= limits.cpu_s * 0.95
    ):
        return ErrorKind.CPU_LIMIT, f"CPU limit of {limits.cpu_s} s reached"
    if sig == signal.SIGXFSZ:
        return ErrorKind.DISK_LIMIT, f"file size limit of {limits.file_bytes} bytes reached"
    if any(t in stderr for t in _ENOSPC_TEXT) or usage.disk_bytes >= limits.disk_bytes * 0.98:
        return ErrorKind.DISK_LIMIT, "disk quota reached"
    if stopped is ErrorKind.TIMEOUT:
        return stopped, f"wall-clock limit of {limits.wall_s} s reached; every process was killed"
    if not has_cgroup and "MemoryError" in stderr:
        return ErrorKind.MEMORY_LIMIT, "address-space limit reached (MemoryError)"
    if sig is not None:
        return ErrorKind.KILLED, f"killed by signal {sig}"
    return None, ""
