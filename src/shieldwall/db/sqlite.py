"""SQLite connections guarded by the authorizer callback (``sqlite3_set_authorizer``).

SQLite asks the authorizer about every action while it compiles a statement — each
table and column read, each write, each function, pragma, attach and schema change, also
inside CTEs, triggers and views — so a statement cannot hide a write from it. Per scope:

* ``read-only``: SELECT, column reads, recursive CTEs, transactions, a short list of
  introspection pragmas and an allow-list of pure functions. Defence in depth: the file is
  opened with ``mode=ro``, ``PRAGMA query_only`` is set, and attaching is limited to 0.
* ``read-write``: adds INSERT, UPDATE and CREATE TABLE/INDEX/VIEW; refuses DELETE, every
  DROP, ALTER, triggers, virtual tables, ATTACH/DETACH and pragma writes.
* ``admin``: everything except ATTACH/DETACH (writes other files) and unsafe functions.
* ``none``: nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .scope import SCOPES, ScopeError, check_statement

A = sqlite3
_READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "collation_list", "database_list",
})
_UNSAFE_FUNCTIONS = frozenset({
    "load_extension", "writefile", "readfile", "edit", "fts3_tokenizer", "sqlite_dbpage",
    "zipfile", "sqlar_compress", "sqlar_uncompress", "shell_add_schema", "sha3_query",
})
# Pure built-ins a read-only agent may call (SQLite core, date/time, JSON, math, window).
SAFE_FUNCTIONS = frozenset("""
abs char coalesce concat concat_ws format glob hex ifnull iif instr length like likelihood
likely lower ltrim max min nullif octet_length printf quote random randomblob replace round
rtrim sign soundex sqlite_version substr substring trim typeof unhex unicode unlikely upper
zeroblob avg count group_concat string_agg sum total date time datetime julianday unixepoch
strftime timediff json json_array json_array_length json_extract json_insert json_object
json_patch json_remove json_replace json_set json_type json_valid json_quote json_group_array
json_group_object json_each json_tree jsonb json_pretty acos acosh asin asinh atan atan2
atanh ceil ceiling cos cosh degrees exp floor ln log log10 log2 mod pi pow power radians sin
sinh sqrt tan tanh trunc row_number rank dense_rank percent_rank cume_dist ntile lag lead
first_value last_value nth_value
""".split())

_READ_ACTIONS = frozenset({A.SQLITE_SELECT, A.SQLITE_READ, A.SQLITE_RECURSIVE,
                           A.SQLITE_TRANSACTION, A.SQLITE_SAVEPOINT})
_RW_EXTRA = frozenset({A.SQLITE_INSERT, A.SQLITE_UPDATE, A.SQLITE_CREATE_TABLE,
                       A.SQLITE_CREATE_INDEX, A.SQLITE_CREATE_VIEW, A.SQLITE_CREATE_TEMP_TABLE,
                       A.SQLITE_CREATE_TEMP_INDEX, A.SQLITE_CREATE_TEMP_VIEW})
_NEVER = frozenset({A.SQLITE_ATTACH, A.SQLITE_DETACH})


def authorizer_for(scope: str) -> Any:
    """The authorizer callback for ``scope`` (also usable on a connection you own)."""
    if scope not in SCOPES:
        raise ScopeError(f"unknown database scope {scope!r}")

    def authorize(action: int, arg1: str | None, arg2: str | None, db: str | None,
                  source: str | None) -> int:
        if scope == "none" or action in _NEVER:
            return A.SQLITE_DENY
        if action == A.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in _UNSAFE_FUNCTIONS:
                return A.SQLITE_DENY
            if scope == "read-only" and name not in SAFE_FUNCTIONS:
                return A.SQLITE_DENY
            return A.SQLITE_OK
        if action == A.SQLITE_PRAGMA:
            if scope == "admin":
                return A.SQLITE_OK
            return A.SQLITE_OK if (arg1 or "").lower() in _READ_PRAGMAS else A.SQLITE_DENY
        if action in _READ_ACTIONS:
            return A.SQLITE_OK
        if scope == "read-write" and action in _RW_EXTRA:
            # CREATE writes sqlite_master through these too; writing it directly needs
            # PRAGMA writable_schema, which is refused above
            return A.SQLITE_OK
        if scope == "admin":
            return A.SQLITE_OK
        return A.SQLITE_DENY

    return authorize


class GuardedCursor:
    def __init__(self, cur: sqlite3.Cursor, guard: GuardedConnection) -> None:
        self._cur = cur
        self._guard = guard

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> GuardedCursor:
        self._guard.check(sql)
        self._cur.execute(sql, params)
        return self

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> GuardedCursor:
        self._guard.check(sql)
        self._cur.executemany(sql, seq)
        return self

    def executescript(self, script: str) -> GuardedCursor:
        self._guard.check(script)
        self._cur.executescript(script)
        return self

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchmany(self, size: int = 1) -> list[Any]:
        return self._cur.fetchmany(size)

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    def close(self) -> None:
        self._cur.close()

    def __iter__(self) -> Any:
        return iter(self._cur)


class GuardedConnection:
    """A DB-API connection whose scope the database enforces. The raw connection is not
    exposed: no ``create_function``, ``enable_load_extension`` or authorizer swap."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, scope: str, *, classify: bool = True) -> None:
        self.__conn = conn
        self.scope = scope
        self.classify = classify

    def check(self, sql: str) -> None:
        if self.scope == "none":
            raise ScopeError("this role has no database access (db_scope: none)")
        if self.classify:
            check_statement(sql, self.scope, self.dialect)

    def cursor(self) -> GuardedCursor:
        return GuardedCursor(self.__conn.cursor(), self)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> GuardedCursor:
        return self.cursor().execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> GuardedCursor:
        return self.cursor().executemany(sql, seq)

    def executescript(self, script: str) -> GuardedCursor:
        return self.cursor().executescript(script)

    def commit(self) -> None:
        self.__conn.commit()

    def rollback(self) -> None:
        self.__conn.rollback()

    def close(self) -> None:
        self.__conn.close()

    def __enter__(self) -> GuardedConnection:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        self.close()


def connect(path: str | Path, scope: str, *, classify: bool = True,
            timeout: float = 5.0) -> GuardedConnection:
    """Open ``path`` for an agent whose role has database scope ``scope``.

    ``classify=False`` leaves only the database's own enforcement (used by the tests to
    show that each line holds alone).
    """
    if scope not in SCOPES:
        raise ScopeError(f"unknown database scope {scope!r}")
    target = str(path)
    memory = target == ":memory:" or target.startswith("file::memory:")
    if scope in ("read-only", "none") and not memory:
        uri = Path(target).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=True)
    else:
        conn = sqlite3.connect(target, timeout=timeout)
    if scope in ("read-only", "none"):
        conn.execute("PRAGMA query_only = 1")
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(authorizer_for(scope))
    return GuardedConnection(conn, scope, classify=classify)


def for_session(path: str | Path, session: Any, **kw: Any) -> GuardedConnection:
    """A connection with the scope of a session's role ∩ task (``session.effective``)."""
    state = getattr(session, "state", session)
    return connect(path, state.effective.db_scope, **kw)
