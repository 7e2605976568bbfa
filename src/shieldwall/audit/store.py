"""The storage boundary of the audit log, and the in-memory store.

A store keeps three things: the entries (leaf bytes, their leaf hash, and a few columns
copied out of the entry for queries), the signed tree heads, and the writer state (tree
size and frontier). It does no hashing of its own; ``log.MerkleAuditLog`` does.

Contract every store keeps:

- ``begin()`` takes the log's single writer lock (SQLite ``BEGIN IMMEDIATE``, PostgreSQL
  a row lock on the state row) and returns the state *read inside the lock*, so writers
  in many processes or hosts extend one tree, one after another.
- ``commit(rows, state, head)`` writes the rows, the new state and optionally a head in
  that same transaction and returns only once the transaction is durable. Nothing is
  durable before it returns; everything is after.
- ``rollback()`` abandons the open transaction and releases the lock.

Columns are copies for indexing only: the leaf bytes are the record. Queries re-check
every hit against its leaf, and ``verify`` checks every column against its leaf.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .signing import TreeHead


class Row(NamedTuple):
    seq: int
    leaf: bytes
    leaf_hash: bytes
    time: float | None
    session: str | None
    agent: str | None
    tool: str | None
    verdict: str | None
    kind: str | None
    event: str | None
    rules: str  # "|rule.a|rule.b|", or "" when there are no findings


COLUMNS = ("time", "session", "agent", "tool", "verdict", "kind", "event", "rules")


@dataclass(slots=True)
class WriterState:
    """Read under the writer lock: size, frontier bytes and the newest head's size/time."""

    size: int
    frontier: bytes
    head_size: int
    head_timestamp_ms: int


def entry_time(v: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string (naive = UTC)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            t = _dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.UTC)
        return t.timestamp()
    return None


def columns_of(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """The query columns of one entry, in ``COLUMNS`` order."""
    g = entry.get
    findings = g("findings")
    rules = ""
    if findings and isinstance(findings, (list, tuple)):
        ids = [str(f["rule"]) for f in findings if isinstance(f, Mapping) and f.get("rule") is not None]
        if ids:
            rules = "|" + "|".join(ids) + "|"
    t = g("time")
    return (
        float(t) if type(t) is float or type(t) is int else entry_time(t),
        *[v if v is None or type(v) is str else str(v)
          for v in (g("session"), g("agent"), g("tool"), g("verdict"), g("kind"), g("event"))],
        rules,
    )


@dataclass(slots=True)
class Query:
    """Filters for ``audit query``; every field that is set must match."""

    session: str | None = None
    agent: str | None = None
    tool: str | None = None
    verdict: str | None = None
    rule: str | None = None
    kind: str | None = None
    event: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None
    descending: bool = False

    def matches(self, entry: Mapping[str, Any]) -> bool:
        time, session, agent, tool, verdict, kind, event, rules = columns_of(entry)
        for want, got in ((self.session, session), (self.agent, agent), (self.tool, tool),
                          (self.verdict, verdict), (self.kind, kind), (self.event, event)):
            if want is not None and want != got:
                return False
        if self.rule is not None and f"|{self.rule}|" not in rules:
            return False
        if self.since is not None and (time is None or time < self.since):
            return False
        return not (self.until is not None and (time is None or time > self.until))

    def sql_where(self, placeholder: str) -> tuple[str, list[Any]]:
        """A WHERE clause over the columns (a pre-filter; hits are re-checked)."""
        parts: list[str] = []
        params: list[Any] = []
        for col in ("session", "agent", "tool", "verdict", "kind", "event"):
            v = getattr(self, col)
            if v is not None:
                parts.append(f"{col} = {placeholder}")
                params.append(v)
        if self.rule is not None:
            parts.append(f"rules LIKE {placeholder}")
            params.append("%|" + self.rule + "|%")  # LIKE may over-match: hits are re-checked
        if self.since is not None:
            parts.append(f"time >= {placeholder}")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"time <= {placeholder}")
            params.append(self.until)
        return (" WHERE " + " AND ".join(parts)) if parts else "", params


class Store(Protocol):
    """Where a Merkle audit log keeps its bytes (see the module docstring)."""

    log_id: str
    describe: str

    def begin(self) -> WriterState: ...
    def commit(self, rows: list[Row], size: int, frontier: bytes, head: TreeHead | None) -> None: ...
    def rollback(self) -> None: ...
    def write_head(self, head: TreeHead) -> None: ...

    def size(self) -> int: ...
    def heads(self) -> list[TreeHead]: ...
    def iter_leaves(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, bytes]]: ...
    def iter_rows(self, start: int = 0, end: int | None = None) -> Iterator[Row]: ...
    def leaf_hashes(self, end: int | None = None) -> list[bytes]: ...
    def get(self, seq: int) -> Row | None: ...
    def query(self, q: Query) -> Iterator[Row]: ...
    def close(self) -> None: ...


class MemoryStore:
    """A store in process memory: for tests and for ``store: memory``. Not durable."""

    describe = "memory"

    def __init__(self, log_id: str = "memory") -> None:
        self.log_id = log_id
        self.rows: list[Row] = []
        self._heads: dict[int, TreeHead] = {}
        self._size = 0
        self._frontier = b""

    def begin(self) -> WriterState:
        last = max(self._heads.values(), key=lambda h: h.tree_size, default=None)
        return WriterState(self._size, self._frontier,
                           last.tree_size if last else 0, last.timestamp_ms if last else 0)

    def commit(self, rows: list[Row], size: int, frontier: bytes, head: TreeHead | None) -> None:
        self.rows.extend(rows)
        self._size, self._frontier = size, frontier
        if head is not None:
            self._heads.setdefault(head.tree_size, head)

    def rollback(self) -> None:
        pass

    def write_head(self, head: TreeHead) -> None:
        self._heads.setdefault(head.tree_size, head)

    def size(self) -> int:
        return self._size

    def heads(self) -> list[TreeHead]:
        return [self._heads[k] for k in sorted(self._heads)]

    def iter_leaves(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        for r in self.rows[start:end]:
            yield r.seq, r.leaf, r.leaf_hash

    def iter_rows(self, start: int = 0, end: int | None = None) -> Iterator[Row]:
        yield from self.rows[start:end]

    def leaf_hashes(self, end: int | None = None) -> list[bytes]:
        return [r.leaf_hash for r in self.rows[:end]]

    def get(self, seq: int) -> Row | None:
        return self.rows[seq] if 0 <= seq < len(self.rows) else None

    def query(self, q: Query) -> Iterator[Row]:
        rows = reversed(self.rows) if q.descending else iter(self.rows)
        n = 0
        for r in rows:
            if q.limit is not None and n >= q.limit:
                return
            if _row_matches(r, q):
                n += 1
                yield r

    def close(self) -> None:
        pass


def _row_matches(r: Row, q: Query) -> bool:
    for col in ("session", "agent", "tool", "verdict", "kind", "event"):
        v = getattr(q, col)
        if v is not None and getattr(r, col) != v:
            return False
    if q.rule is not None and f"|{q.rule}|" not in r.rules:
        return False
    if q.since is not None and (r.time is None or r.time < q.since):
        return False
    return not (q.until is not None and (r.time is None or r.time > q.until))
