"""PostgreSQL connections whose scope the server enforces.

Each scope is a database role: the agent's connection logs in *as* that role, so no
statement it sends (``RESET ROLE``, ``SET ROLE``, ``SET SESSION AUTHORIZATION``) can
reach more privilege than the role has.

* ``read-only``: ``SELECT`` on the schema's tables only; every transaction is read-only
  (``default_transaction_read_only`` on the role and the session, and psycopg's
  ``read_only``), so even a function with side effects fails.
* ``read-write``: ``SELECT, INSERT, UPDATE`` (and sequence use) — no ``DELETE``,
  ``TRUNCATE``; not the owner, so no ``DROP``/``ALTER``/``GRANT``; no ``CREATE`` on
  the schema.
* ``admin``: the owner's connection string, unguarded beyond the server's own rules.

:func:`provision` creates the roles for a schema; :func:`drop_roles` removes them.
Statement classification (sqlglot, dialect ``postgres``) runs first as a second line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .scope import SCOPES, ScopeError, check_statement

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ScopeError(f"invalid identifier {name!r} (lower-case letters, digits, _)")
    return name


@dataclass(frozen=True, slots=True)
class ScopeRoles:
    """Login role per scope, for one schema."""

    schema: str
    read_only: str
    read_write: str

    def role_for(self, scope: str) -> str | None:
        return {"read-only": self.read_only, "read-write": self.read_write}.get(scope)


def provision(admin_conn: Any, *, schema: str, prefix: str,
              password: str | None = None) -> ScopeRoles:
    """Create (or refresh) the scope roles for ``schema``. ``admin_conn`` is a psycopg
    connection of the schema's owner (or a superuser), in autocommit mode or committed
    by the caller. Without ``password`` the roles can only log in where the server's
    ``pg_hba.conf`` trusts them (tests, local sockets)."""
    s = _ident(schema)
    ro, rw = _ident(f"{prefix}_ro"), _ident(f"{prefix}_rw")
    from psycopg import sql

    pw = sql.SQL(" PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("")
    stmts = []
    for role in (ro, rw):
        stmts += [
            sql.SQL("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) "
                    "THEN CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                    "NOINHERIT NOREPLICATION NOBYPASSRLS; END IF; END $$").format(
                        lit=sql.Literal(role), r=sql.Identifier(role)),
            sql.SQL("ALTER ROLE {r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT"
                    "{pw}").format(r=sql.Identifier(role), pw=pw),
            sql.SQL("ALTER ROLE {r} SET search_path = {s}").format(
                r=sql.Identifier(role), s=sql.Identifier(s)),
            sql.SQL("REVOKE ALL ON SCHEMA {s} FROM {r}").format(
                s=sql.Identifier(s), r=sql.Identifier(role)),
            sql.SQL("GRANT USAGE ON SCHEMA {s} TO {r}").format(
                s=sql.Identifier(s), r=sql.Identifier(role)),
        ]
    stmts += [
        sql.SQL("ALTER ROLE {r} SET default_transaction_read_only = on").format(
            r=sql.Identifier(ro)),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}").format(
            s=sql.Identifier(s), r=sql.Identifier(ro)),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}").format(
            s=sql.Identifier(s), r=sql.Identifier(ro)),
        sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {s} TO {r}").format(
            s=sql.Identifier(s), r=sql.Identifier(rw)),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}").format(
            s=sql.Identifier(s), r=sql.Identifier(rw)),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE ON "
                "TABLES TO {r}").format(s=sql.Identifier(s), r=sql.Identifier(rw)),
    ]
    for st in stmts:
        admin_conn.execute(st)
    return ScopeRoles(s, ro, rw)


def drop_roles(admin_conn: Any, roles: ScopeRoles) -> None:
    from psycopg import sql

    for role in (roles.read_only, roles.read_write):
        admin_conn.execute(sql.SQL("DROP OWNED BY {r}").format(r=sql.Identifier(role)))
        admin_conn.execute(sql.SQL("DROP ROLE IF EXISTS {r}").format(r=sql.Identifier(role)))


class GuardedPgConnection:
    """A DB-API-shaped wrapper around a psycopg connection logged in as a scope role."""

    dialect = "postgres"

    def __init__(self, conn: Any, scope: str, *, classify: bool = True) -> None:
        self.__conn = conn
        self.scope = scope
        self.classify = classify

    def check(self, sql: str) -> None:
        if self.classify:
            check_statement(sql, self.scope, self.dialect)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        self.check(sql)
        return self.__conn.execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        self.check(sql)
        with self.__conn.cursor() as cur:
            cur.executemany(sql, seq)

    def commit(self) -> None:
        self.__conn.commit()

    def rollback(self) -> None:
        self.__conn.rollback()

    def close(self) -> None:
        self.__conn.close()

    def __enter__(self) -> GuardedPgConnection:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        self.close()


def connect(conninfo: str, scope: str, roles: ScopeRoles | None = None, *,
            classify: bool = True, **kwargs: Any) -> GuardedPgConnection:
    """Connect for ``scope``: as the scope's role (``read-only``/``read-write``), or with
    ``conninfo`` unchanged for ``admin``. ``none`` is refused."""
    import psycopg

    if scope not in SCOPES:
        raise ScopeError(f"unknown database scope {scope!r}")
    if scope == "none":
        raise ScopeError("this role has no database access (db_scope: none)")
    if scope == "admin":
        return GuardedPgConnection(psycopg.connect(conninfo, **kwargs), scope, classify=classify)
    if roles is None:
        raise ScopeError(f"scope {scope!r} needs provisioned roles (db.postgres.provision)")
    role = roles.role_for(scope)
    assert role is not None
    conn = psycopg.connect(conninfo, user=role, **kwargs)
    if scope == "read-only":
        conn.read_only = True
        conn.execute("SET default_transaction_read_only = on")
        conn.commit()
    return GuardedPgConnection(conn, scope, classify=classify)
