"""Helpers for the MCP gateway tests: real server processes (tests/mcp/servers), the real
gateway process (`python -m shieldwall.mcp ...`) and the SDK's own client."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client

SERVERS = Path(__file__).parent / "servers"
PY = sys.executable


def server_cmd(name: str, record: Path | None = None, *extra: str) -> list[str]:
    cmd = [PY, str(SERVERS / f"{name}.py")]
    if record is not None:
        cmd += ["--record", str(record)]
    return cmd + list(extra)


def gateway(*args: str) -> list[str]:
    return [PY, "-m", "shieldwall.mcp", *args]


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def calls(path: Path) -> list[dict[str, Any]]:
    return [e for e in recorded(path) if e["method"] == "tools/call"]


def write_policy(tmp: Path, body: str, name: str = "shieldwall.yaml") -> Path:
    p = tmp / name
    # generous layer budgets: on a shared 2-core machine a lazily loaded detector can take
    # longer than the default on its first call; timings are the benches' business
    p.write_text("version: 1\n" + body + f"\naudit:\n  path: {tmp / 'audit.db'}\n"
                 "gate:\n  layer_budget_ms: 10000\n")
    return p


@asynccontextmanager
async def stdio_session(argv: list[str], *, errlog: Any = None, message_handler: Any = None,
                        env: dict[str, str] | None = None, **callbacks: Any
                        ) -> AsyncIterator[ClientSession]:
    """The SDK's ClientSession on a process; ``callbacks``: sampling_callback,
    list_roots_callback, elicitation_callback, logging_callback."""
    params = StdioServerParameters(command=argv[0], args=argv[1:],
                                   env={"PYTHONPATH": os.pathsep.join(sys.path), **(env or {})})
    kw = {"errlog": errlog} if errlog is not None else {}
    async with stdio_client(params, **kw) as (r, w), ClientSession(
            r, w, message_handler=message_handler, **callbacks) as s:
        await s.initialize()
        yield s


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


def audit_entries(db: Path) -> list[dict[str, Any]]:
    """The entries of a SQLite audit log ."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        leaves = [row[0] for row in conn.execute("SELECT leaf FROM entries ORDER BY seq")]
    from shieldwall.audit.canonical import parse_leaf

    return [parse_leaf(bytes(leaf))[0] for leaf in leaves]
