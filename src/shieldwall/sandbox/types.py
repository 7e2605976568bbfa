"""Values the sandbox room passes around: limits, results, error kinds, the backend contract."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

MiB = 1024 * 1024

NetworkMode = Literal["none", "proxy"]


class ErrorKind(enum.StrEnum):
    """Why a run did not finish on its own. ``None`` on a result means it did."""

    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    PIDS_LIMIT = "pids_limit"
    OUTPUT_LIMIT = "output_limit"
    DISK_LIMIT = "disk_limit"
    KILLED = "killed"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds of one run. Every backend enforces ``wall_s`` and the output caps;
    the rest as its guarantees say (see :mod:`shieldwall.sandbox.protocol`)."""

    wall_s: float = 10.0  # wall-clock, enforced by the parent
    cpu_s: float = 5.0  # CPU seconds (RLIMIT_CPU per process; fuel on wasm)
    memory_bytes: int = 256 * MiB  # cgroup memory (or RLIMIT_AS without a cgroup)
    pids: int = 64  # processes + threads (pids cgroup)
    disk_bytes: int = 64 * MiB  # the work directory's quota
    tmp_bytes: int = 16 * MiB  # /tmp and /dev/shm, each a tmpfs of this size
    file_bytes: int = 64 * MiB  # RLIMIT_FSIZE: largest file a process may write
    open_files: int = 256  # RLIMIT_NOFILE
    stdout_bytes: int = 1 * MiB  # kept of each stream; a run that writes more is stopped
    stderr_bytes: int = 256 * 1024

    def merged(self, overrides: Mapping[str, Any] | None) -> Limits:
        """These limits with ``overrides`` applied; unknown keys are refused."""
        if not overrides:
            return self
        unknown = set(overrides) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown sandbox limits: {sorted(unknown)}")
        return replace(self, **dict(overrides))

    def capped_by(self, ceiling: Limits) -> Limits:
        """Each field the smaller of this and ``ceiling`` (a request can only tighten)."""
        return Limits(**{k: min(getattr(self, k), getattr(ceiling, k))
                         for k in self.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class Usage:
    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    max_rss_bytes: int = 0  # the largest single process
    memory_peak_bytes: int = 0  # whole run, from the cgroup when there is one
    pids_peak: int = 0
    disk_bytes: int = 0  # work directory at the end of the run
    stdout_bytes: int = 0  # written by the program, before truncation
    stderr_bytes: int = 0
    fuel: int = 0  # wasm only


@dataclass(frozen=True, slots=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when the run was stopped by a signal or never started
    error: ErrorKind | None = None
    usage: Usage = field(default_factory=Usage)
    backend: str = ""
    signal: int | None = None
    truncated: bool = False
    message: str = ""  # why, for the operator (what limit, which backend failure)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code,
            "error": self.error.value if self.error else None, "backend": self.backend,
            "signal": self.signal, "truncated": self.truncated, "message": self.message,
            "usage": {k: getattr(self.usage, k) for k in self.usage.__dataclass_fields__},
        }


class SandboxError(Exception):
    """The sandbox could not be set up (backend missing, refused by policy, bad request)."""


class WeakSandboxRefused(SandboxError):
    """The ``process`` backend was asked for without ``allow_weak``."""


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run as a backend sees it: what to execute and with what around it."""

    argv: Sequence[str]
    workdir: str  # host path of the work directory (bound read-write)
    limits: Limits
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    ro_paths: Sequence[str] = ()
    rw_paths: Sequence[str] = ()
    network: NetworkMode = "none"
    proxy_socket: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)
    extra_fds: Sequence[int] = ()  # inherited by the command; argv names them @fd2, @fd3...
    host_uid: int | None = None  # host uid (and gid) the run drops to, when started as root


@runtime_checkable
class Backend(Protocol):
    """One isolation technology. ``guarantees`` lists what it enforces (names from
    :data:`shieldwall.sandbox.protocol.GUARANTEES`); tests run the subset it claims."""

    name: str
    strength: int  # higher is stronger; auto-selection picks the highest available
    guarantees: frozenset[str]
    python: str  # the interpreter path inside the sandbox

    def available(self) -> tuple[bool, str]: ...

    def execute(self, spec: RunSpec) -> RunResult: ...
