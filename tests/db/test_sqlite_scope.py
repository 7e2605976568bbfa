"""SQLite scope at the connection: attack strings against each scope, with both lines
(authorizer + classification) and with the authorizer alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall import Shieldwall
from shieldwall.db import ScopeError
from shieldwall.db import sqlite as gsql
from shieldwall.policy.load import parse_policy

WRITES_READ_ONLY = [
    "DELETE FROM orders",
    "delete from orders where 1=1",
    "/* harmless */ DeLeTe FrOm orders",
    "UPDATE orders SET status = 'refunded'",
    "INSERT INTO orders VALUES (99, 'x', 1.0)",
    "INSERT INTO orders SELECT id + 100, status, total FROM orders",
    "REPLACE INTO orders VALUES (1, 'pwned', 0)",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "WITH x AS (SELECT 1) UPDATE orders SET total = 0",
    "SELECT 1; DELETE FROM orders",
    "BEGIN; DELETE FROM orders; COMMIT;",
    "DROP TABLE orders",
    "ALTER TABLE orders ADD COLUMN x",
    "CREATE TABLE t2 (x)",
    "CREATE TEMP TABLE t3 (x)",
    "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END",
    "CREATE VIEW v2 AS SELECT * FROM orders",
    "PRAGMA query_only = 0",
    "PRAGMA writable_schema = 1",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "VACUUM INTO '{tmp}/copy.db'",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT writefile('{tmp}/x.txt', 'data')",
    "REINDEX",
    "ANALYZE",
]
DESTRUCTIVE_READ_WRITE = [
    "DELETE FROM orders",
    "DELETE FROM orders WHERE id = 1",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "SELECT 1; DELETE FROM orders",
    "BEGIN; DELETE FROM orders; COMMIT;",
    "DROP TABLE orders",
    "DROP INDEX IF EXISTS idx_status",
    "DROP VIEW IF EXISTS v",
    "ALTER TABLE orders RENAME TO gone",
    "ALTER TABLE orders ADD COLUMN x",
    "CREATE TRIGGER tr AFTER INSERT ON orders BEGIN DELETE FROM orders; END",
    "PRAGMA writable_schema = 1",
    "PRAGMA query_only = 0",
    "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "VACUUM INTO '{tmp}/copy.db'",
    "SELECT load_extension('/tmp/evil.so')",
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    p = tmp_path / "orders.db"
    c = sqlite3.connect(p)
    c.executescript("""
        CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, total REAL);
        CREATE INDEX idx_status ON orders(status);
        CREATE VIEW v AS SELECT * FROM orders;
        INSERT INTO orders VALUES (1, 'shipped', 10.5), (2, 'pending', 3.0);
    """)
    c.commit()
    c.close()
    return p


def _snapshot(p: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int]:
    c = sqlite3.connect(p)
    rows = c.execute("SELECT * FROM orders ORDER BY id").fetchall()
    schema = c.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    version = c.execute("PRAGMA user_version").fetchone()[0]
    c.close()
    return rows, schema, version


def _attempt(conn: gsql.GuardedConnection, sql: str) -> None:
    with pytest.raises((ScopeError, sqlite3.DatabaseError, sqlite3.Warning,
                        sqlite3.ProgrammingError)):
        if ";" in sql.strip().rstrip(";"):
            conn.executescript(sql)
        else:
            conn.execute(sql)
        conn.commit()


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "authorizer-only"])
@pytest.mark.parametrize("attack", WRITES_READ_ONLY)
def test_read_only_cannot_write_by_any_statement(db: Path, tmp_path: Path, attack: str,
                                                 classify: bool) -> None:
    before = _snapshot(db)
    conn = gsql.connect(db, "read-only", classify=classify)
    _attempt(conn, attack.format(tmp=tmp_path))
    conn.close()
    assert _snapshot(db) == before
    assert not (tmp_path / "evil.db").exists() and not (tmp_path / "copy.db").exists()
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "authorizer-only"])
@pytest.mark.parametrize("attack", DESTRUCTIVE_READ_WRITE)
def test_read_write_cannot_destroy(db: Path, tmp_path: Path, attack: str, classify: bool) -> None:
    before = _snapshot(db)
    conn = gsql.connect(db, "read-write", classify=classify)
    _attempt(conn, attack.format(tmp=tmp_path))
    conn.close()
    rows, schema, _ = _snapshot(db)
    assert rows == before[0] and schema == before[1]
    assert not (tmp_path / "evil.db").exists() and not (tmp_path / "copy.db").exists()


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "authorizer-only"])
def test_read_only_reads_work(db: Path, classify: bool) -> None:
    conn = gsql.connect(db, "read-only", classify=classify)
    rows = conn.execute("SELECT status, upper(status), count(*) OVER (), "
                        "json_object('t', total) FROM orders WHERE total > ? ORDER BY id",
                        (1,)).fetchall()
    assert [r[0] for r in rows] == ["shipped", "pending"]
    cte = conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < 5) SELECT sum(i) FROM n").fetchone()
    assert cte == (15,)
    if classify:  # the classifier counts every PRAGMA as not read-only: stricter
        with pytest.raises(ScopeError):
            conn.execute("PRAGMA table_info(orders)")
    else:  # the authorizer allows introspection pragmas
        assert conn.execute("PRAGMA table_info(orders)").fetchall()


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "authorizer-only"])
def test_read_write_inserts_and_updates(db: Path, classify: bool) -> None:
    with gsql.connect(db, "read-write", classify=classify) as conn:
        conn.execute("INSERT INTO orders (status, total) VALUES (?, ?)", ("new", 1.0))
        conn.execute("UPDATE orders SET status = 'delivered' WHERE id = 1")
        conn.execute("CREATE TABLE notes (order_id INTEGER, text TEXT)")
    rows, _, _ = _snapshot(db)
    assert len(rows) == 3 and rows[0][1] == "delivered"


def test_none_scope_refuses_everything(db: Path) -> None:
    conn = gsql.connect(db, "none")
    with pytest.raises((ScopeError, sqlite3.DatabaseError)):
        conn.execute("SELECT 1")


def test_admin_may_delete_but_not_attach(db: Path, tmp_path: Path) -> None:
    with gsql.connect(db, "admin") as conn:
        conn.execute("DELETE FROM orders WHERE id = 2")
    assert len(_snapshot(db)[0]) == 1
    conn = gsql.connect(db, "admin")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute(f"ATTACH DATABASE '{tmp_path}/evil.db' AS evil")


def test_connection_follows_the_session_role(db: Path, tmp_path: Path) -> None:
    policy = parse_policy("""
version: 1
roles:
  reader: {db_scope: read-only}
  operator: {db_scope: read-write}
""")
    wall = Shieldwall(policy, base_dir=tmp_path, audit=False, load_rooms=False)
    with wall.session(agent="a", role="reader") as s:
        conn = gsql.for_session(db, s)
        assert conn.scope == "read-only"
        with pytest.raises((ScopeError, sqlite3.DatabaseError)):
            conn.execute("UPDATE orders SET total = 0")
    with wall.session(agent="a", role="operator") as s:
        assert gsql.for_session(db, s).scope == "read-write"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["DELETE FROM orders", "UPDATE orders SET total=0", "DROP TABLE orders",
                        "INSERT INTO orders VALUES (7,'x',0)"]),
       st.sampled_from(["", " ", "\n", "/**/", "-- c\n", "\t"]),
       st.booleans())
def test_whitespace_comments_and_case_do_not_hide_a_write(stmt: str, pad: str, upper: bool) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "o.db"
        c = sqlite3.connect(p)
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, total REAL)")
        c.execute("INSERT INTO orders VALUES (1, 'a', 1)")
        c.commit()
        c.close()
        sql = pad + (stmt.upper() if upper else stmt.lower()) + pad
        conn = gsql.connect(p, "read-only", classify=False)
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql)
        conn.close()
