"""Sandboxed code execution: bubblewrap + seccomp + cgroups by default, gVisor and WASI
backends, a weak process fallback, warm pools and persistent workspaces.

See :mod:`shieldwall.sandbox.protocol` for what each backend guarantees.
"""

from __future__ import annotations

from .api import Sandbox
from .backends import doctor, get, select
from .stdio import STDIO_LIMITS, wrap_command
from .types import (
    Backend,
    ErrorKind,
    Limits,
    RunResult,
    RunSpec,
    SandboxError,
    Usage,
    WeakSandboxRefused,
)

__all__ = [
    "STDIO_LIMITS", "Backend", "ErrorKind", "Limits", "RunResult", "RunSpec", "Sandbox",
    "SandboxError", "Usage", "WeakSandboxRefused", "doctor", "get", "select", "wrap_command",
]
