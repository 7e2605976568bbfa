"""The HTTP face against a real uvicorn server on loopback."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from shieldwall import Shieldwall
from shieldwall.policy.load import parse_policy
from shieldwall.server.app import build_app

AGENT_TOKEN, PERSON_TOKEN = "agent-secret-token", "person-secret-token"


def _sha(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


POLICY = f"""
roles:
  reader: {{tools: [search_knowledge_base]}}
  admin: {{tools: [refund_order]}}
tools:
  refund_order:
    approval: true
    args:
      amount: {{maximum: 500}}
server:
  tokens:
    - {{name: framework, sha256: {_sha(AGENT_TOKEN)}, scopes: [decide]}}
    - {{name: alice, sha256: {_sha(PERSON_TOKEN)}, scopes: [approve, audit]}}
"""


@pytest.fixture
def base(tmp_path):
    wall = Shieldwall(parse_policy(POLICY), base_dir=tmp_path)
    cfg = wall.policy.server
    app = build_app(wall, {t.sha256: (t.name, frozenset(t.scopes)) for t in cfg.tokens})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(5)
    wall.close()


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_scopes(base):
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert httpx.post(f"{base}/v1/decide", json={}).status_code == 401
    assert httpx.post(f"{base}/v1/decide", json={}, headers=_h("wrong")).status_code == 401
    r = httpx.get(f"{base}/v1/approvals", headers=_h(AGENT_TOKEN))
    assert r.status_code == 403 and "approve" in r.json()["error"]


def test_decide_over_http(base):
    r = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "agent": "bot", "role": "reader",
        "action": {"kind": "tool_call", "tool": "refund_order", "args": {"amount": 5}}})
    assert r.status_code == 200 and r.json()["verdict"] == "deny"
    assert r.json()["findings"][0]["rule"] == "policy.tool_not_in_role"
    bad = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), content=b"[1, 2")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]


def test_approval_round_trip_bound_to_args(base):
    ask = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "agent": "billing", "role": "admin",
        "action": {"kind": "tool_call", "tool": "refund_order", "args": {"amount": 42}}}).json()
    assert ask["verdict"] == "ask"
    pending = httpx.get(f"{base}/v1/approvals", headers=_h(PERSON_TOKEN)).json()
    assert [p["id"] for p in pending] == [ask["approval"]] and pending[0]["args"] == {"amount": 42}
    page = httpx.get(f"{base}/", headers=_h(PERSON_TOKEN)).text
    assert ask["approval"] in page and "approve" in page
    ok = httpx.post(f"{base}/v1/approvals/{ask['approval']}", headers=_h(PERSON_TOKEN), json={"approve": True})
    assert ok.json()["status"] == "approved"
    again = httpx.post(f"{base}/v1/approvals/{ask['approval']}", headers=_h(PERSON_TOKEN), json={"approve": True})
    assert again.status_code == 409
    swapped = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "session": ask["session"], "approval": ask["approval"],
        "action": {"kind": "tool_call", "tool": "refund_order", "args": {"amount": 499}}}).json()
    assert swapped["verdict"] == "ask"
    granted = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "session": ask["session"], "approval": ask["approval"],
        "action": {"kind": "tool_call", "tool": "refund_order", "args": {"amount": 42}}}).json()
    assert granted["verdict"] == "allow"


def test_audit_and_metrics(base):
    httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "agent": "bot", "role": "reader", "action": {"kind": "tool_call", "tool": "nope"}})
    rows = httpx.get(f"{base}/v1/audit", params={"agent": "bot", "verdict": "deny"},
                     headers=_h(PERSON_TOKEN)).json()
    assert rows and rows[0]["tool"] == "nope" and rows[0]["agent"] == "bot"
    m = httpx.get(f"{base}/metrics", headers=_h(PERSON_TOKEN)).text
    assert 'shieldwall_decisions_total{verdict="deny"}' in m
    assert 'shieldwall_findings_total{rule="policy.tool_not_in_role"}' in m


def test_dashboard_login_cookie_and_form_approval(base):
    ask = httpx.post(f"{base}/v1/decide", headers=_h(AGENT_TOKEN), json={
        "agent": "billing", "role": "admin",
        "action": {"kind": "tool_call", "tool": "refund_order", "args": {"amount": 7}}}).json()
    with httpx.Client(base_url=base) as browser:
        assert browser.post("/login", data={"token": "guess"}).status_code == 401
        assert browser.post("/login", data={"token": PERSON_TOKEN}).status_code == 303
        assert ask["approval"] in browser.get("/").text
        r = browser.post(f"/v1/approvals/{ask['approval']}", data={"decision": "deny"})
        assert r.status_code == 303
    pending = httpx.get(f"{base}/v1/approvals", headers=_h(PERSON_TOKEN)).json()
    assert pending == []
