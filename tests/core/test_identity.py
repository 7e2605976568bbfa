"""Signed agent identity: sessions open only from valid assertions; delegation narrows."""

from __future__ import annotations

import jwt
import pytest

from shieldwall import ShieldwallError, ToolCall
from shieldwall.identity import AgentKey, InvalidAssertion
from shieldwall.policy.load import parse_policy

from .conftest import make_wall

ORCH = AgentKey.generate()
WORKER = AgentKey.generate()
MALLORY = AgentKey.generate()


def policy():
    return parse_policy(f"""
agents:
  orchestrator: {{roles: [operator, reader], public_key: "{ORCH.public_b64()}", may_delegate_to: [worker]}}
  worker: {{roles: [reader], public_key: "{WORKER.public_b64()}"}}
roles:
  reader: {{tools: [search_knowledge_base]}}
  operator: {{tools: [search_knowledge_base, send_email]}}
""")


@pytest.fixture
def wall(tmp_path):
    now = [1_000_000.0]
    w = make_wall(policy(), tmp_path, clock=lambda: now[0])
    w.now = now
    return w


def test_valid_assertion_opens_session(wall):
    tok = WORKER.assertion(issuer="worker", role="reader", now=wall.now[0])
    s = wall.session_from_assertion(tok)
    assert (s.state.agent, s.state.role) == ("worker", "reader")
    assert s.decide(ToolCall("search_knowledge_base", {"query": "q"})).allowed


def test_pinned_agent_cannot_open_by_name(wall):
    with pytest.raises(ShieldwallError, match="pinned public key"):
        wall.session(agent="worker", role="reader")


@pytest.mark.parametrize("case", ["forged", "expired", "replayed", "wrong_aud", "role_not_assigned",
                                  "unknown_issuer", "too_long", "hs256_with_public_key", "none_alg"])
def test_bad_assertions_refused(wall, case):
    t = wall.now[0]
    if case == "forged":
        tok = MALLORY.assertion(issuer="worker", role="reader", now=t)
    elif case == "expired":
        tok = WORKER.assertion(issuer="worker", role="reader", ttl=60, now=t - 120)
    elif case == "replayed":
        tok = WORKER.assertion(issuer="worker", role="reader", now=t)
        wall.session_from_assertion(tok)
    elif case == "wrong_aud":
        tok = WORKER.assertion(issuer="worker", role="reader", audience="other-service", now=t)
    elif case == "role_not_assigned":
        tok = WORKER.assertion(issuer="worker", role="operator", now=t)
    elif case == "unknown_issuer":
        tok = MALLORY.assertion(issuer="mallory", role="reader", now=t)
    elif case == "too_long":
        tok = WORKER.assertion(issuer="worker", role="reader", ttl=86400, now=t)
    elif case == "hs256_with_public_key":
        tok = jwt.encode({"iss": "worker", "sub": "worker", "aud": "shieldwall", "role": "reader",
                          "iat": int(t), "exp": int(t + 60), "jti": "x"},
                         WORKER.public_b64(), algorithm="HS256")
    else:
        tok = jwt.encode({"iss": "worker", "sub": "worker", "aud": "shieldwall", "role": "reader",
                          "iat": int(t), "exp": int(t + 60), "jti": "y"}, None, algorithm="none")
    with pytest.raises(InvalidAssertion):
        wall.session_from_assertion(tok)


def test_delegation_narrows_to_roles_both_agents_hold(wall):
    t = wall.now[0]
    ok = ORCH.assertion(issuer="orchestrator", agent="worker", role="reader", now=t)
    s = wall.session_from_assertion(ok)
    assert (s.state.agent, s.state.role) == ("worker", "reader")
    widen = ORCH.assertion(issuer="orchestrator", agent="worker", role="operator", now=t)
    with pytest.raises(InvalidAssertion, match="worker"):
        wall.session_from_assertion(widen)
    # a worker cannot speak for the orchestrator
    up = WORKER.assertion(issuer="worker", agent="orchestrator", role="reader", now=t)
    with pytest.raises(InvalidAssertion):
        wall.session_from_assertion(up)


def test_cli_keygen_and_assert(tmp_path):
    import subprocess
    import sys

    def sw(*a):
        return subprocess.run([sys.executable, "-m", "shieldwall.cli", "identity", *a],
                              capture_output=True, text=True, timeout=60)

    r = sw("keygen", "--out", str(tmp_path / "k.pem"))
    assert r.returncode == 0, r.stderr
    pub = r.stdout.strip()
    assert sw("keygen", "--out", str(tmp_path / "k.pem")).returncode == 2  # never overwrite
    tok = sw("assert", "--key", str(tmp_path / "k.pem"), "--issuer", "bot", "--role", "reader").stdout.strip()
    w = make_wall(parse_policy(f'agents:\n  bot: {{roles: [reader], public_key: "{pub}"}}\n'
                               "roles:\n  reader: {tools: [search_knowledge_base]}\n"), tmp_path)
    assert w.session_from_assertion(tok).state.agent == "bot"
