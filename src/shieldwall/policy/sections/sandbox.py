"""Policy section ``sandbox:`` — which backend runs agent code, with what limits, paths,
environment and network, per role and per tool (drives ``shieldwall.sandbox``).

Settings resolve section → ``roles.<role>`` → ``tools.<tool>``, each level overriding
the fields it sets. A run may ask for tighter limits, never looser ones.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BackendChoice = Literal["auto", "bwrap", "gvisor", "wasm", "process"]
Language = Literal["python", "sh"]
NetworkChoice = Literal["none", "proxy"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")
_MULT = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DUR = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_NEVER_BIND = ("/proc", "/sys", "/dev", "/run", "/boot")
_NEVER_RW = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/var", "/root", "/home")


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"64M"``, ``"1GiB"``, ``"512k"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "").lower()[:1]
            n = int(float(m.group(1)) * _MULT[unit])
            if n > 0:
                return n
    raise ValueError(f"invalid size {value!r}: use bytes or a string like '64M', '1G'")


def parse_seconds(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _DUR[m.group(2)]
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '2m'")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SandboxLimits(_Strict):
    """Limits of one run; unset fields inherit from the level above (or the built-in
    defaults: 10 s wall, 5 s CPU, 256M memory, 64 pids, 64M disk, 16M /tmp, 1M stdout)."""

    wall: float | None = Field(default=None, description="wall-clock seconds, or '30s'")
    cpu: float | None = Field(default=None, description="CPU seconds")
    memory: int | None = Field(default=None, description="bytes, or '256M'")
    pids: int | None = Field(default=None, ge=1, le=4096)
    disk: int | None = Field(default=None, description="work directory quota, bytes or '64M'")
    tmp: int | None = Field(default=None, description="/tmp and /dev/shm size each")  # noqa: S108
    file: int | None = Field(default=None, description="largest single file")
    open_files: int | None = Field(default=None, ge=16, le=65536)
    stdout: int | None = Field(default=None, description="stdout kept; more stops the run")
    stderr: int | None = None

    @field_validator("wall", "cpu", mode="before")
    @classmethod
    def _secs(cls, v: Any) -> float | None:
        return None if v is None else parse_seconds(v)

    @field_validator("memory", "disk", "tmp", "file", "stdout", "stderr", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> int | None:
        return None if v is None else parse_size(v)

    def as_limits_kwargs(self) -> dict[str, Any]:
        """Keys of ``shieldwall.sandbox.Limits`` for the fields set here."""
        names = {"wall": "wall_s", "cpu": "cpu_s", "memory": "memory_bytes", "pids": "pids",
                 "disk": "disk_bytes", "tmp": "tmp_bytes", "file": "file_bytes",
                 "open_files": "open_files", "stdout": "stdout_bytes",
                 "stderr": "stderr_bytes"}
        return {names[k]: v for k, v in self.model_dump().items() if v is not None}


def _check_paths(paths: list[str], rw: bool) -> list[str]:
    for p in paths:
        if not p.startswith("/") or "/../" in p + "/" or p.rstrip("/") == "":
            raise ValueError(f"sandbox paths must be absolute, without '..', and not '/': {p!r}")
        norm = p.rstrip("/")
        for bad in _NEVER_BIND + (_NEVER_RW if rw else ()):
            if norm == bad or norm.startswith(bad + "/"):
                raise ValueError(f"{p!r} may not be bound {'read-write ' if rw else ''}"
                                 "into a sandbox")
    return paths


class SandboxGrant(_Strict):
    """Settings for one role or one tool; unset fields inherit."""

    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    env: dict[str, str] = Field(
        default_factory=dict,
        description="variables set in the sandbox; values may be '{{secret:name/key}}' "
                    "placeholders, resolved at launch and redacted from the output")
    ro_paths: list[str] = Field(default_factory=list, description="host paths bound read-only")
    rw_paths: list[str] = Field(default_factory=list, description="host paths bound read-write")
    network: NetworkChoice | None = None
    languages: list[Language] | None = None
    workspaces: bool | None = Field(default=None,
                                    description="may use named persistent workspaces")

    @field_validator("ro_paths")
    @classmethod
    def _ro(cls, v: list[str]) -> list[str]:
        return _check_paths(v, rw=False)

    @field_validator("rw_paths")
    @classmethod
    def _rw(cls, v: list[str]) -> list[str]:
        return _check_paths(v, rw=True)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise ValueError(f"invalid environment variable name {k!r}")
            if k in ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP"):
                raise ValueError(f"{k} may not be granted to a sandbox")
        return v


class SandboxSection(SandboxGrant):
    """``sandbox:`` — defaults for every run plus per-role and per-tool grants.

    Who may run code at all is ``roles.<role>.code: true`` (and the tool, default
    ``run_code``, granted like any tool); this section says how.
    """

    backend: BackendChoice = Field(
        default="auto", description="auto = strongest available (gvisor > bwrap > wasm)")
    allow_weak: bool = Field(
        default=False, description="permit the 'process' backend (no isolation: rlimits only)")
    proxy_socket: str | None = Field(
        default=None, description="Unix socket of the egress proxy, for network: proxy")
    max_code_bytes: int = Field(default=1 << 20, ge=1)
    workspaces_dir: str | None = Field(default=None,
                                       description="where named workspaces live on the host")
    pool_size: int = Field(default=0, ge=0, le=64, description="warm sandboxes kept started")
    premake: bool = Field(
        default=True, description="bwrap: set the next run's sandbox up in the background, "
                                  "fresh for that run (shieldwall.sandbox.premade); false "
                                  "puts all of it on each run's clock")
    cgroup_root: str | None = Field(default=None,
                                    description="a delegated cgroup v2 directory, if needed")
    roles: dict[str, SandboxGrant] = Field(default_factory=dict)
    tools: dict[str, SandboxGrant] = Field(default_factory=dict)
