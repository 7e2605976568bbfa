"""PostgreSQL audit store: one log shared by gateway workers on many hosts.

Tables live in their own schema (``audit.pg_schema``). Writers serialise on a row lock:
``begin()`` reads the single ``state`` row ``FOR UPDATE``, so the tree size and frontier
it sees are the ones the previous writer committed, and no other writer can extend the
tree until this transaction ends. (A transaction-scoped advisory lock would do the same;
the row lock ties the lock to the data it protects.) A commit returns once PostgreSQL
has made it durable (``synchronous_commit`` on, the server default). Rows go in with
``COPY`` so that a batch costs one round trip.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from .signing import TreeHead
from .store import Query, Row, WriterState

# connections inherited across fork(): kept referenced so they are never closed in the child
_ABANDONED: list[object] = []

_ROW_COLS = ("seq", "leaf", "leaf_hash", "time", "session", "agent", "tool", "verdict", "kind",
             "event", "rules")


class PostgresStore:
    def __init__(self, dsn: str, schema: str = "shieldwall_audit") -> None:
        self.schema = schema
        self.describe = f"postgres:{schema}"
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] = self._connect()
        self._s = sql.Identifier(schema)
        self._in_snapshot = False
        s = self._s
        row = self._conn.execute("SELECT to_regclass(%s)", (f'"{schema}".meta',)).fetchone()
        if row is not None and row[0] is not None:
            row = self._conn.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = 'log_id'").format(s)).fetchone()
        self._conn.rollback()
        if row is not None and row[0] is not None:
            self.log_id: str = row[0]
            return
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"shieldwall_audit:{schema}",))
            for stmt in (
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.meta (key text PRIMARY KEY, value text NOT NULL)").format(s),
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.state (id int PRIMARY KEY CHECK (id = 1), "
                        "size bigint NOT NULL, frontier bytea NOT NULL)").format(s),
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.entries (seq bigint PRIMARY KEY, leaf bytea NOT NULL, "
                        "leaf_hash bytea NOT NULL, time double precision, session text, agent text, "
                        "tool text, verdict text, kind text, event text, rules text NOT NULL)").format(s),
                sql.SQL("CREATE INDEX IF NOT EXISTS entries_session ON {}.entries (session)").format(s),
                sql.SQL("CREATE INDEX IF NOT EXISTS entries_time ON {}.entries (time)").format(s),
                sql.SQL("CREATE TABLE IF NOT EXISTS {}.heads (tree_size bigint PRIMARY KEY, root bytea NOT NULL, "
                        "timestamp_ms bigint NOT NULL, key_id text NOT NULL, signature bytea NOT NULL, "
                        "log_id text NOT NULL)").format(s),
            ):
                self._conn.execute(stmt)
            self._conn.execute(sql.SQL("INSERT INTO {}.meta VALUES ('log_id', %s) ON CONFLICT DO NOTHING").format(s),
                               (uuid.uuid4().hex,))
            self._conn.execute(sql.SQL("INSERT INTO {}.state VALUES (1, 0, '') ON CONFLICT DO NOTHING").format(s))
            row = self._conn.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = 'log_id'").format(s)).fetchone()
        assert row is not None
        self.log_id = row[0]

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = psycopg.connect(self._dsn, autocommit=False)
        row = conn.execute("SHOW synchronous_commit").fetchone()
        if row is not None and row[0] == "off":
            # an acknowledged entry must be durable: never let this session ack early
            conn.execute("SET synchronous_commit = on")
        conn.commit()
        return conn

    def reopen_after_fork(self) -> None:
        """The parent's socket must stay the parent's: closing it here would end the
        parent's session. Point this process's copy of the descriptor at /dev/null, so
        that even its eventual close sends nothing down the parent's socket."""
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, self._conn.fileno())
            os.close(devnull)
        _ABANDONED.append(self._conn)
        self._conn = self._connect()

    def _t(self, name: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(self._s, sql.Identifier(name))

    # ----------------------------------------------------------------- writing

    def begin(self) -> WriterState:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()  # the server restarted or the link dropped
        c = self._conn
        try:
            size, frontier = c.execute(
                sql.SQL("SELECT size, frontier FROM {} WHERE id = 1 FOR UPDATE").format(self._t("state"))
            ).fetchone() or (0, b"")
            h = c.execute(
                sql.SQL("SELECT tree_size, timestamp_ms FROM {} ORDER BY tree_size DESC LIMIT 1").format(
                    self._t("heads"))
            ).fetchone()
        except BaseException:
            c.rollback()
            raise
        return WriterState(int(size), bytes(frontier), int(h[0]) if h else 0, int(h[1]) if h else 0)

    def commit(self, rows: list[Row], size: int, frontier: bytes, head: TreeHead | None) -> None:
        c = self._conn
        with c.cursor() as cur:
            if rows:
                copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    self._t("entries"), sql.SQL(", ").join(map(sql.Identifier, _ROW_COLS)))
                with cur.copy(copy_sql) as cp:
                    for r in rows:
                        cp.write_row(r)
            cur.execute(sql.SQL("UPDATE {} SET size = %s, frontier = %s WHERE id = 1").format(self._t("state")),
                        (size, frontier))
            if head is not None:
                self._insert_head(cur, head)
        c.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def _insert_head(self, cur: psycopg.Cursor[Any], head: TreeHead) -> None:
        cur.execute(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING").format(
                self._t("heads")),
            (head.tree_size, head.root, head.timestamp_ms, head.key_id, head.signature, head.log_id),
        )

    def write_head(self, head: TreeHead) -> None:
        with self._conn.cursor() as cur:
            self._insert_head(cur, head)
        self._conn.commit()

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self._conn.rollback()
        self._conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        self._in_snapshot = True
        try:
            yield
        finally:
            self._in_snapshot = False
            self._conn.rollback()

    def _done_reading(self) -> None:
        if not self._in_snapshot:
            self._conn.rollback()

    def _all(self, query: sql.Composed, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        try:
            return list(self._conn.execute(query, params).fetchall())
        finally:
            self._done_reading()

    def size(self) -> int:
        rows = self._all(sql.SQL("SELECT size FROM {} WHERE id = 1").format(self._t("state")))
        return int(rows[0][0])

    def heads(self) -> list[TreeHead]:
        rows = self._all(sql.SQL(
            "SELECT log_id, tree_size, root, timestamp_ms, key_id, signature FROM {} ORDER BY tree_size"
        ).format(self._t("heads")))
        return [TreeHead(a, int(b), bytes(c), int(d), e, bytes(f)) for a, b, c, d, e, f in rows]

    def _stream(self, query: sql.Composed, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        try:
            with self._conn.cursor(name=f"audit_{uuid.uuid4().hex[:12]}") as cur:
                cur.itersize = 5000
                cur.execute(query, params)
                yield from cur
        finally:
            self._done_reading()

    def _range(self, cols: str, start: int, end: int | None) -> Iterator[tuple[Any, ...]]:
        q = sql.SQL("SELECT " + cols + " FROM {} WHERE seq >= %s").format(  # noqa: S608 - fixed columns
            self._t("entries"))
        params: list[Any] = [start]
        if end is not None:
            q = q + sql.SQL(" AND seq < %s")
            params.append(end)
        return self._stream(q + sql.SQL(" ORDER BY seq"), params)

    def iter_leaves(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        yield from self._range("seq, leaf, leaf_hash", start, end)

    def iter_rows(self, start: int = 0, end: int | None = None) -> Iterator[Row]:
        for r in self._range(", ".join(_ROW_COLS), start, end):
            yield Row(*r)

    def leaf_hashes(self, end: int | None = None) -> list[bytes]:
        return [lh for _, _, lh in self._range("seq, NULL::bytea, leaf_hash", 0, end)]

    def get(self, seq: int) -> Row | None:
        rows = self._all(sql.SQL("SELECT " + ", ".join(_ROW_COLS) + " FROM {} WHERE seq = %s").format(  # noqa: S608
            self._t("entries")), (seq,))
        return Row(*rows[0]) if rows else None

    def query(self, q: Query) -> Iterator[Row]:
        where, params = q.sql_where("%s")
        order = "DESC" if q.descending else "ASC"
        # where holds only fixed column names and placeholders (Query.sql_where)
        text = "SELECT " + ", ".join(_ROW_COLS) + " FROM {}" + where + " ORDER BY seq " + order  # noqa: S608
        query = sql.SQL(text).format(
            self._t("entries"))
        for r in self._stream(query, params):
            yield Row(*r)

    def execute(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Raw SQL with ``{schema}`` substituted, for tests that play the attacker."""
        text = query.replace("{schema}", '"' + self.schema + '"')
        cur = self._conn.execute(text.encode(), params)
        rows = cur.fetchall() if cur.description else []
        self._conn.commit()
        return [tuple(r) for r in rows]

    def drop(self) -> None:
        """Drop the schema and everything in it (tests clean up with this)."""
        self._conn.rollback()
        self._conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(self._s))
        self._conn.commit()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.rollback()
        self._conn.close()
