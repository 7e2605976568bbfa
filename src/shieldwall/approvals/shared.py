"""Approval queues other processes can see: SQLite (embedded) and Redis (shared).

Both implement the :class:`~shieldwall.approvals.QueueBackend` contract; the status
change is a compare-and-set so two approvers (or an approver and the expiry) cannot
both win.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..stores import StoreError


class SQLiteBackend:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        con = self._con()
        con.execute("CREATE TABLE IF NOT EXISTS approvals (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
                    "body TEXT NOT NULL, expires_at REAL NOT NULL)")
        con.commit()

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            self._local.con = con
        return con

    def put(self, req: dict[str, Any], ttl: float) -> None:
        self._con().execute("INSERT INTO approvals VALUES (?, ?, ?, ?)",
                            (req["id"], req["status"], json.dumps(req), time.time() + ttl))

    def load(self, request_id: str) -> dict[str, Any] | None:
        row = self._con().execute("SELECT body, status FROM approvals WHERE id = ?",
                                  (request_id,)).fetchone()
        if row is None:
            return None
        d: dict[str, Any] = json.loads(row[0])
        d["status"] = row[1]
        return d

    def transition(self, request_id: str, expected: str, updates: dict[str, Any]) -> bool:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            row = con.execute("SELECT body, status FROM approvals WHERE id = ?", (request_id,)).fetchone()
            if row is None or row[1] != expected:
                con.execute("ROLLBACK")
                return False
            body = json.loads(row[0])
            body.update(updates)
            con.execute("UPDATE approvals SET status = ?, body = ? WHERE id = ?",
                        (body["status"], json.dumps(body), request_id))
            con.execute("COMMIT")
            return True
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def ids(self) -> list[str]:
        con = self._con()
        con.execute("DELETE FROM approvals WHERE expires_at < ?", (time.time(),))
        return [r[0] for r in con.execute("SELECT id FROM approvals ORDER BY rowid")]


_CAS = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local body = cjson.decode(raw)
if body['status'] ~= ARGV[1] then return 0 end
local updates = cjson.decode(ARGV[2])
for k, v in pairs(updates) do body[k] = v end
redis.call('SET', KEYS[1], cjson.encode(body), 'KEEPTTL')
return 1
"""


class RedisBackend:
    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "shieldwall:apr:") -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self.prefix = prefix
        self._cas = self._r.register_script(_CAS)

    def _do(self, fn: Any, *a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except Exception as e:
            raise StoreError(f"redis approval queue unavailable: {type(e).__name__}: {e}") from None

    def put(self, req: dict[str, Any], ttl: float) -> None:
        self._do(self._r.set, self.prefix + req["id"], json.dumps(req), ex=max(1, int(ttl)))

    def load(self, request_id: str) -> dict[str, Any] | None:
        raw = self._do(self._r.get, self.prefix + request_id)
        return None if raw is None else dict(json.loads(raw))

    def transition(self, request_id: str, expected: str, updates: dict[str, Any]) -> bool:
        return bool(self._do(self._cas, keys=[self.prefix + request_id], args=[expected, json.dumps(updates)]))

    def ids(self) -> list[str]:
        keys = self._do(lambda: list(self._r.scan_iter(match=self.prefix + "*", count=500)))
        return [k.decode()[len(self.prefix):] for k in keys]
