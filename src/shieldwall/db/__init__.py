"""Database scope enforced at the connection, not in the prompt.

``sqlite.connect(path, scope)`` and ``postgres.connect(dsn, scope, roles)`` return guarded
DB-API connections for a role's ``db_scope`` (``none``, ``read-only``, ``read-write``,
``admin``). The database itself enforces the scope (SQLite's authorizer callback;
PostgreSQL roles, grants and read-only transactions); statement classification with
sqlglot (``policy.constraints.classify_sql``) is a second line in front of it.
"""

from .scope import ScopeError, check_statement

__all__ = ["ScopeError", "check_statement"]
