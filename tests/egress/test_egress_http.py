"""The http_request client and tool against real loopback servers: allowed requests pass
unchanged; redirects, rebinding, private names, methods, secrets and sizes are refused."""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path

import pytest
from egress_kit import Upstream, make_policy

from shieldwall.actions import Egress, ModelOutput, Verdict
from shieldwall.egress.http_tool import EgressClient
from shieldwall.egress.layer import egress_policy
from shieldwall.egress.markdown import MARKER
from shieldwall.egress.ssrf import StaticResolver
from shieldwall.errors import Denied
from shieldwall.policy.load import parse_policy
from shieldwall.wall import Shieldwall

LIVE = "db-pass-Zq8rT2vLw9Xk"


def client(up: Upstream, role: str = "operator", **kw) -> EgressClient:
    p = make_policy(up.port, hosts=kw.pop("hosts", ["allowed.test", "*.allowed.test"]), **kw)
    return EgressClient(p, role=role, live_secrets=lambda: [LIVE])


def test_allowed_request_passes_unchanged(upstream: Upstream) -> None:
    with client(upstream) as c:
        body = json.dumps({"q": "weather in paris"}).encode()
        r = c.request("POST", f"http://allowed.test:{upstream.port}/api/v1/items?x=1&y=%20z",
                      {"Content-Type": "application/json", "X-Trace": "abc"}, body)
    assert r.status == 200
    seen = upstream.seen[-1]
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/api/v1/items?x=1&y=%20z", body)
    assert seen["headers"]["Host"] == f"allowed.test:{upstream.port}"
    assert seen["headers"]["X-Trace"] == "abc"
    assert json.loads(r.body)["body"] == body.decode()


def test_redirect_to_loopback_literal_is_refused(upstream: Upstream) -> None:
    upstream.redirects["/go"] = f"http://127.0.0.1:{upstream.port}/admin"
    with client(upstream, role="reader") as c, pytest.raises(Denied) as e:
        c.request("GET", f"http://allowed.test:{upstream.port}/go")
    assert e.value.rules == ["egress.host_not_allowed"]
    assert [s["path"] for s in upstream.seen] == ["/go"]


def test_redirect_to_a_private_name_is_refused(upstream: Upstream) -> None:
    upstream.redirects["/go"] = f"http://internal.allowed.test:{upstream.port}/"
    upstream.redirects["/meta"] = "http://169.254.169.254/latest/meta-data/"
    with client(upstream, role="reader", hosts=["allowed.test", "*.allowed.test", "169.254.169.254"]) as c:
        with pytest.raises(Denied) as e:
            c.request("GET", f"http://allowed.test:{upstream.port}/go")
        assert e.value.rules == ["egress.private_address"]
        with pytest.raises(Denied) as e:
            c.request("GET", f"http://allowed.test:{upstream.port}/meta")
        assert e.value.rules == ["egress.private_address"]


def test_redirect_within_policy_is_followed_and_drops_credentials_across_hosts(upstream: Upstream) -> None:
    upstream.redirects["/a"] = f"http://api.allowed.test:{upstream.port}/b"
    with client(upstream) as c:
        r = c.request("POST", f"http://allowed.test:{upstream.port}/a",
                      {"Authorization": "Bearer t0ken", "X-Keep": "1"}, b"x=1")
    assert r.status == 200 and len(r.hops) == 2
    last = upstream.seen[-1]
    assert (last["method"], last["path"]) == ("GET", "/b")
    assert "Authorization" not in last["headers"] and last["headers"]["X-Keep"] == "1"


def test_name_resolving_to_private_address_is_refused(upstream: Upstream) -> None:
    with client(upstream) as c, pytest.raises(Denied) as e:
        c.request("GET", f"http://internal.allowed.test:{upstream.port}/")
    assert e.value.rules == ["egress.private_address"]


def test_dns_rebinding_finds_no_second_lookup(upstream: Upstream) -> None:
    res = StaticResolver({"rebind.allowed.test": ["127.0.0.1"]})
    p = make_policy(upstream.port, hosts=["*.allowed.test"], resolver=res)
    url = f"http://rebind.allowed.test:{upstream.port}/x"
    assert p.check(Egress("GET", url), "reader") == []  # the gate's check resolves once
    res.table["rebind.allowed.test"] = [ipaddress.ip_address("169.254.169.254")]
    with EgressClient(p, role="reader") as c:
        r = c.request("GET", url)
    assert r.status == 200 and res.calls == 1


def test_delete_from_reader_is_refused(upstream: Upstream) -> None:
    with client(upstream, role="reader") as c, pytest.raises(Denied) as e:
        c.request("DELETE", f"http://allowed.test:{upstream.port}/items/1")
    assert e.value.rules == ["egress.method_not_allowed"]
    assert upstream.seen == []


def test_secret_in_body_base64_hex_and_query_is_refused(upstream: Upstream) -> None:
    url = f"http://allowed.test:{upstream.port}/"
    with client(upstream) as c:
        for body in (LIVE.encode(), base64.b64encode(LIVE.encode()), LIVE.encode().hex().encode()):
            with pytest.raises(Denied) as e:
                c.request("POST", url, {}, b"data=" + body)
            assert e.value.rules == ["egress.secret_in_request"]
        with pytest.raises(Denied) as e:
            c.request("GET", url + "?token=" + LIVE)
        assert e.value.rules == ["egress.secret_in_request"]
    assert upstream.seen == []


def test_response_over_limit_is_refused(upstream: Upstream) -> None:
    with client(upstream, limits={"max_response_bytes": 1000}) as c:
        assert c.request("GET", f"http://allowed.test:{upstream.port}/big/1000").status == 200
        with pytest.raises(Denied) as e:
            c.request("GET", f"http://allowed.test:{upstream.port}/big/5000")
    assert e.value.rules == ["egress.response_too_large"]


# --------------------------------------------------------------------------- through the wall


def _wall(tmp_path: Path, port: int) -> Shieldwall:
    policy = parse_policy(f"""
version: 1
roles:
  reader: {{tools: [http_request], http_methods: [GET]}}
  admin: {{tools: [http_request], http_methods: [GET, POST, PUT, DELETE]}}
tools:
  http_request: {{sink: true}}
egress:
  allow_hosts: ["allowed.test", "*.allowed.test"]
  schemes: [http]
  ports: [{port}]
  allow_private: ["127.0.0.1"]
audit: {{path: audit.db}}
gate: {{layer_budget_ms: 10000}}  # a loaded CI machine must not turn into a timing test
""")
    wall = Shieldwall(policy, base_dir=tmp_path)
    egress_policy(wall).resolver.inner = StaticResolver(
        {"allowed.test": ["127.0.0.1"], "internal.allowed.test": ["10.0.0.7"]})
    return wall  # the policy names http_request: build() registered the built-in tool


def test_egress_actions_are_decided_by_the_gate(tmp_path: Path, upstream: Upstream) -> None:
    wall = _wall(tmp_path, upstream.port)
    with wall.session(agent="a1", role="reader") as s:
        ok = s.decide(Egress("GET", f"http://allowed.test:{upstream.port}/"))
        assert ok.verdict == Verdict.ALLOW
        bad = s.decide(Egress("GET", f"http://allowed.test.evil.test:{upstream.port}/"))
        assert bad.rules() == ["egress.host_not_allowed"]
        dele = s.decide(Egress("DELETE", f"http://allowed.test:{upstream.port}/"))
        assert not dele.allowed and dele.rules()[0].endswith("method_not_allowed")
        priv = s.decide(Egress("GET", f"http://internal.allowed.test:{upstream.port}/"))
        assert priv.rules() == ["egress.private_address"]


def test_http_request_tool_goes_through_the_same_policy(tmp_path: Path, upstream: Upstream) -> None:
    wall = _wall(tmp_path, upstream.port)
    upstream.redirects["/r"] = f"http://127.0.0.1:{upstream.port}/"
    # A fresh session per call: the flow room may hold later sink calls for approval.
    with wall.session(agent="a1", role="reader") as s:
        out = s.call("http_request", {"url": f"http://allowed.test:{upstream.port}/hello"})
        assert out["status"] == 200 and json.loads(out["body"])["path"] == "/hello"
    with wall.session(agent="a1", role="reader") as s, pytest.raises(Denied) as e:
        s.call("http_request", {"url": f"http://evil.test:{upstream.port}/"})
    assert e.value.rules == ["egress.host_not_allowed"]
    with wall.session(agent="a1", role="reader") as s, pytest.raises(Denied) as e:
        s.call("http_request", {"url": f"http://allowed.test:{upstream.port}/r"})
    assert e.value.rules == ["egress.host_not_allowed"]
    with wall.session(agent="a2", role="admin") as s, pytest.raises(Denied) as e:
        s.call("http_request", {"url": f"http://allowed.test:{upstream.port}/",
                                "method": "POST", "body": "k=AKIAQYLPMN5HHHFPZAM2"})
    assert e.value.rules == ["egress.secret_in_request"]
    assert [x["path"] for x in upstream.seen] == ["/hello", "/r"]


def test_model_output_links_to_other_hosts_are_removed(tmp_path: Path, upstream: Upstream) -> None:
    wall = _wall(tmp_path, upstream.port)
    with wall.session(agent="a1", role="reader") as s:
        d = s.decide(ModelOutput("Here: ![x](https://evil.test/p.png?d=secret) done"))
    assert d.verdict == Verdict.CHANGES and d.rules() == ["egress.url_removed"]
    assert isinstance(d.action, ModelOutput) and d.action.text == f"Here: {MARKER} done"


def test_live_secrets_known_to_the_secrets_room_are_refused(tmp_path: Path, upstream: Upstream) -> None:
    wall = _wall(tmp_path, upstream.port)
    value = "vault-value-9Qe2LmX7pZ"
    wall.set_redactor(lambda t: t.replace(value, "[REDACTED]"))  # as the secrets room installs it
    url = f"http://allowed.test:{upstream.port}/"
    with wall.session(agent="a2", role="admin") as s:
        d = s.decide(Egress("POST", url, {"X-Note": "hi"}, f"v={value}".encode()))
        assert d.rules() == ["egress.secret_in_request"] and value not in str(d.findings)
        d = s.decide(Egress("GET", url + "?q=" + value))
        assert d.rules() == ["egress.secret_in_request"]
        assert s.decide(Egress("POST", url, {}, b"v=harmless")).allowed


def test_with_the_secrets_room_values_are_refused_but_placeholders_resolve_after_the_gate(
        tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    value = "orders-api-Tk9vQ2mZ7xLw"
    monkeypatch.setenv("SHIELDWALL_SECRET_ORDERS_TOKEN", value)
    policy = parse_policy(f"""
version: 1
roles:
  operator: {{tools: [http_request], http_methods: [GET, POST]}}
tools:
  http_request: {{}}
secrets:
  grants: {{http_request: ["orders/token"]}}
egress:
  allow_hosts: ["allowed.test"]
  schemes: [http]
  ports: [{upstream.port}]
  allow_private: ["127.0.0.1"]
audit: {{path: audit.db}}
gate: {{layer_budget_ms: 10000}}
""")
    wall = Shieldwall(policy, base_dir=tmp_path)
    egress_policy(wall).resolver.inner = StaticResolver({"allowed.test": ["127.0.0.1"]})
    url = f"http://allowed.test:{upstream.port}/orders"
    with wall.session(agent="a", role="operator") as s:
        # The agent has the value in hand (a leak): refused, plain or base64.
        for body in (value.encode(), base64.b64encode(value.encode())):
            d = s.decide(Egress("POST", url, {}, b"x=" + body))
            assert "egress.secret_in_request" in d.rules(), d.rules()
        # The agent names the secret; the executor puts the value in after the gate.
        out = s.call("http_request", {"url": url,
                                      "headers": {"Authorization": "Bearer {{secret:orders/token}}"}})
    assert out["status"] == 200
    assert upstream.seen[-1]["headers"]["Authorization"] == f"Bearer {value}"
