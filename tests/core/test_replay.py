"""`policy replay`: a candidate policy is tried on the recorded log before going live."""

from __future__ import annotations

from shieldwall.audit import MemoryAuditLog
from shieldwall.policy.load import parse_policy
from shieldwall.replay import replay_entries

from .conftest import make_wall

LIVE = """
roles:
  reader: {tools: [search_knowledge_base, read_document]}
"""
CANDIDATE = """
roles:
  reader: {tools: [search_knowledge_base]}
"""


def test_replay_reports_newly_refused(tmp_path):
    log = MemoryAuditLog()
    w = make_wall(parse_policy(LIVE), tmp_path, audit=log)
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "docs" / "a.md").write_text("x")
    with w.session(agent="bot", role="reader") as s:
        s.call("search_knowledge_base", {"query": "q"})
        s.call("read_document", {"path": "a.md"})
    report = replay_entries(parse_policy(CANDIDATE), enumerate(log.entries), base_dir=tmp_path)
    assert report.replayed == 2
    assert [(c.target, c.before, c.after) for c in report.changes] == [
        ("read_document", "allow", "deny")]
    assert report.changes[0].rules == ["policy.tool_not_in_role"]
    assert report.newly_denied() == report.changes


def test_replay_same_policy_changes_nothing(tmp_path):
    log = MemoryAuditLog()
    w = make_wall(parse_policy(LIVE), tmp_path, audit=log)
    with w.session(agent="bot", role="reader") as s:
        s.call("search_knowledge_base", {"query": "q"})
        s.decide(__import__("shieldwall").ToolCall("refund_order", {}))
    report = replay_entries(parse_policy(LIVE), enumerate(log.entries), base_dir=tmp_path)
    assert report.replayed == 2 and report.changes == []
