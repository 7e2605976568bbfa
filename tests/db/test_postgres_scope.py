"""PostgreSQL scope at the connection (real server on 127.0.0.1:5432): each scope logs in
as its own role; attack strings with both lines and with the database alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shieldwall.db import ScopeError
from shieldwall.db import postgres as gpg

pytestmark = pytest.mark.postgres

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"

WRITES_READ_ONLY = [
    "DELETE FROM orders",
    "UPDATE orders SET status = 'refunded'",
    "INSERT INTO orders (status, total) VALUES ('x', 1)",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "WITH u AS (UPDATE orders SET total = 0 RETURNING id) SELECT count(*) FROM u",
    "SELECT 1; DELETE FROM orders",
    "SET default_transaction_read_only = off; DELETE FROM orders",
    "SET TRANSACTION READ WRITE; DELETE FROM orders",
    "RESET ROLE; DELETE FROM orders",
    "SET ROLE postgres; DELETE FROM orders",
    "SET SESSION AUTHORIZATION postgres; DELETE FROM orders",
    "SELECT set_config('default_transaction_read_only', 'off', false); DELETE FROM orders",
    "SELECT * INTO stolen FROM orders",
    "CREATE TABLE t2 (x int)",
    "CREATE TEMP TABLE t3 AS SELECT * FROM orders",
    "TRUNCATE orders",
    "DROP TABLE orders",
    "ALTER TABLE orders ADD COLUMN x int",
    "GRANT ALL ON orders TO PUBLIC",
    "COPY orders TO '/tmp/sw_orders.csv'",
    "COPY orders FROM PROGRAM 'id'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT nextval('orders_id_seq')",
    "DO $$ BEGIN DELETE FROM orders; END $$",
    "PREPARE p AS DELETE FROM orders; EXECUTE p",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1'",
    "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE",
]
DESTRUCTIVE_READ_WRITE = [
    "DELETE FROM orders",
    "DELETE FROM orders WHERE id = 1",
    "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
    "SELECT 1; DELETE FROM orders",
    "TRUNCATE orders",
    "DROP TABLE orders",
    "ALTER TABLE orders RENAME TO gone",
    "ALTER TABLE orders DROP COLUMN total",
    "GRANT ALL ON orders TO PUBLIC",
    "REVOKE SELECT ON orders FROM PUBLIC",
    "RESET ROLE; DELETE FROM orders",
    "SET ROLE postgres; DROP TABLE orders",
    "DO $$ BEGIN DELETE FROM orders; END $$",
    "PREPARE p AS DELETE FROM orders; EXECUTE p",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'DELETE FROM orders RETURNING 1'",
    "COPY orders FROM PROGRAM 'id'",
]


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[str, gpg.ScopeRoles]]:
    psycopg = pytest.importorskip("psycopg")
    tag = uuid.uuid4().hex[:10]
    schema = f"sw_db_{tag}"
    try:
        admin = psycopg.connect(ADMIN, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL not reachable: {e}")
    admin.execute(f"CREATE SCHEMA {schema}")
    roles = gpg.provision(admin, schema=schema, prefix=f"sw_{tag}")
    try:
        yield schema, roles
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        gpg.drop_roles(admin, roles)
        admin.close()


@pytest.fixture
def orders(env: tuple[str, gpg.ScopeRoles]) -> Iterator[str]:
    import psycopg

    schema, roles = env
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP TABLE IF EXISTS {schema}.orders, {schema}.stolen, {schema}.t2 CASCADE")
        admin.execute(f"CREATE TABLE {schema}.orders (id serial PRIMARY KEY, status text, "
                      "total numeric)")
        admin.execute(f"INSERT INTO {schema}.orders (status, total) VALUES ('shipped', 10.5), "
                      "('pending', 3)")
        gpg.provision(admin, schema=schema, prefix=roles.read_only[:-3])  # grant on new table
    yield schema


def _snapshot(schema: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as c:
        rows = c.execute(f"SELECT id, status, total FROM {schema}.orders ORDER BY id").fetchall()
        cols = c.execute("SELECT table_name, column_name FROM information_schema.columns "
                         "WHERE table_schema = %s ORDER BY 1, 2", (schema,)).fetchall()
        acl = c.execute("SELECT relname, relacl::text FROM pg_class WHERE relnamespace = "
                        "%s::regnamespace ORDER BY 1", (schema,)).fetchall()
        return rows, cols + acl


def _attempt(conn: gpg.GuardedPgConnection, sql: str) -> None:
    """The statement must fail — except GRANT/REVOKE by a non-owner, which PostgreSQL
    answers with a warning and no change (the snapshot comparison checks that)."""
    import psycopg

    raised = False
    try:
        conn.execute(sql)
        conn.commit()
    except (ScopeError, psycopg.Error):
        raised = True
    try:
        conn.rollback()
    except psycopg.Error:
        pass
    assert raised or sql.split()[0] in ("GRANT", "REVOKE"), sql


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "database-only"])
@pytest.mark.parametrize("attack", WRITES_READ_ONLY)
def test_read_only_cannot_write_by_any_statement(env: tuple[str, gpg.ScopeRoles], orders: str,
                                                 attack: str, classify: bool) -> None:
    _, roles = env
    before = _snapshot(orders)
    conn = gpg.connect(ADMIN, "read-only", roles, classify=classify)
    _attempt(conn, attack)
    conn.close()
    assert _snapshot(orders) == before


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "database-only"])
@pytest.mark.parametrize("attack", DESTRUCTIVE_READ_WRITE)
def test_read_write_cannot_destroy(env: tuple[str, gpg.ScopeRoles], orders: str, attack: str,
                                   classify: bool) -> None:
    _, roles = env
    before = _snapshot(orders)
    conn = gpg.connect(ADMIN, "read-write", roles, classify=classify)
    _attempt(conn, attack)
    conn.close()
    assert _snapshot(orders) == before


@pytest.mark.parametrize("classify", [True, False], ids=["both-lines", "database-only"])
def test_read_only_reads_and_read_write_writes(env: tuple[str, gpg.ScopeRoles], orders: str,
                                               classify: bool) -> None:
    _, roles = env
    ro = gpg.connect(ADMIN, "read-only", roles, classify=classify)
    rows = ro.execute("SELECT status, upper(status) FROM orders WHERE total > %s ORDER BY id",
                      (1,)).fetchall()
    assert [r[0] for r in rows] == ["shipped", "pending"]
    ro.close()
    with gpg.connect(ADMIN, "read-write", roles, classify=classify) as rw:
        rw.execute("INSERT INTO orders (status, total) VALUES (%s, %s)", ("new", 1))
        rw.execute("UPDATE orders SET status = 'delivered' WHERE id = 1")
    rows2, _ = _snapshot(orders)
    assert len(rows2) == 3 and rows2[0][1] == "delivered"


def test_none_scope_is_refused_and_missing_roles_too(env: tuple[str, gpg.ScopeRoles]) -> None:
    with pytest.raises(ScopeError):
        gpg.connect(ADMIN, "none")
    with pytest.raises(ScopeError):
        gpg.connect(ADMIN, "read-only")
