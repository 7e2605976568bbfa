"""Legitimate flows pass: public data out, internal data to internal sinks, new text."""

from __future__ import annotations

import json
from pathlib import Path

from flowkit import Sent

from shieldwall import Shieldwall, ToolCall, Verdict

DATA = Path(__file__).resolve().parents[1] / "data" / "flows_benign.jsonl"


def test_public_data_to_external_sink_is_allowed(wall_and_sent: tuple[Shieldwall, Sent]) -> None:
    wall, sent = wall_and_sent
    with wall.session(agent="helper", role="assistant") as s:
        forecast = s.call("weather", {"city": "Porto"})
        assert s.call("send_email", {"to": "me@example.com", "body": forecast}) == "sent"
    assert sent[0]["body"] == forecast


def test_internal_data_to_internal_sink_is_allowed(wall_and_sent: tuple[Shieldwall, Sent]) -> None:
    wall, _sent = wall_and_sent
    with wall.session(agent="helper", role="assistant") as s:
        runbook = s.call("search_docs", {"query": "rotate credentials"})
        assert s.call("post_team_chat", {"channel": "platform", "text": runbook}) == "posted"


def test_sink_call_in_a_fresh_session_is_allowed(wall_and_sent: tuple[Shieldwall, Sent]) -> None:
    wall, _ = wall_and_sent
    with wall.session(agent="helper", role="assistant") as s:
        assert s.call("send_email", {"to": "me@example.com", "body": "hello"}) == "sent"


def test_new_text_after_reading_private_data_is_allowed(wall_and_sent: tuple[Shieldwall, Sent]) -> None:
    wall, _ = wall_and_sent
    with wall.session(agent="helper", role="assistant") as s:
        s.call("read_file", {"path": "secrets.txt"})
        body = "I checked the file you asked about; the values are there. Talk tomorrow."
        assert s.call("send_email", {"to": "me@example.com", "body": body}) == "sent"


def test_benign_flow_set_false_positive_rate(tmp_path: Path) -> None:
    """Each benign flow: results the session read, then one sink call that must pass.
    The rate is printed for the report; the test holds it under 5%."""
    from flowkit import POLICY, make_wall

    flows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    assert len(flows) >= 40
    refused = []
    for flow in flows:
        wall, _ = make_wall(tmp_path, POLICY.replace("trifecta: {mode: deny}",
                                                     "trifecta: {mode: off}"))
        with wall.session(agent="helper", role="assistant") as s:
            for seen in flow["seen"]:
                from shieldwall import ToolResult

                d = s.decide(ToolResult(seen["tool"], {}, seen["text"]))
                assert d.allowed
            d = s.decide(ToolCall(flow["sink"]["tool"], flow["sink"]["args"]))
            if d.verdict != Verdict.ALLOW:
                refused.append((flow["id"], d.rules()))
    rate = len(refused) / len(flows)
    print(f"\nbenign flows: {len(flows)}, refused: {len(refused)}, FPR = {rate:.1%} {refused}")
    assert rate <= 0.05, refused
