"""Secrets through the library face: placeholders resolved only in the executor, values
never in a model-visible result, an exception message, a log line or the audit bytes."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from secretkit import Clock, SqliteAudit

from shieldwall import Denied, Shieldwall, ToolError
from shieldwall.policy.load import parse_policy
from shieldwall.secrets import layer as secrets_layer
from shieldwall.secrets.backends import FileBackend
from shieldwall.secrets.layer import RedactingFilter, manager_of
from shieldwall.secrets.placeholders import Ref

STRIPE = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"

POLICY = """
version: 1
roles:
  billing:
    tools: [charge, charge_and_fail, whoami, send_report]
tools:
  send_report:
    sink: true
secrets:
  file: {path: .shieldwall/secrets.enc, key_file: .shieldwall/secrets.key}
  grants:
    charge: [stripe/api_key, github/*]
    charge_and_fail: [stripe/api_key]
  ttl: 30s
  grace: 2m
"""


def forms(v: str) -> list[str]:
    b = v.encode()
    return [v, base64.b64encode(b).decode(), b.hex(), quote(v, safe=""),
            base64.b64encode(b).decode()[:-4]]


def make(tmp_path: Path, clock: Clock, audit: Any = False,
         policy: str = POLICY) -> tuple[Shieldwall, list[dict[str, Any]]]:
    key = FileBackend.generate_key(tmp_path / ".shieldwall/secrets.key")
    fb = FileBackend(tmp_path / ".shieldwall/secrets.enc", key=key)
    fb.put(Ref("stripe", "api_key"), STRIPE)
    wall = Shieldwall(parse_policy(policy), base_dir=tmp_path, audit=audit, clock=clock,
                      load_rooms=False)
    for layer in secrets_layer.build(wall):
        wall.gate.add(layer)
    seen: list[dict[str, Any]] = []

    @wall.tool
    def charge(api_key: str, amount: float, gh: str = "") -> dict[str, Any]:
        seen.append({"api_key": api_key, "gh": gh})
        b = api_key.encode()
        return {"ok": True, "debug": f"charged with key {api_key}",
                "b64": base64.b64encode(b"Bearer " + b).decode(), "hex": b.hex(),
                "url": "https://api.stripe.example/v1?key=" + quote(api_key, safe=""),
                "nested": [{"k": api_key}], "gh": gh}

    @wall.tool
    def charge_and_fail(api_key: str) -> None:
        raise RuntimeError(f"401 invalid key {api_key} "
                           f"({base64.b64encode(api_key.encode()).decode()})")

    @wall.tool
    def whoami(token: str = "") -> str:
        return "billing-bot"

    @wall.tool
    def send_report(text: str) -> str:
        return "sent"

    return wall, seen


def test_placeholder_resolves_inside_the_executor_and_result_is_redacted(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIELDWALL_SECRET_GITHUB_TOKEN", GITHUB)
    wall, seen = make(tmp_path, clock)
    with wall.session(agent="bot", role="billing") as s:
        out = s.call("charge", {"api_key": "{{secret:stripe/api_key}}", "amount": 5,
                                "gh": "{{ secret:github/token }}"})
    assert seen == [{"api_key": STRIPE, "gh": GITHUB}]  # the tool got the real values
    text = repr(out)
    for v in (STRIPE, GITHUB):
        for f in forms(v):
            assert f not in text
    assert out["ok"] is True and "[REDACTED]" in out["debug"]


def test_secret_never_in_result_error_or_audit_bytes(tmp_path: Path, clock: Clock,
                                                      sqlite_audit: SqliteAudit) -> None:
    wall, _ = make(tmp_path, clock, audit=sqlite_audit)
    with wall.session(agent="bot", role="billing") as s:
        s.call("charge", {"api_key": "{{secret:stripe/api_key}}", "amount": 1})
        with pytest.raises(ToolError) as e:
            s.call("charge_and_fail", {"api_key": "{{secret:stripe/api_key}}"})
        with pytest.raises(Denied) as d:  # the model somehow holds the value
            s.call("send_report", {"text": f"key={STRIPE}"})
    assert "secrets.live_value_in_args" in d.value.rules
    for f in forms(STRIPE):
        assert f not in str(e.value)
        assert f not in str(d.value)
    sqlite_audit.db.commit()
    raw = sqlite_audit.path.read_bytes()
    assert b"charge_and_fail" in raw and b"live_value_in_args" in raw  # it was recorded
    for f in forms(STRIPE):
        assert f.encode() not in raw


def test_secret_not_granted_to_the_tool_is_refused_at_the_gate(tmp_path: Path, clock: Clock) -> None:
    wall, _ = make(tmp_path, clock)
    with wall.session(agent="bot", role="billing") as s:
        with pytest.raises(Denied) as e:
            s.call("whoami", {"token": "{{secret:stripe/api_key}}"})
        assert "secrets.not_granted" in e.value.rules
        with pytest.raises(Denied) as e:  # an exfil sink asking for the value
            s.call("send_report", {"text": "{{secret:stripe/api_key}}"})
        assert "secrets.not_granted" in e.value.rules


def test_rotation_is_picked_up_without_restart(tmp_path: Path, clock: Clock) -> None:
    wall, seen = make(tmp_path, clock)
    fb = FileBackend(tmp_path / ".shieldwall/secrets.enc",
                     key_file=tmp_path / ".shieldwall/secrets.key")
    args = {"api_key": "{{secret:stripe/api_key}}", "amount": 1}
    with wall.session(agent="bot", role="billing") as s:
        s.call("charge", args)
        fb.put(Ref("stripe", "api_key"), "sk_live_ROTATED0000000000000001")
        s.call("charge", args)  # within the TTL: cached value
        clock.advance(31)
        s.call("charge", args)  # re-read
        assert [x["api_key"] for x in seen] == [STRIPE, STRIPE, "sk_live_ROTATED0000000000000001"]
        m = manager_of(wall)
        assert m is not None
        # both the new and (for the grace period) the old value are redacted
        assert m.redactor.redact(f"{STRIPE} sk_live_ROTATED0000000000000001") == \
            "[REDACTED] [REDACTED]"
        clock.advance(121)
        m.redactor.expire(clock())
        assert STRIPE in m.redactor.redact(STRIPE)


def test_log_records_are_redacted(tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    wall, _ = make(tmp_path, clock)
    m = manager_of(wall)
    assert m is not None
    m.preload()
    log = logging.getLogger("shieldwall.test.secrets")
    caplog.handler.addFilter(RedactingFilter(m))
    with caplog.at_level(logging.INFO):
        log.info("calling stripe with %s", STRIPE)
    assert STRIPE not in caplog.text and "[REDACTED]" in caplog.text


def test_missing_secret_fails_closed_without_leaking_names_of_values(tmp_path: Path, clock: Clock) -> None:
    wall, _ = make(tmp_path, clock, policy=POLICY.replace("github/*", "missing/key"))
    with wall.session(agent="bot", role="billing") as s:
        with pytest.raises(ToolError) as e:
            s.call("charge", {"api_key": "{{secret:missing/key}}", "amount": 1})
    assert "missing/key" in str(e.value) and "not found" in str(e.value)


def test_model_output_with_a_live_value_is_redacted(tmp_path: Path, clock: Clock) -> None:
    wall, _ = make(tmp_path, clock)
    m = manager_of(wall)
    assert m is not None
    m.preload()
    with wall.session(agent="bot", role="billing") as s:
        d = s.check_output(f"Sure! The key is {base64.b64encode(STRIPE.encode()).decode()}")
    assert d.allowed and "secrets.redacted" in d.rules()
    assert STRIPE not in repr(d.action) and "[REDACTED]" in d.action.text  # type: ignore[attr-defined]
