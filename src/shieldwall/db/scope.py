"""The second line: classify a statement with sqlglot and refuse what the scope forbids."""

from __future__ import annotations

from ..errors import ShieldwallError
from ..policy.constraints import classify_sql, sql_allowed

SCOPES = ("none", "read-only", "read-write", "admin")


class ScopeError(ShieldwallError):
    """A statement is outside the connection's database scope."""


def check_statement(sql: str, scope: str, dialect: str) -> None:
    """Raise :class:`ScopeError` unless every statement in ``sql`` fits ``scope``."""
    if scope not in SCOPES:
        raise ScopeError(f"unknown database scope {scope!r}")
    if scope == "admin":
        return
    try:
        classes = classify_sql(sql, dialect)
    except ValueError as e:
        raise ScopeError(f"{e}; refused") from None
    bad = sql_allowed(classes, scope)
    if bad is not None:
        raise ScopeError(f"a {bad.upper()} statement is outside the {scope} database scope")
