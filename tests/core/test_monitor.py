"""The monitor kills a session (or agent) that keeps hitting the gate."""

from __future__ import annotations

import pytest

from shieldwall import Denied, ToolCall
from shieldwall.policy.load import parse_policy

from .conftest import make_wall

POLICY = """
roles:
  reader: {tools: [search_knowledge_base]}
monitor: {max_denials: 3, window: 60, kill: %s}
"""


def test_probing_session_is_killed(tmp_path):
    w = make_wall(parse_policy(POLICY % "session"), tmp_path)
    with w.session(agent="bot", role="reader") as s:
        assert s.call("search_knowledge_base", {"query": "q"}) == ["q"]
        for tool in ("refund_order", "delete_user", "send_email", "provision_server"):
            with pytest.raises(Denied):
                s.call(tool, {})
        with pytest.raises(Denied) as e:  # even a granted tool is refused now
            s.call("search_knowledge_base", {"query": "q"})
        assert e.value.rules == ["identity.revoked"]
    events = [x for x in w.audit.entries if x["event"] == "event"]
    assert events and events[0]["findings"][0]["rule"] == "monitor.kill"
    with w.session(agent="bot", role="reader") as fresh:  # kill: session leaves the agent alone
        assert fresh.decide(ToolCall("search_knowledge_base", {"query": "q"})).allowed


def test_agent_kill_covers_new_sessions(tmp_path):
    w = make_wall(parse_policy(POLICY % "agent"), tmp_path)
    with w.session(agent="bot", role="reader") as s:
        for _ in range(4):
            s.decide(ToolCall("refund_order", {}))
    with w.session(agent="bot", role="reader") as s2:
        assert s2.decide(ToolCall("search_knowledge_base", {"query": "q"})).rules() == ["identity.revoked"]


def test_refusals_spread_over_time_are_tolerated(tmp_path):
    now = [0.0]
    w = make_wall(parse_policy(POLICY % "session"), tmp_path, clock=lambda: now[0])
    with w.session(agent="bot", role="reader") as s:
        for _ in range(10):
            s.decide(ToolCall("refund_order", {}))
            now[0] += 30  # one refusal every 30 s refills faster than 3 per minute drains
        assert s.decide(ToolCall("search_knowledge_base", {"query": "q"})).allowed
