"""Each role of the seed table (Reader / Operator / Admin) gets exactly its grant."""

from __future__ import annotations

import pytest

from shieldwall import Denied, Egress, ToolCall, Verdict

SEED = {
    "reader": ({"read_document", "search_knowledge_base"}, {"GET"}, "read-only"),
    "operator": ({"update_order_status", "send_email"}, {"GET", "POST", "PUT"}, "read-write"),
    "admin": ({"refund_order", "provision_server"}, {"GET", "POST", "PUT", "DELETE"}, "admin"),
}
ALL_SEED_TOOLS = set().union(*(v[0] for v in SEED.values()))
GOOD_ARGS = {
    "read_document": {"path": "faq.md"},
    "search_knowledge_base": {"query": "returns"},
    "update_order_status": {"order_id": "ORD-1234", "status": "shipped"},
    "send_email": {"to": "a@example.com", "subject": "s", "body": "b"},
    "refund_order": {"order_id": "ORD-1234", "amount": 10},
    "provision_server": {"size": "small", "region": "eu-west-1"},
}


@pytest.mark.parametrize("role", SEED)
def test_role_grants_match_seed_table(wall, role):
    tools, methods, scope = SEED[role]
    eff = wall.compiled.effective(role, None)
    assert tools <= eff.tools
    assert eff.http_methods == methods
    assert eff.db_scope == scope


@pytest.mark.parametrize("role", ["reader", "operator"])
def test_role_refused_tools_outside_grant(wall, role):
    granted = wall.compiled.effective(role, None).tools
    with wall.session(agent="a", role=role) as s:
        for tool in sorted(ALL_SEED_TOOLS - granted):
            d = s.decide(ToolCall(tool, GOOD_ARGS[tool]))
            assert d.verdict == Verdict.DENY, tool
            assert d.rules() == ["policy.tool_not_in_role"]


def test_reader_calls_reader_tools(wall):
    with wall.session(agent="a", role="reader") as s:
        assert s.call("read_document", {"path": "faq.md"}) == "returns within 30 days"
        assert s.call("search_knowledge_base", {"query": "x"}) == ["x"]


def test_reader_may_not_refund(wall):
    with wall.session(agent="a", role="reader") as s, pytest.raises(Denied) as e:
        s.call("refund_order", {"order_id": "ORD-1234", "amount": 5})
    assert e.value.rules == ["policy.tool_not_in_role"]
    assert "roles.reader.tools" in str(e.value)  # says how to allow it


@pytest.mark.parametrize("role,method,ok", [
    ("reader", "GET", True), ("reader", "POST", False), ("reader", "DELETE", False),
    ("operator", "PUT", True), ("operator", "POST", True), ("operator", "DELETE", False),
    ("admin", "DELETE", True),
])
def test_http_methods_per_role(wall, role, method, ok):
    with wall.session(agent="a", role=role) as s:
        d = s.decide(Egress(method, "https://api.example.com/x"))
    assert d.allowed is ok
    if not ok:
        assert d.rules() == ["policy.method_not_allowed"]


def test_unknown_tool_is_denied(wall):
    with wall.session(agent="a", role="admin") as s:
        d = s.decide(ToolCall("format_disk", {}))
    assert d.verdict == Verdict.DENY and d.rules() == ["policy.tool_not_in_role"]


def test_unknown_role_cannot_open_session(wall):
    from shieldwall import ShieldwallError

    with pytest.raises(ShieldwallError, match="unknown role 'root'"):
        wall.session(agent="a", role="root")
