"""SQLite audit store: the embedded default, one file under ``.shieldwall/``.

WAL journal, so readers (``audit verify``, queries) never block the writer. Writers in
several processes serialise on ``BEGIN IMMEDIATE``; the tree size and frontier are read
inside that transaction, so they extend one tree. ``synchronous=FULL`` by default: in
WAL mode that fsyncs the WAL at every commit, so a committed (acknowledged) batch
survives power loss as well as a killed process. ``NORMAL`` skips that fsync: commits
still survive a process crash (the WAL is in the OS cache) but the last ones may be lost
on power loss. Batching makes either cheap: one commit (one fsync) per batch.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .signing import TreeHead
from .store import Query, Row, WriterState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    frontier BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    time REAL,
    session TEXT,
    agent TEXT,
    tool TEXT,
    verdict TEXT,
    kind TEXT,
    event TEXT,
    rules TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_session ON entries (session);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS heads (
    tree_size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature BLOB NOT NULL,
    log_id TEXT NOT NULL
);
"""

_ROW_COLS = "seq, leaf, leaf_hash, time, session, agent, tool, verdict, kind, event, rules"
# SQLite columns are dynamically typed: whatever type a row was rewritten with, read bytes
_SELECT_COLS = ("seq, CAST(leaf AS BLOB), CAST(leaf_hash AS BLOB), time, session, agent, tool, verdict, "
                "kind, event, rules")


class SQLiteStore:
    def __init__(self, path: str | Path, *, synchronous: str = "full",
                 busy_timeout_ms: int = 30000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.describe = f"sqlite:{self.path}"
        if synchronous.lower() not in ("full", "normal"):
            raise ValueError("synchronous must be 'full' or 'normal'")
        self._synchronous = synchronous.upper()
        self._db = self._connect(busy_timeout_ms)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._busy_timeout = busy_timeout_ms / 1000
        if not self._initialised():
            # only creating the schema needs the writer lock: readers open a busy log freely
            self._begin_immediate()
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('log_id', ?)", (uuid.uuid4().hex,))
                self._db.execute("INSERT OR IGNORE INTO state VALUES (1, 0, x'')")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        row = self._db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        self.log_id: str = row[0]

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=busy_timeout_ms / 1000)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Switching a new file to WAL takes an exclusive lock, and SQLite answers "locked"
        # at once (no busy handler) while another process does the same: several workers
        # opening one new log at start-up. Retry; once in WAL the file stays so.
        deadline = time.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.002 + 0.008 * random.random())
        db.execute(f"PRAGMA synchronous = {self._synchronous}")
        return db

    def reopen_after_fork(self) -> None:
        """A connection must not cross fork(). SQLite keeps per-file lock state in process
        memory, so the copy inherited from the parent (perhaps mid-transaction) would make
        every new connection here look locked: close it first. POSIX locks are not
        inherited, so closing releases nothing of the parent's, and in WAL mode a
        rollback touches no file the parent relies on."""
        with contextlib.suppress(Exception):
            self._db.close()
        self._db = self._connect(self._busy_timeout_ms)

    def _initialised(self) -> bool:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        except sqlite3.OperationalError:
            return False
        return row is not None

    # ----------------------------------------------------------------- writing

    def _begin_immediate(self) -> None:
        """BEGIN IMMEDIATE, retried with short sleeps.

        SQLite's own busy handler backs off to 100 ms sleeps, which starves writers that
        take turns batch by batch; polling at 0.2-5 ms keeps the hand-over quick.
        """
        db = self._db
        db.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = time.monotonic() + self._busy_timeout
            delay = 0.0002
            while True:
                try:
                    db.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    if time.monotonic() > deadline:
                        raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.005)
        finally:
            db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")

    def begin(self) -> WriterState:
        self._begin_immediate()
        try:
            size, frontier = self._db.execute("SELECT size, frontier FROM state WHERE id = 1").fetchone()
            h = self._db.execute(
                "SELECT tree_size, timestamp_ms FROM heads ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return WriterState(size, bytes(frontier), h[0] if h else 0, h[1] if h else 0)

    def commit(self, rows: list[Row], size: int, frontier: bytes, head: TreeHead | None) -> None:
        db = self._db
        if rows:
            db.executemany(f"INSERT INTO entries ({_ROW_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)  # noqa: S608 - constant columns
        db.execute("UPDATE state SET size = ?, frontier = ? WHERE id = 1", (size, frontier))
        if head is not None:
            self._insert_head(head)
        db.execute("COMMIT")

    def rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _insert_head(self, head: TreeHead) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO heads VALUES (?,?,?,?,?,?)",
            (head.tree_size, head.root, head.timestamp_ms, head.key_id, head.signature, head.log_id),
        )

    def write_head(self, head: TreeHead) -> None:
        with self._write():
            self._insert_head(head)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self._begin_immediate()
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: everything read inside sees the same log."""
        self._db.execute("BEGIN")
        try:
            # a read transaction starts at its first read
            self._db.execute("SELECT size FROM state WHERE id = 1").fetchone()
            yield
        finally:
            self._db.execute("COMMIT")

    def size(self) -> int:
        row = self._db.execute("SELECT size FROM state WHERE id = 1").fetchone()
        return int(row[0])

    def heads(self) -> list[TreeHead]:
        cur = self._db.execute(
            "SELECT log_id, tree_size, root, timestamp_ms, key_id, signature FROM heads ORDER BY tree_size"
        )
        return [TreeHead(a, b, bytes(c), d, e, bytes(f)) for a, b, c, d, e, f in cur]

    def iter_leaves(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        sql = "SELECT seq, CAST(leaf AS BLOB), CAST(leaf_hash AS BLOB) FROM entries WHERE seq >= ?"
        params: list[int] = [start]
        if end is not None:
            sql += " AND seq < ?"
            params.append(end)
        cur = self._db.execute(sql + " ORDER BY seq", params)
        while True:
            batch = cur.fetchmany(4096)
            if not batch:
                return
            yield from batch

    def iter_rows(self, start: int = 0, end: int | None = None) -> Iterator[Row]:
        sql = f"SELECT {_SELECT_COLS} FROM entries WHERE seq >= ?"  # noqa: S608 - constant columns
        params: list[int] = [start]
        if end is not None:
            sql += " AND seq < ?"
            params.append(end)
        cur = self._db.execute(sql + " ORDER BY seq", params)
        while True:
            batch = cur.fetchmany(4096)
            if not batch:
                return
            for r in batch:
                yield Row(*r)

    def leaf_hashes(self, end: int | None = None) -> list[bytes]:
        if end is None:
            cur = self._db.execute("SELECT CAST(leaf_hash AS BLOB) FROM entries ORDER BY seq")
        else:
            cur = self._db.execute("SELECT CAST(leaf_hash AS BLOB) FROM entries WHERE seq < ? ORDER BY seq", (end,))
        return [r[0] for r in cur]

    def get(self, seq: int) -> Row | None:
        r = self._db.execute(f"SELECT {_SELECT_COLS} FROM entries WHERE seq = ?",  # noqa: S608
                             (seq,)).fetchone()
        return Row(*r) if r else None

    def query(self, q: Query) -> Iterator[Row]:
        where, params = q.sql_where("?")
        order = "DESC" if q.descending else "ASC"
        # where holds only fixed column names and placeholders (Query.sql_where)
        cur = self._db.execute(f"SELECT {_SELECT_COLS} FROM entries{where} ORDER BY seq {order}",  # noqa: S608
                               params)
        for r in cur:
            yield Row(*r)

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Raw SQL, for tests that play the attacker and for maintenance."""
        return list(self._db.execute(sql, params))

    def close(self) -> None:
        self.rollback()
        self._db.close()
