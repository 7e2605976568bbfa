"""Budgets, rates and the kill switch behave the same on the embedded and shared stores.

The shared store runs against the real Redis server on 127.0.0.1:6379.
"""

from __future__ import annotations

import uuid

import pytest

from shieldwall import Denied, ToolCall
from shieldwall.policy.load import parse_policy
from shieldwall.stores import MemoryStore, RedisStore, StoreError

from .conftest import make_wall

POLICY = """
roles:
  r: {tools: [ping], budget: {calls: 3}}
tools:
  ping: {budget: {per_minute: 60, burst: 2}}
"""


def _redis() -> RedisStore:
    store = RedisStore(prefix=f"swtest:{uuid.uuid4().hex}:")
    try:
        store.is_revoked("probe")
    except StoreError as e:
        pytest.fail(f"Redis on 127.0.0.1:6379 is required for the shared-store tests: {e}")
    return store


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request):
    return MemoryStore() if request.param == "memory" else _redis()


def test_session_budget_and_rate(store, tmp_path):
    now = [100.0]
    w = make_wall(parse_policy(POLICY), tmp_path, store=store, clock=lambda: now[0])
    w.tool(lambda: "pong", name="ping")
    with w.session(agent="a", role="r") as s:
        s.call("ping")
        s.call("ping")
        with pytest.raises(Denied) as e:
            s.call("ping")
        assert e.value.rules == ["budget.rate_limited"]
        now[0] += 2
        s.call("ping")
        with pytest.raises(Denied) as e:
            s.call("ping")
        assert e.value.rules == ["budget.session_exhausted"]


def test_two_gateways_share_one_budget(store, tmp_path):
    """Two Shieldwall instances (two workers) on one store enforce one budget."""
    policy = parse_policy("roles:\n  r: {tools: [ping], budget: {calls: 4}}\n")
    w1 = make_wall(policy, tmp_path, store=store)
    w2 = make_wall(policy, tmp_path, store=store)
    for w in (w1, w2):
        w.tool(lambda: "pong", name="ping")
    s1 = w1.session(agent="a", role="r", session_id="shared-session")
    s2 = w2.session(agent="a", role="r", session_id="shared-session")
    allowed = 0
    for i in range(8):
        s = s1 if i % 2 else s2
        if s.decide(ToolCall("ping", {})).allowed:
            allowed += 1
    assert allowed == 4


def test_kill_switch_seen_by_other_worker(store, tmp_path):
    policy = parse_policy("roles:\n  r: {tools: [ping]}\n")
    w1 = make_wall(policy, tmp_path, store=store)
    w2 = make_wall(policy, tmp_path, store=store)
    s2 = w2.session(agent="rogue", role="r")
    assert s2.decide(ToolCall("ping", {})).allowed
    w1.kill(agent="rogue")
    assert s2.decide(ToolCall("ping", {})).rules() == ["identity.revoked"]


def test_unreachable_redis_fails_closed(tmp_path):
    dead = RedisStore(url="redis://127.0.0.1:1/0")
    w = make_wall(parse_policy(POLICY), tmp_path, store=dead)
    with w.session(agent="a", role="r") as s:
        d = s.decide(ToolCall("ping", {}))
    assert not d.allowed and d.rules() == ["gate.layer_error"]
    assert "redis store unavailable" in d.reason()


@pytest.mark.redis
def test_the_policy_store_section_puts_the_counters_in_redis(tmp_path):
    """`store.backend: redis` in the policy alone (no store passed in code): two walls
    built from it — two gateway or proxy workers — count one budget and see one kill."""
    prefix = f"swtest:{uuid.uuid4().hex}:"
    text = ("roles:\n  r: {tools: [ping], budget: {calls: 3}}\n"
            f"store: {{backend: redis, prefix: '{prefix}'}}\n")
    w1, w2 = make_wall(parse_policy(text), tmp_path), make_wall(parse_policy(text), tmp_path)
    assert isinstance(w1.store, RedisStore) and w1.store.prefix == prefix
    s1 = w1.session(agent="a", role="r", session_id="one-session")
    s2 = w2.session(agent="a", role="r", session_id="one-session")
    verdicts = [s.decide(ToolCall("ping", {})).allowed for s in (s1, s2, s1, s2, s1)]
    assert verdicts == [True, True, True, False, False]
    other = w2.session(agent="b", role="r")
    assert other.decide(ToolCall("ping", {})).allowed
    w1.kill(agent="b")
    assert other.decide(ToolCall("ping", {})).rules() == ["identity.revoked"]
    # Without the section each wall counts alone.
    plain = "roles:\n  r: {tools: [ping], budget: {calls: 3}}\n"
    m1, m2 = make_wall(parse_policy(plain), tmp_path), make_wall(parse_policy(plain), tmp_path)
    assert isinstance(m1.store, MemoryStore)
    t1 = m1.session(agent="a", role="r", session_id="one-session")
    t2 = m2.session(agent="a", role="r", session_id="one-session")
    assert all(s.decide(ToolCall("ping", {})).allowed for s in (t1, t2, t1, t2, t1, t2))


def test_a_bad_store_section_names_the_key():
    from shieldwall.errors import PolicyError

    with pytest.raises(PolicyError, match="store"):
        parse_policy("store: {backend: memcached}\n")


def test_any_revoked_sees_each_key(store):
    assert not store.any_revoked("session:s1", "agent:a1")
    store.revoke("agent:a1")
    assert store.any_revoked("session:s1", "agent:a1")
    assert store.any_revoked("agent:a1", "session:s1")
    assert not store.any_revoked("session:s1", "agent:a2")
    assert store.unrevoke("agent:a1") and not store.unrevoke("agent:a1")
    assert not store.any_revoked("session:s1", "agent:a1")
