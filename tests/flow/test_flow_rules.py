"""Flow rules: most-specific label rule wins, tool rules add to it, deny beats ask."""

from __future__ import annotations

from pathlib import Path

import pytest

from shieldwall import Shieldwall, ToolCall, ToolResult, Verdict
from shieldwall.flow import layer as flow_layer
from shieldwall.policy.load import parse_policy

POLICY = """
version: 1
roles:
  r: {tools: [src_public, src_internal, src_confidential, src_restricted, mail, wiki]}
tools:
  src_public: {result: {sensitivity: public}}
  src_internal: {result: {sensitivity: internal}}
  src_confidential: {result: {sensitivity: confidential}}
  src_restricted: {result: {sensitivity: restricted}}
  mail: {sink: true}
  wiki: {sink: true}
flow:
  sinks: {wiki: internal}
  trifecta: {mode: "off"}
  rules:
    - {from: internal, to: external, action: deny}
    - {from: confidential, to: external, action: ask}
    - {from_tool: src_restricted, to_tool: wiki, action: deny}
"""

DOC = ("Project Kestrel migration plan: move the billing ledger to cluster seven by "
       "March twelfth, owner Priya, fallback is the Zurich replica.")


def _verdict(tmp_path: Path, source: str, sink: str) -> tuple[Verdict, list[str]]:
    wall = Shieldwall(parse_policy(POLICY), base_dir=tmp_path, audit=False, load_rooms=False)
    for layer in flow_layer.build(wall):
        wall.gate.add(layer)
    with wall.session(agent="a", role="r") as s:
        assert s.decide(ToolResult(source, {}, DOC)).allowed
        d = s.decide(ToolCall(sink, {"text": "fyi: " + DOC}))
        return d.verdict, [r for r in d.rules() if r.startswith("flow.")]


@pytest.mark.parametrize("source,sink,verdict,rule", [
    ("src_public", "mail", Verdict.ALLOW, None),
    ("src_internal", "mail", Verdict.DENY, "flow.internal_to_external"),
    # the most specific label rule applies: confidential and restricted data ask
    ("src_confidential", "mail", Verdict.ASK, "flow.confidential_to_external"),
    ("src_restricted", "mail", Verdict.ASK, "flow.confidential_to_external"),
    # internal sinks have no label rule; the tool rule still applies
    ("src_confidential", "wiki", Verdict.ALLOW, None),
    ("src_restricted", "wiki", Verdict.DENY, "flow.tool_rule"),
])
def test_rule_selection(tmp_path: Path, source: str, sink: str, verdict: Verdict,
                        rule: str | None) -> None:
    got, rules = _verdict(tmp_path, source, sink)
    assert got == verdict
    assert rules == ([rule] if rule else [])


def test_default_rules_ask_for_internal_and_deny_confidential(tmp_path: Path) -> None:
    policy = POLICY.split("  rules:")[0]
    wall = Shieldwall(parse_policy(policy), base_dir=tmp_path, audit=False, load_rooms=False)
    for layer in flow_layer.build(wall):
        wall.gate.add(layer)
    with wall.session(agent="a", role="r") as s:
        s.decide(ToolResult("src_internal", {}, DOC))
        assert s.decide(ToolCall("mail", {"text": DOC})).verdict == Verdict.ASK
    with wall.session(agent="a", role="r") as s:
        s.decide(ToolResult("src_confidential", {}, DOC))
        assert s.decide(ToolCall("mail", {"text": DOC})).verdict == Verdict.DENY


def test_disabled_flow_section_builds_no_layers(tmp_path: Path) -> None:
    wall = Shieldwall(parse_policy("version: 1\nflow: {enabled: false}\n"), base_dir=tmp_path,
                      audit=False, load_rooms=False)
    assert flow_layer.build(wall) == []


def test_oversized_sink_argument_is_refused_not_scanned(tmp_path: Path) -> None:
    wall = Shieldwall(parse_policy(POLICY), base_dir=tmp_path, audit=False, load_rooms=False)
    for layer in flow_layer.build(wall):
        wall.gate.add(layer)
    with wall.session(agent="a", role="r") as s:
        s.decide(ToolResult("src_public", {}, DOC))
        d = s.decide(ToolCall("mail", {"text": "x" * 1_000_001}))
        assert d.verdict == Verdict.DENY and "flow.too_large" in d.rules()
