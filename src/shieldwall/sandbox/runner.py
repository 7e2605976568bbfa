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
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .cgroup import RunCgroup
from .types import ErrorKind, Limits, RunResult, Usage

TRUNCATION_MARKER = "\n[shieldwall: output truncated, {n} more bytes not shown]\n"
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
            s += TRUNCATION_MARKER.format(n=self.total - self.cap)
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
    argv: Sequence[str]
    env: Mapping[str, str]
    limits: Limits
    backend: str
    cwd: str | None = None
    pass_fds: Sequence[int] = ()
    cgroup: RunCgroup | None = None
    uid: int | None = None  # drop to this host uid/gid before exec (root only)
    gid: int | None = None
    rlimits: Sequence[tuple[int, int]] = ()
    stdin: bytes = b""
    secrets: Mapping[str, str] = field(default_factory=dict)
    disk_usage: Callable[[], int] | None = None  # bytes used in the work dir after the run
    # bwrap/runsc report the sandboxed program's death by signal as 128+N; map it back
    signal_exit_codes: bool = False
    extra_cpu_limit_s: float | None = None


def _preexec(launch: Launch) -> Callable[[], None]:
    cg, rl, uid, gid = launch.cgroup, list(launch.rlimits), launch.uid, launch.gid
    cpu_soft = next((v for r, v in rl if r == resource.RLIMIT_CPU), None)

    def child() -> None:
        if cg is not None:
            cg.join_in_child()
        for res, val in rl:
            hard = val + 1 if res == resource.RLIMIT_CPU and cpu_soft is not None else val
            resource.setrlimit(res, (val, hard))
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
        if uid is not None:
            os.setresuid(uid, uid, uid)

    return child


def execute(launch: Launch) -> RunResult:
    limits = launch.limits
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(launch.argv),
            stdin=subprocess.PIPE if launch.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(launch.env),
            cwd=launch.cwd,
            pass_fds=tuple(launch.pass_fds),
            preexec_fn=_preexec(launch),
            start_new_session=True,
            close_fds=True,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=launch.backend,
                         message=f"could not start the sandbox: {e}")
    out, err = _Stream(limits.stdout_bytes), _Stream(limits.stderr_bytes)
    streams = {proc.stdout: out, proc.stderr: err}
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        assert f is not None
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    if launch.stdin and proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(launch.stdin)
        with contextlib.suppress(OSError):
            proc.stdin.close()
    deadline = t0 + limits.wall_s
    stopped: ErrorKind | None = None
    status: int | None = None
    rusage: resource.struct_rusage | None = None
    open_streams = 2
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            stopped = ErrorKind.TIMEOUT
            break
        for key, _ in sel.select(timeout=min(remaining, 0.25)):
            fobj = key.fileobj
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
        if stopped:
            break
        if status is None:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                # the leader is gone: give stragglers holding the pipes a moment, then stop
                deadline = min(deadline, time.monotonic() + 0.5)
    wall = time.monotonic() - t0
    if stopped or status is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    cg_stats = launch.cgroup.stats() if launch.cgroup else {}
    if launch.cgroup:
        launch.cgroup.kill()
    if status is None:
        _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = 0  # reaped by us; keep Popen from waiting again
    # drain what is buffered (bounded)
    for fobj, st_ in streams.items():
        with contextlib.suppress(OSError, ValueError):
            while True:
                data = os.read(fobj.fileno(), 65536)  # type: ignore[union-attr]
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
    cpu_user = rusage.ru_utime if rusage else 0.0
    cpu_sys = rusage.ru_stime if rusage else 0.0
    usage = Usage(
        wall_s=wall, cpu_user_s=cpu_user, cpu_sys_s=cpu_sys,
        max_rss_bytes=(rusage.ru_maxrss * 1024) if rusage else 0,
        memory_peak_bytes=cg_stats.get("memory_peak", 0), pids_peak=cg_stats.get("pids_peak", 0),
        disk_bytes=disk, stdout_bytes=out.total, stderr_bytes=err.total,
    )
    stderr_text = err.text(launch.secrets)
    error, message = _classify(launch, stopped, exit_code, sig, cg_stats, usage, stderr_text)
    return RunResult(
        stdout=out.text(launch.secrets), stderr=stderr_text, exit_code=exit_code,
        error=error, usage=usage, backend=launch.backend, signal=sig,
        truncated=out.total > out.cap or err.total > err.cap, message=message,
    )


def _classify(launch: Launch, stopped: ErrorKind | None, exit_code: int | None,
              sig: int | None, cg: dict[str, int], usage: Usage,
              stderr: str) -> tuple[ErrorKind | None, str]:
    limits = launch.limits
    if stopped is ErrorKind.OUTPUT_LIMIT:
        return stopped, "output exceeded the cap; the run was stopped"
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
    if launch.cgroup is None and "MemoryError" in stderr:
        return ErrorKind.MEMORY_LIMIT, "address-space limit reached (MemoryError)"
    if sig is not None:
        return ErrorKind.KILLED, f"killed by signal {sig}"
    return None, ""
