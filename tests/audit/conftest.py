"""Fixtures: the same audit tests run against SQLite and against the real PostgreSQL
server on 127.0.0.1:5432 (each test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shieldwall.audit.log import MerkleAuditLog
from shieldwall.audit.signing import HeadSigner
from shieldwall.audit.store import Store

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_DSN, connect_timeout=3).close()
        return True
    except Exception:
        return False


class StoreSpec:
    """How to open (again, from any process) one test log."""

    def __init__(self, kind: str, path: Path | None = None, schema: str | None = None) -> None:
        self.kind, self.path, self.schema = kind, path, schema

    def open(self) -> Store:
        if self.kind == "sqlite":
            from shieldwall.audit.sqlite_store import SQLiteStore

            assert self.path is not None
            return SQLiteStore(self.path)
        from shieldwall.audit.postgres_store import PostgresStore

        assert self.schema is not None
        return PostgresStore(PG_DSN, self.schema)

    def as_args(self) -> list[str]:
        return [self.kind, str(self.path) if self.kind == "sqlite" else str(self.schema)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    if request.param == "sqlite":
        yield StoreSpec("sqlite", path=tmp_path / "audit.db")
        return
    if not _pg_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    s = StoreSpec("postgres", schema=f"sw_audit_test_{uuid.uuid4().hex[:12]}")
    yield s
    from shieldwall.audit.postgres_store import PostgresStore

    st = PostgresStore(PG_DSN, s.schema or "")
    st.drop()
    st.close()


@pytest.fixture(scope="session")
def signer() -> HeadSigner:
    return HeadSigner.generate()


def make_entry(i: int, **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "time": 1_764_000_000.0 + i,
        "session": f"s{i % 3}",
        "agent": "support-bot" if i % 2 else "ops-bot",
        "role": "reader",
        "task": "triage",
        "kind": "tool_call",
        "tool": ["lookup", "send_email", "read_document"][i % 3],
        "args": {"order_id": f"ORD-{1000 + i}", "limit": i % 7, "tags": ["a", "b"]},
        "verdict": "deny" if i % 4 == 0 else "allow",
        "findings": ([{"layer": "policy", "rule": "policy.tool_not_in_role", "message": "no"}]
                     if i % 4 == 0 else []),
        "result_digest": f"{i:064x}",
        "duration_ms": 0.5 + i,
        "event": "decision" if i % 2 == 0 else "outcome",
    }
    e.update(over)
    return e


LogFactory = Callable[..., MerkleAuditLog]


@pytest.fixture
def make_log(spec: StoreSpec, signer: HeadSigner) -> Iterator[LogFactory]:
    logs: list[MerkleAuditLog] = []

    def factory(**kw: Any) -> MerkleAuditLog:
        kw.setdefault("redact_fields", ["password", "token", "api_key", "secret"])
        log = MerkleAuditLog(spec.open(), signer, **kw)
        logs.append(log)
        return log

    yield factory
    for log in logs:
        try:
            log.close()
        except Exception:
            pass


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
