"""Approval queues that other processes resolve: SQLite file and the real Redis server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid

import pytest

from shieldwall import QueueApprover, ToolCall, Verdict
from shieldwall.approvals import ApprovalQueue
from shieldwall.approvals.shared import RedisBackend, SQLiteBackend
from shieldwall.policy.load import parse_policy

from .conftest import make_wall

REFUND = {"order_id": "ORD-1234", "amount": 10}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, tmp_path):
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "approvals.db")
    return RedisBackend(prefix=f"swtest:apr:{uuid.uuid4().hex}:")


def test_resolve_is_compare_and_set(backend):
    q = ApprovalQueue(backend=backend)
    req = q.submit(session="s", agent="a", role="admin", tool="refund_order", args=REFUND,
                   preview=REFUND, reason="money", timeout=30)
    assert [r.id for r in q.pending()] == [req.id]
    q.resolve(req.id, True, approver="alice")
    with pytest.raises(ValueError, match="already approved"):
        q.resolve(req.id, False, approver="mallory")
    assert q.consume(req.id, "refund_order", REFUND)
    assert not q.consume(req.id, "refund_order", REFUND)  # single use
    assert q.pending() == []


def test_swapped_args_not_consumable(backend):
    q = ApprovalQueue(backend=backend)
    req = q.submit(session="s", agent="a", role="admin", tool="refund_order", args=REFUND,
                   preview=REFUND, reason="money", timeout=30)
    q.resolve(req.id, True)
    assert not q.consume(req.id, "refund_order", {**REFUND, "amount": 499})


def test_gate_waits_for_other_worker(backend, tmp_path):
    policy = parse_policy("roles:\n  admin: {tools: [refund_order]}\ntools:\n  refund_order: {approval: true}\n")
    w = make_wall(policy, tmp_path)
    w.approvals = ApprovalQueue(backend=backend)
    w.gate.approvals = w.approvals
    w.approver = QueueApprover(w.approvals)
    other = ApprovalQueue(backend=backend)  # a second worker / the approver's process

    def person():
        for _ in range(300):
            pending = other.pending()
            if pending:
                other.resolve(pending[0].id, True, approver="bob")
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=person)
    t.start()
    with w.session(agent="a", role="admin") as s:
        assert s.call("refund_order", REFUND).startswith("refunded")
    t.join()


def test_cli_lists_and_approves(tmp_path):
    (tmp_path / "shieldwall.yaml").write_text(
        "roles:\n  admin: {tools: [refund_order]}\ntools:\n  refund_order: {approval: true}\n"
        "approvals:\n  store: sqlite\n")
    from shieldwall import Shieldwall

    w = Shieldwall.from_policy(tmp_path / "shieldwall.yaml", audit=False, load_rooms=False)
    w.tool(lambda order_id, amount: "refunded", name="refund_order")
    s = w.session(agent="a", role="admin")
    d = s.decide(ToolCall("refund_order", REFUND))
    assert d.verdict == Verdict.ASK

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "shieldwall.cli", "approvals", *args, "--policy",
                               str(tmp_path / "shieldwall.yaml")], capture_output=True, text=True, timeout=60)

    r = cli("list")
    assert r.returncode == 0, r.stderr
    listed = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["id"] for x in listed] == [d.approval.id] and listed[0]["args"] == REFUND
    assert cli("approve", d.approval.id, "--by", "carol").returncode == 0
    assert cli("approve", d.approval.id).returncode == 1  # already resolved
    assert s.call("refund_order", REFUND, approval=d.approval.id) == "refunded"
