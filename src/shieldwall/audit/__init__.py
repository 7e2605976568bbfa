"""Audit trail. (Stub written by the lead: the audit room replaces it, keeping
``AuditLog`` and ``open_audit``'s signatures.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..policy.sections.audit import AuditSection


class AuditLog(Protocol):
    """Where the gate writes one entry per decision and per action outcome."""

    def append(self, entry: dict[str, Any]) -> int:
        """Write one entry; return its sequence number once it is durable."""
        ...

    def close(self) -> None: ...


class MemoryAuditLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, entry: dict[str, Any]) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1

    def close(self) -> None:
        pass


def open_audit(section: AuditSection, base_dir: Path, *, redact: Any = None) -> AuditLog:
    return MemoryAuditLog()
