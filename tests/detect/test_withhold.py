"""`detect.results.on_injection: remove`: the strings of an untrusted result that alone look
injected are withheld (a visible marker takes their place) and the rest reaches the agent;
the withheld text still counts as the attacker's for the flow room; when the injection
cannot be isolated to strings the whole result is refused (real gate, every room loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shieldwall import Denied, Shieldwall
from shieldwall.actions import ToolResult, Verdict
from shieldwall.detect.layer import WITHHELD_MARKER
from shieldwall.policy.load import parse_policy

from .payloads import AGENTDOJO_IMPORTANT, INJECAGENT

ATTACKER = "mark.black-2134@gmail.com"
INJECTION = AGENTDOJO_IMPORTANT  # AgentDojo's template; it names the attacker's address

POLICY = """
version: 1
roles:
  assistant:
    tools: [search_events, add_participants, send_email]
tools:
  search_events: {result: {sensitivity: public, trusted: false}}
  add_participants: {sink: true}
  send_email: {sink: true}
flow:
  targets: {send_email: [to], add_participants: [participants]}
  provenance: deny
  trifecta: {mode: "off"}
detect:
  results: {on_injection: remove}
"""


def _wall(tmp_path: Path, events: list[dict[str, Any]]) -> Shieldwall:
    wall = Shieldwall(parse_policy(POLICY), base_dir=tmp_path, audit=False)

    @wall.tool
    def search_events(query: str) -> list[dict[str, Any]]:
        return events

    @wall.tool
    def add_participants(event_id: str, participants: list[str]) -> dict[str, Any]:
        return {**events[0], "participants": participants}

    @wall.tool
    def send_email(to: str, body: str = "") -> str:
        return "sent"

    return wall


def _flat(v: Any) -> str:
    return repr(v)


def test_only_the_injected_string_is_withheld_and_the_rest_reaches_the_agent(tmp_path: Path) -> None:
    events = [{"id": "7", "title": "Quarterly sync", "start": "2024-05-15 10:00",
               "description": INJECTION, "participants": ["emma@bluesparrow.example"]}]
    wall = _wall(tmp_path, events)
    with wall.session(agent="a", role="assistant") as s:
        out = s.call("search_events", {"query": "sync"})
        text = _flat(out)
        assert "Quarterly sync" in text and "2024-05-15 10:00" in text and "emma@bluesparrow.example" in text
        assert WITHHELD_MARKER in text
        assert ATTACKER not in text and "important message" not in text.lower()
        d = s.decide(ToolResult("search_events", {"query": "sync"}, events))
        assert d.verdict == Verdict.CHANGES
        assert any(f.rule == "detect.injection.withheld" for f in d.findings)
        # the withheld text is still the attacker's: its address is an untrusted target
        with pytest.raises(Denied) as e:
            s.call("send_email", {"to": ATTACKER, "body": "figures"})
        assert "flow.untrusted_target" in e.value.rules


def test_a_withheld_address_is_not_laundered_by_a_trusted_echo(tmp_path: Path) -> None:
    events = [{"id": "7", "title": "Quarterly sync", "description": INJECTION, "participants": []}]
    wall = _wall(tmp_path, events)
    with wall.session(agent="a", role="assistant") as s:
        s.check_input("Add carol@partner.example to the quarterly sync.", source="user")
        s.call("search_events", {"query": "sync"})
        s.call("add_participants", {"event_id": "7", "participants": ["carol@partner.example"]})
        with pytest.raises(Denied) as e:
            s.call("send_email", {"to": ATTACKER})
        assert "flow.untrusted_target" in e.value.rules


def test_an_injection_split_across_strings_refuses_the_whole_result(tmp_path: Path) -> None:
    # InjecAgent's string cut after two words: neither string scans as injected alone,
    # together they do, so nothing can be isolated and the result is refused (fail closed)
    words = INJECAGENT.split()
    events = [{"id": "7", "title": " ".join(words[:2]), "description": " ".join(words[2:])}]
    wall = _wall(tmp_path, events)
    with wall.session(agent="a", role="assistant") as s, pytest.raises(Denied) as e:
        s.call("search_events", {"query": "sync"})
    assert any(r.startswith("detect.injection") for r in e.value.rules)
    assert not any(r == "detect.injection.withheld" for r in e.value.rules)


def test_a_clean_result_passes_unchanged_in_remove_mode(tmp_path: Path) -> None:
    events = [{"id": "7", "title": "Quarterly sync", "description": "Agenda: budget, hiring, Q3 plan."}]
    wall = _wall(tmp_path, events)
    with wall.session(agent="a", role="assistant") as s:
        d = s.decide(ToolResult("search_events", {"query": "sync"}, events))
        assert not any(f.rule.startswith("detect.injection") or f.rule == "gate.layer_error"
                       for f in d.findings)
        out = s.call("search_events", {"query": "sync"})
    assert "Agenda: budget, hiring, Q3 plan." in _flat(out) and WITHHELD_MARKER not in _flat(out)


def test_two_injections_in_two_strings_are_both_withheld(tmp_path: Path) -> None:
    events = [{"id": "7", "title": INJECAGENT, "description": INJECTION, "location": "Room 4"},
              *({"id": str(i), "title": f"Standup {i}", "description": "Daily standup."} for i in range(30))]
    wall = _wall(tmp_path, events)
    with wall.session(agent="a", role="assistant") as s:
        out = _flat(s.call("search_events", {"query": "sync"}))
    assert out.count(WITHHELD_MARKER) == 2
    assert "Room 4" in out and "Standup 29" in out
    assert "Ignore all previous" not in out and ATTACKER not in out


class _RefuseResultsOf:
    """A test layer (the gate and every room are real) that refuses one tool's results after
    the detect room withheld strings from them: the case of another room saying no."""

    name = "test.refuse_result"
    order = 10_000
    kinds = frozenset({ToolResult.kind})

    def __init__(self, tool: str) -> None:
        self.tool = tool

    def check(self, action: Any, session: Any) -> Any:
        if action.tool != self.tool:
            return None
        from shieldwall.actions import Finding
        from shieldwall.layers import Outcome

        return Outcome((Finding(self.name, "test.refused", "refused for the test", Verdict.DENY),))


def test_what_was_withheld_from_a_refused_trusted_result_is_recorded_at_once(tmp_path: Path) -> None:
    """With `scan_trusted`, a trusted result can have strings withheld; when another layer then
    refuses that result, the withheld text is recorded as untrusted right away, under that
    tool, instead of waiting in the session for the next result to carry it."""
    from shieldwall.flow.layer import EXTRAS_KEY
    from shieldwall.layers import WITHHELD_KEY

    policy = POLICY.replace("search_events: {result: {sensitivity: public, trusted: false}}",
                            "search_events: {result: {sensitivity: public, trusted: true}}\n"
                            "  lookup: {result: {sensitivity: public, trusted: true}}")
    policy = policy.replace("tools: [search_events,", "tools: [lookup, search_events,")
    policy = policy.replace("results: {on_injection: remove}", "results: {on_injection: remove, scan_trusted: true}")
    events = [{"id": "7", "title": "Quarterly sync", "description": INJECTION}]
    wall = Shieldwall(parse_policy(policy), base_dir=tmp_path, audit=False)

    @wall.tool
    def search_events(query: str) -> list[dict[str, Any]]:
        return events

    @wall.tool
    def lookup(name: str) -> str:
        return "no such entry"

    wall.gate.add(_RefuseResultsOf("search_events"))
    with wall.session(agent="a", role="assistant") as s:
        with pytest.raises(Denied) as e:
            s.call("search_events", {"query": "sync"})
        assert "test.refused" in e.value.rules and "detect.injection.withheld" in e.value.rules
        assert WITHHELD_KEY not in s.state.extras
        store = s.state.extras[EXTRAS_KEY]
        assert {src.tool for src in store._sources.values() if not src.trusted} == {"search_events"}
        s.call("lookup", {"name": "x"})
        assert {src.tool for src in store._sources.values() if not src.trusted} == {"search_events"}
