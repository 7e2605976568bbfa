"""Tamper-evident audit trail: every gate decision and outcome as a leaf of a signed
Merkle tree (RFC 9162 hashing), in SQLite (default) or PostgreSQL.

``open_audit(section, base_dir)`` gives the gate its ``AuditLog``. The concrete log,
``MerkleAuditLog``, also offers ``append(entry, durable=...)``, ``append_many``,
``flush()`` and ``sign_head()``; ``log.py`` states the durability contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..policy.sections.audit import AuditSection
from .log import AuditError, MerkleAuditLog, open_log
from .signing import HeadSigner, TreeHead
from .store import MemoryStore, Store

__all__ = [
    "AuditError",
    "AuditLog",
    "HeadSigner",
    "MemoryAuditLog",
    "MerkleAuditLog",
    "NullAuditLog",
    "TreeHead",
    "open_audit",
    "open_signer",
    "open_store",
]


class AuditLog(Protocol):
    """Where the gate writes one entry per decision and per action outcome."""

    def append(self, entry: dict[str, Any]) -> int | None:
        """Write one entry; return its sequence number, or ``None`` where numbers are
        given at commit (``audit.sequence: commit``). See ``log.py`` for when it is
        durable: at once with ``durable_each``, else at batch commit / ``flush()``."""
        ...

    def close(self) -> None: ...


class MemoryAuditLog:
    """A plain list, for tests of other rooms that only need to see what was written."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, entry: dict[str, Any], *, durable: bool | None = None) -> int:
        self.entries.append(entry)
        return len(self.entries) - 1

    def flush(self) -> int:
        return len(self.entries)

    def close(self) -> None:
        pass


class NullAuditLog:
    """``audit.enabled: false``: nothing is written; every append returns -1."""

    def append(self, entry: dict[str, Any], *, durable: bool | None = None) -> int:
        return -1

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_store(section: AuditSection, base_dir: Path) -> Store:
    """The store the section names (the log's bytes, without a writer)."""
    if section.store == "sqlite":
        from .sqlite_store import SQLiteStore

        return SQLiteStore(Path(base_dir) / section.path, synchronous=section.sqlite_synchronous,
                           busy_timeout_ms=section.busy_timeout_ms)
    if section.store == "postgres":
        if not section.dsn:
            raise AuditError("audit.store is postgres but audit.dsn is not set")
        from .postgres_store import PostgresStore

        return PostgresStore(section.dsn, section.pg_schema)
    if section.store == "memory":
        return MemoryStore()
    raise AuditError(f"unknown audit.store {section.store!r}: use sqlite, postgres or memory")


def open_signer(section: AuditSection, base_dir: Path) -> HeadSigner:
    """The head-signing key (created on first use, mode 0600)."""
    if section.store == "memory":
        return HeadSigner.generate()
    return HeadSigner.load_or_create(Path(base_dir) / section.key_path)


def open_audit(
    section: AuditSection,
    base_dir: Path,
    *,
    redact: Callable[[str], str] | None = None,
    clock: Callable[[], float] = time.time,
) -> AuditLog:
    """The audit log a ``Shieldwall`` writes to.

    ``redact`` is the secrets room's live-secret redactor, applied to every string of
    every entry before it is written (on top of the ``redact_fields`` key rules).
    """
    if not section.enabled:
        return NullAuditLog()
    return open_log(open_store(section, base_dir), open_signer(section, base_dir), section,
                    redact=redact, clock=clock)
