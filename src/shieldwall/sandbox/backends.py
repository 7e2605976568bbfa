"""Backend registry, auto-selection and the doctor's report."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .types import Backend, SandboxError, WeakSandboxRefused

NAMES = ("gvisor", "bwrap", "wasm", "process")


@functools.cache
def _make(name: str, cgroup_root: str | None) -> Backend:
    if name == "bwrap":
        from .bwrap import BwrapBackend

        return BwrapBackend(cgroup_root)
    if name == "gvisor":
        from .gvisor import GvisorBackend

        return GvisorBackend()
    if name == "wasm":
        from .wasm import WasmBackend

        return WasmBackend()
    if name == "process":
        from .process import ProcessBackend

        return ProcessBackend(cgroup_root)
    raise SandboxError(f"unknown sandbox backend {name!r}; choose one of {', '.join(NAMES)}")


def get(name: str, *, allow_weak: bool = False, cgroup_root: str | None = None,
        needs: frozenset[str] = frozenset()) -> Backend:
    """The backend ``name`` ("auto" = strongest available that claims every guarantee in
    ``needs``), or :class:`SandboxError`."""
    if name == "auto":
        return select(allow_weak=allow_weak, cgroup_root=cgroup_root, needs=needs)
    if name == "process" and not allow_weak:
        raise WeakSandboxRefused(
            "the 'process' backend is not isolation; set sandbox.allow_weak: true to use it")
    b = _make(name, cgroup_root)
    ok, why = b.available()
    if not ok:
        raise SandboxError(f"sandbox backend {name!r} is not available: {why}")
    missing = needs - b.guarantees
    if missing:
        raise SandboxError(f"sandbox backend {name!r} does not provide {sorted(missing)}")
    return b


def select(*, allow_weak: bool = False, cgroup_root: str | None = None,
           needs: frozenset[str] = frozenset()) -> Backend:
    reasons = []
    for name in NAMES:  # strongest first
        if name == "process" and not allow_weak:
            reasons.append("process: refused (sandbox.allow_weak is false)")
            continue
        b = _make(name, cgroup_root)
        missing = needs - b.guarantees
        if missing:
            reasons.append(f"{name}: lacks {', '.join(sorted(missing))}")
            continue
        ok, why = b.available()
        if ok:
            return b
        reasons.append(f"{name}: {why}")
    raise SandboxError("no sandbox backend is available here: " + "; ".join(reasons))


@dataclass(frozen=True, slots=True)
class DoctorLine:
    name: str
    available: bool
    detail: str
    strength: int
    guarantees: frozenset[str]


def doctor(cgroup_root: str | None = None) -> list[DoctorLine]:
    out = []
    for name in NAMES:
        try:
            b = _make(name, cgroup_root)
            ok, why = b.available()
            out.append(DoctorLine(name, ok, why, b.strength, b.guarantees))
        except Exception as e:  # a backend that cannot even be built is "not available"
            out.append(DoctorLine(name, False, f"error: {e}", 0, frozenset()))
    return out
