"""Argument constraints, compiled once per tool into small checker functions.

Every checker takes the argument's value and returns ``None`` (fine) or a
:class:`Finding` that denies. None of them trusts the caller: paths are resolved with
symlinks and ``..``, SQL is parsed by a real parser, commands are argv lists.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..actions import Finding, Severity, Verdict
from .model import ArgConstraint, CommandConstraint, PathConstraint, SqlConstraint, UrlConstraint

Checker = Callable[[Any], Finding | None]
LAYER = "policy"


def _deny(rule: str, message: str, evidence: Any) -> Finding:
    ev = repr(evidence)
    if len(ev) > 200:
        ev = ev[:197] + "..."
    return Finding(LAYER, rule, message, Verdict.DENY, evidence=ev, severity=Severity.HIGH)


# --------------------------------------------------------------------------- paths


def confine_path(value: str, roots: list[Path], *, allow_absolute: bool = False) -> Path | None:
    """Resolve ``value`` against each root and return the real path if it stays inside.

    The path is resolved fully (symlinks, ``..``) with ``os.path.realpath`` — the target
    after resolution must be beneath the root's real path. Returns ``None`` when it
    escapes. This is check-then-use: executors that open the file should use
    :func:`open_beneath` to close the symlink-swap race.
    """
    if "\x00" in value:
        return None
    for root in roots:
        base = Path(os.path.realpath(root))
        candidate = Path(value)
        if candidate.is_absolute():
            if not allow_absolute:
                return None
            full = candidate
        else:
            full = base / candidate
        real = Path(os.path.realpath(full))
        if real == base or base in real.parents:
            return real
    return None


def _path_checker(tool: str, arg: str, c: PathConstraint, base_dir: Path) -> Checker:
    roots = [(base_dir / r) if not Path(r).is_absolute() else Path(r) for r in c.roots]
    shown = ", ".join(c.roots)

    def check(value: Any) -> Finding | None:
        if not isinstance(value, str):
            return _deny("args.path_invalid", f"{tool}.{arg} must be a path string", value)
        if "\x00" in value:
            return _deny("args.path_nul_byte", f"{tool}.{arg} contains a NUL byte", value)
        if os.path.isabs(value) and not c.allow_absolute:
            return _deny(
                "args.path_absolute",
                f"{tool}.{arg} must be relative to {shown}; absolute paths are refused",
                value,
            )
        if confine_path(value, roots, allow_absolute=c.allow_absolute) is None:
            return _deny(
                "args.path_outside_root",
                f"{tool}.{arg} resolves outside the allowed roots ({shown})",
                value,
            )
        return None

    return check


# --------------------------------------------------------------------------- commands

# Characters a shell would interpret. An argv list never passes through a shell, but an
# executor that later joins it might; refusing them keeps the argument inert everywhere.
_SHELL_META = re.compile(r"[;&|`$<>(){}\[\]*?!~\\\n\r'\"#]")


def _command_checker(tool: str, arg: str, c: CommandConstraint) -> Checker:
    allowed = frozenset(c.allowed)

    def check(value: Any) -> Finding | None:
        if isinstance(value, str):
            try:
                argv = shlex.split(value)
            except ValueError:
                return _deny("args.command_unparsable", f"{tool}.{arg} is not a valid argv", value)
            if _SHELL_META.search(value):
                return _deny(
                    "args.command_shell_metachar",
                    f"{tool}.{arg} contains shell metacharacters; pass a plain argv",
                    value,
                )
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            argv = list(value)
            for item in argv:
                if _SHELL_META.search(item) or "\x00" in item:
                    return _deny(
                        "args.command_shell_metachar",
                        f"{tool}.{arg} contains shell metacharacters; pass a plain argv",
                        item,
                    )
        else:
            return _deny("args.command_invalid", f"{tool}.{arg} must be an argv list", value)
        if not argv:
            return _deny("args.command_empty", f"{tool}.{arg} is empty", value)
        if argv[0] not in allowed:
            return _deny(
                "args.command_not_allowed",
                f"{tool}.{arg}: executable {argv[0]!r} is not in the allowed list "
                f"({', '.join(sorted(allowed))})",
                argv[0],
            )
        return None

    return check


# --------------------------------------------------------------------------- SQL

_READ_CLASSES = frozenset({"select"})
# Functions that write, load code or reach outside the database even inside a SELECT.
_UNSAFE_FUNCTIONS = frozenset({
    "load_extension", "writefile", "readfile", "fts3_tokenizer", "edit",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import",
    "lo_export", "lo_unlink", "dblink", "dblink_exec", "set_config", "pg_terminate_backend",
    "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "nextval", "setval",
    "query_to_xml", "pg_advisory_lock", "pg_sleep", "copy_to", "sys_exec", "sys_eval",
})
_DESTRUCTIVE = frozenset({"delete", "drop", "truncate", "alter", "grant", "revoke"})


def classify_sql(sql: str, dialect: str = "sqlite") -> list[str]:
    """Statement classes in ``sql`` (``select``, ``insert``, ``delete``, ``drop`` ...).

    Parsed with sqlglot, so comments, case, and stacked statements cannot hide a
    statement. Any write nested in a read (a CTE with DML, ``SELECT ... INTO``) is
    reported too. Raises ValueError when the text does not parse.
    """
    import sqlglot
    from sqlglot import exp

    try:
        statements = sqlglot.parse(sql, read=dialect)
    except sqlglot.errors.ParseError as e:
        raise ValueError(f"SQL does not parse: {str(e).splitlines()[0]}") from None
    classes: list[str] = []
    write_nodes: dict[type[Any], str] = {
        exp.Insert: "insert",
        exp.Update: "update",
        exp.Delete: "delete",
        exp.Drop: "drop",
        exp.Create: "create",
        exp.Alter: "alter",
        exp.TruncateTable: "truncate",
        exp.Merge: "merge",
        exp.Grant: "grant",
        exp.Into: "into",
    }
    revoke = getattr(exp, "Revoke", None)
    if revoke is not None:
        write_nodes[revoke] = "revoke"
    for stmt in statements:
        if stmt is None:
            continue
        found: list[str] = []
        for node_type, name in write_nodes.items():
            if stmt.find(node_type) is not None:
                found.append(name)
        if isinstance(stmt, exp.Command) or stmt.find(exp.Command) is not None:
            # sqlglot keeps statements it does not model (PRAGMA, ATTACH, VACUUM, COPY,
            # SET ROLE...) as Command: never read-only.
            cmd = stmt if isinstance(stmt, exp.Command) else stmt.find(exp.Command)
            found.append(str(cmd.this).lower() if cmd is not None else "command")
        if isinstance(stmt, exp.Pragma) if hasattr(exp, "Pragma") else False:
            found.append("pragma")
        for fn in stmt.find_all(exp.Anonymous, exp.Func):
            fname = (fn.name if isinstance(fn, exp.Anonymous) else fn.sql_name()).lower()
            if fname in _UNSAFE_FUNCTIONS:
                found.append(f"function:{fname}")
        if not found:
            if isinstance(stmt, exp.Query):
                found.append("select")
            else:
                found.append(type(stmt).__name__.lower())
        classes.extend(found)
    if not classes:
        raise ValueError("SQL is empty")
    return classes


def sql_allowed(classes: list[str], scope: str) -> str | None:
    """None when every class fits ``scope``; else the first offending class."""
    if scope == "admin":
        return None
    for c in classes:
        if scope == "read-only" and c not in _READ_CLASSES:
            return c
        if scope == "read-write" and (c in _DESTRUCTIVE or c not in
                                      {"select", "insert", "update", "create", "merge"}):
            return c
        if scope == "none":
            return c
    return None


def _sql_checker(tool: str, arg: str, c: SqlConstraint, role_scope: str) -> Checker:
    scope = role_scope if c.scope == "role" else c.scope
    # Import and warm the parser now (at policy load): the first parse costs ~0.3 s, which
    # on the hot path would overrun the layer's time budget.
    classify_sql("SELECT 1", c.dialect)
    try:
        classify_sql("SELECT (", c.dialect)
    except ValueError:
        pass

    def check(value: Any) -> Finding | None:
        if not isinstance(value, str):
            return _deny("args.sql_invalid", f"{tool}.{arg} must be SQL text", value)
        try:
            classes = classify_sql(value, c.dialect)
        except ValueError as e:
            return _deny("args.sql_unparsable", f"{tool}.{arg}: {e}; refused", value)
        bad = sql_allowed(classes, scope)
        if bad is not None:
            return _deny(
                "args.sql_scope",
                f"{tool}.{arg}: a {bad.upper()} statement is outside the {scope} database scope",
                value,
            )
        return None

    return check


# --------------------------------------------------------------------------- URLs


def host_matches(host: str, pattern: str) -> bool:
    """Exact host, or ``*.example.com`` = any subdomain (label boundary), not the apex."""
    host = host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _url_checker(tool: str, arg: str, c: UrlConstraint) -> Checker:
    schemes = frozenset(s.lower() for s in c.schemes)

    def check(value: Any) -> Finding | None:
        if not isinstance(value, str):
            return _deny("args.url_invalid", f"{tool}.{arg} must be a URL string", value)
        if any(ch in value for ch in "\\\x00\r\n\t ") :
            return _deny("args.url_invalid", f"{tool}.{arg} has characters a URL cannot hold", value)
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
            _ = parts.port
        except ValueError:
            return _deny("args.url_invalid", f"{tool}.{arg} is not a valid URL", value)
        if parts.scheme.lower() not in schemes:
            return _deny(
                "args.url_scheme",
                f"{tool}.{arg}: scheme {parts.scheme!r} not allowed (allowed: {', '.join(sorted(schemes))})",
                value,
            )
        if parts.username is not None or parts.password is not None:
            return _deny("args.url_userinfo", f"{tool}.{arg}: credentials in URLs are refused", value)
        if c.hosts and not any(host_matches(host, p) for p in c.hosts):
            return _deny("args.url_host", f"{tool}.{arg}: host {host!r} is not allowed", value)
        return None

    return check


# --------------------------------------------------------------------------- compile


@dataclass(frozen=True, slots=True)
class ArgRule:
    arg: str
    checks: tuple[Checker, ...]


def compile_arg(
    tool: str, arg: str, c: ArgConstraint, *, base_dir: Path, role_scope: str
) -> ArgRule:
    checks: list[Checker] = []
    if c.path is not None:
        checks.append(_path_checker(tool, arg, c.path, base_dir))
    if c.command is not None:
        checks.append(_command_checker(tool, arg, c.command))
    if c.sql is not None:
        checks.append(_sql_checker(tool, arg, c.sql, role_scope))
    if c.url is not None:
        checks.append(_url_checker(tool, arg, c.url))
    if c.pattern is not None:
        rx = re.compile(c.pattern)

        def pattern(value: Any) -> Finding | None:
            if not isinstance(value, str) or rx.fullmatch(value) is None:
                return _deny("args.pattern", f"{tool}.{arg} must match {rx.pattern!r}", value)
            return None

        checks.append(pattern)
    if c.enum is not None:
        allowed = list(c.enum)

        def enum(value: Any) -> Finding | None:
            if value not in allowed:
                return _deny("args.enum", f"{tool}.{arg} must be one of {allowed!r}", value)
            return None

        checks.append(enum)
    if c.min_length is not None or c.max_length is not None:
        lo, hi = c.min_length, c.max_length

        def length(value: Any) -> Finding | None:
            try:
                n = len(value)
            except TypeError:
                return _deny("args.length", f"{tool}.{arg} has no length", value)
            if (lo is not None and n < lo) or (hi is not None and n > hi):
                return _deny("args.length", f"{tool}.{arg} length {n} outside [{lo}, {hi}]", value)
            return None

        checks.append(length)
    if c.minimum is not None or c.maximum is not None:
        mn, mx = c.minimum, c.maximum

        def bounds(value: Any) -> Finding | None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _deny("args.range", f"{tool}.{arg} must be a number", value)
            if value != value or (mn is not None and value < mn) or (mx is not None and value > mx):
                return _deny("args.range", f"{tool}.{arg}={value} outside [{mn}, {mx}]", value)
            return None

        checks.append(bounds)
    return ArgRule(arg, tuple(checks))
