"""Tasks narrow roles (role ∩ task), budgets run out, rates limit, lifetimes expire."""

from __future__ import annotations

import pytest

from shieldwall import Denied, ShieldwallError, ToolCall, Verdict
from shieldwall.policy.load import parse_policy

from .conftest import make_wall


def test_task_narrows_role(wall):
    with wall.session(agent="a", role="operator", task="ship_order") as s:
        d = s.decide(ToolCall("read_document", {"path": "faq.md"}))
        assert d.rules() == ["policy.tool_not_in_task"]
        assert s.call("update_order_status", {"order_id": "ORD-1234", "status": "shipped"})


def test_task_cannot_widen_role(tmp_path):
    policy = parse_policy("""
roles:
  reader: {tools: [read_document]}
tasks:
  sneaky: {allow: [read_document, refund_order]}
tools:
  refund_order: {}
""")
    w = make_wall(policy, tmp_path)
    with w.session(agent="a", role="reader", task="sneaky") as s:
        d = s.decide(ToolCall("refund_order", {"order_id": "ORD-1", "amount": 1}))
    assert d.verdict == Verdict.DENY and d.rules() == ["policy.tool_not_in_role"]


def test_task_deny_list(tmp_path):
    policy = parse_policy("""
roles:
  r: {tools: [a, b]}
tasks:
  t: {deny: [b]}
""")
    w = make_wall(policy, tmp_path)
    with w.session(agent="x", role="r", task="t") as s:
        assert s.decide(ToolCall("a", {})).allowed
        assert s.decide(ToolCall("b", {})).rules() == ["policy.tool_denied_by_task"]


def test_task_bound_to_other_role_refused(wall):
    with pytest.raises(ShieldwallError, match="runs only under role 'operator'"):
        wall.session(agent="a", role="reader", task="ship_order")


def test_session_budget_exhausts_with_remaining_in_message(wall):
    with wall.session(agent="a", role="reader", task="answer_ticket") as s:
        for _ in range(10):
            s.call("search_knowledge_base", {"query": "q"})
        with pytest.raises(Denied) as e:
            s.call("search_knowledge_base", {"query": "q"})
    assert e.value.rules == ["budget.session_exhausted"]
    assert "0 left" in str(e.value)


def test_refused_calls_spend_no_budget(wall):
    with wall.session(agent="a", role="reader", task="answer_ticket") as s:
        for _ in range(15):  # more refusals than the budget, fewer than the monitor's limit
            with pytest.raises(Denied):
                s.call("read_document", {"path": "../secret.txt"})
        for _ in range(10):
            s.call("search_knowledge_base", {"query": "q"})


def test_per_tool_budget_and_rate(tmp_path):
    now = [1000.0]
    policy = parse_policy("""
roles:
  r: {tools: [ping, pong]}
tools:
  ping: {budget: {calls: 3}}
  pong: {budget: {per_minute: 60, burst: 2}}
""")
    w = make_wall(policy, tmp_path, clock=lambda: now[0])
    w.tool(lambda: "ok", name="ping")
    w.tool(lambda: "ok", name="pong")
    with w.session(agent="a", role="r") as s:
        for _ in range(3):
            s.call("ping")
        with pytest.raises(Denied) as e:
            s.call("ping")
        assert e.value.rules == ["budget.tool_exhausted"]
        s.call("pong")
        s.call("pong")
        with pytest.raises(Denied) as e:
            s.call("pong")
        assert e.value.rules == ["budget.rate_limited"]
        now[0] += 1.01  # one token refills per second at 60/min
        assert s.call("pong") == "ok"


def test_task_lifetime_expires(tmp_path, example_policy):
    now = [0.0]
    w = make_wall(example_policy, tmp_path, clock=lambda: now[0])
    with w.session(agent="a", role="operator", task="ship_order") as s:
        assert s.decide(ToolCall("query_db", {"sql": "SELECT 1"})).allowed
        now[0] += 301
        d = s.decide(ToolCall("query_db", {"sql": "SELECT 1"}))
    assert d.rules() == ["policy.task_expired"]


def test_kill_switch_revokes_session_and_agent(wall):
    with wall.session(agent="bot", role="reader") as s:
        assert s.decide(ToolCall("search_knowledge_base", {"query": "q"})).allowed
        wall.kill(session=s.id)
        assert s.decide(ToolCall("search_knowledge_base", {"query": "q"})).rules() == ["identity.revoked"]
    with wall.session(agent="bot2", role="reader") as s2:
        wall.kill(agent="bot2")
        assert s2.decide(ToolCall("search_knowledge_base", {"query": "q"})).rules() == ["identity.revoked"]


def test_agent_roster(tmp_path):
    policy = parse_policy("""
agents:
  helpdesk: {roles: [reader]}
roles:
  reader: {tools: [a]}
  admin: {tools: [a]}
""")
    w = make_wall(policy, tmp_path)
    assert w.session(agent="helpdesk", role="reader").decide(ToolCall("a", {})).allowed
    assert w.session(agent="helpdesk", role="admin").decide(ToolCall("a", {})).rules() == [
        "identity.role_not_assigned"]
    assert w.session(agent="stranger", role="reader").decide(ToolCall("a", {})).rules() == [
        "identity.unknown_agent"]
