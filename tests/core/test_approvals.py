"""Approvals are bound to the exact arguments; no answer means deny."""

from __future__ import annotations

import io
import threading

import pytest

from shieldwall import CallbackApprover, Denied, QueueApprover, TerminalApprover, ToolCall, Verdict

from .conftest import make_wall

REFUND = {"order_id": "ORD-1234", "amount": 10}


def test_refund_asks_for_approval(wall):
    with wall.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("refund_order", REFUND))
    assert d.verdict == Verdict.ASK
    assert d.approval is not None and d.approval.tool == "refund_order"
    assert "a person must confirm" in d.approval.reason


def test_callback_approver_approves(example_policy, example_dir):
    seen = []
    w = make_wall(example_policy, example_dir,
                  approver=CallbackApprover(lambda r: seen.append(r) or True))
    with w.session(agent="a", role="admin") as s:
        assert s.call("refund_order", REFUND) .startswith("refunded 10")
        assert s.last is not None and "approval.granted" in s.last.rules()
    assert seen[0].preview == REFUND


def test_callback_exception_is_deny(example_policy, example_dir):
    def boom(r):
        raise RuntimeError("approver crashed")

    w = make_wall(example_policy, example_dir, approver=CallbackApprover(boom))
    with w.session(agent="a", role="admin") as s, pytest.raises(Denied) as e:
        s.call("refund_order", REFUND)
    assert "approval.denied" in e.value.rules


def test_default_is_deny(wall):
    with wall.session(agent="a", role="admin") as s, pytest.raises(Denied) as e:
        s.call("refund_order", REFUND)
    assert "approval.denied" in e.value.rules


def test_approve_then_swap_fails(wall):
    with wall.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("refund_order", REFUND))
        wall.approvals.resolve(d.approval.id, True, approver="alice")
        # same request id, different amount: not covered
        swapped = s.decide(ToolCall("refund_order", {"order_id": "ORD-1234", "amount": 499}),
                           approval_id=d.approval.id)
        assert swapped.verdict == Verdict.ASK
        assert "approval.args_mismatch" in swapped.rules()
        with pytest.raises(Denied):
            s.call("refund_order", {"order_id": "ORD-1234", "amount": 499}, approval=d.approval.id)
        # the exact arguments go through
        assert s.call("refund_order", REFUND, approval=d.approval.id) .startswith("refunded 10")


def test_approval_for_other_tool_not_reusable(wall):
    with wall.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("provision_server", {"size": "small", "region": "eu-west-1"}))
        wall.approvals.resolve(d.approval.id, True)
        again = s.decide(ToolCall("refund_order", REFUND), approval_id=d.approval.id)
        assert again.verdict == Verdict.ASK


def test_queue_resolved_by_another_thread(example_policy, example_dir):
    w = make_wall(example_policy, example_dir)
    w.approver = QueueApprover(w.approvals)

    def operator():
        for _ in range(200):
            pending = w.approvals.pending()
            if pending:
                w.approvals.resolve(pending[0].id, True, approver="ops")
                return
            threading.Event().wait(0.01)

    t = threading.Thread(target=operator)
    t.start()
    with w.session(agent="a", role="admin") as s:
        assert s.call("refund_order", REFUND) .startswith("refunded 10")
    t.join()


def test_queue_timeout_is_deny(example_policy, example_dir):
    now = [0.0]
    w = make_wall(example_policy, example_dir, clock=lambda: now[0])
    w.approver = QueueApprover(w.approvals)
    with w.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("refund_order", REFUND))
        now[0] += 61  # past the 60 s timeout
        assert w.approvals.wait(d.approval.id, 0.01) is None
        assert w.approvals.get(d.approval.id).status == "expired"
        with pytest.raises(ValueError):
            w.approvals.resolve(d.approval.id, True)


def test_terminal_approver_yes_no_and_timeout():
    from shieldwall.approvals import ApprovalQueue

    q = ApprovalQueue()
    req = q.submit(session="s", agent="a", role="admin", tool="refund_order", args=REFUND,
                   preview=REFUND, reason="money", timeout=5)
    out = io.StringIO()
    assert TerminalApprover(io.StringIO("yes\n"), out)(req, 1.0) is True
    assert "refund_order" in out.getvalue()
    assert TerminalApprover(io.StringIO("n\n"), io.StringIO())(req, 1.0) is False
    assert TerminalApprover(io.StringIO("sure\n"), io.StringIO())(req, 1.0) is False

    class Silent(io.StringIO):
        def readline(self, *a):
            threading.Event().wait(2)
            return ""

    assert TerminalApprover(Silent(), io.StringIO())(req, 0.05) is None


def test_approval_is_single_use(wall):
    with wall.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("refund_order", REFUND))
        wall.approvals.resolve(d.approval.id, True, approver="alice")
        assert s.call("refund_order", REFUND, approval=d.approval.id).startswith("refunded")
        # replaying the same approval for a second refund is refused
        with pytest.raises(Denied):
            s.call("refund_order", REFUND, approval=d.approval.id)
        assert wall.approvals.get(d.approval.id).status == "used"


def test_waiting_for_approval_spends_no_budget(example_dir):
    from shieldwall.policy.load import parse_policy

    policy = parse_policy("""
roles:
  admin: {tools: [refund_order], budget: {calls: 1}}
tools:
  refund_order: {approval: true}
""")
    w = make_wall(policy, example_dir)
    with w.session(agent="a", role="admin") as s:
        for _ in range(5):  # five unanswered requests
            assert s.decide(ToolCall("refund_order", REFUND)).verdict == Verdict.ASK
        d = s.decide(ToolCall("refund_order", REFUND))
        w.approvals.resolve(d.approval.id, True)
        assert s.call("refund_order", REFUND, approval=d.approval.id).startswith("refunded")
        d2 = s.decide(ToolCall("refund_order", REFUND))
        w.approvals.resolve(d2.approval.id, True)
        with pytest.raises(Denied) as e:
            s.call("refund_order", REFUND, approval=d2.approval.id)
        assert e.value.rules[-1] == "budget.session_exhausted"
