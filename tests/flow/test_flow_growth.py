"""A long session stays cheap and exact: identical results are recorded once, and a
fingerprint shared by many results keeps every one of them (taint is never dropped)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowkit import SECRETS_TXT, make_wall

from shieldwall import Denied
from shieldwall.flow.layer import EXTRAS_KEY
from shieldwall.flow.store import MemoryFlowStore


def test_polling_one_tool_records_its_result_once(tmp_path: Path) -> None:
    wall, _ = make_wall(tmp_path)
    with wall.session(agent="helper", role="assistant") as s:
        for _ in range(300):
            s.call("read_file", {"path": "secrets.txt"})
        store = s.state.extras[EXTRAS_KEY]
        assert isinstance(store, MemoryFlowStore)
        assert len(store._sources) == 1
        # ...and what was recorded once still taints the session.
        with pytest.raises(Denied) as e:
            s.call("send_email", {"to": "someone@else.example", "subject": "x", "body": SECRETS_TXT})
        assert "flow.confidential_to_external" in e.value.rules


def test_a_fingerprint_shared_by_many_results_keeps_every_source() -> None:
    from shieldwall.flow.fingerprints import Fingerprinter, Settings

    fp = Fingerprinter(Settings())
    store = MemoryFlowStore()
    shared = "Quarterly report, internal distribution only. " * 3
    for i in range(40):  # past the point where a fingerprint's id list becomes a set
        store.record(f"tool{i}", i % 3, True, fp.seen(shared + f" unique payload number {i} xq{i}zz"), set())
    m = store.match(fp.query(shared))
    assert {x.source.tool for x in m} == {f"tool{i}" for i in range(40)}


def test_same_text_from_another_tool_is_recorded_apart(tmp_path: Path) -> None:
    wall, _ = make_wall(tmp_path)
    with wall.session(agent="helper", role="assistant") as s:
        s.call("read_file", {"path": "menu.txt"})
        s.call("read_file", {"path": "menu.txt"})
        s.call("read_file", {"path": "secrets.txt"})
        store = s.state.extras[EXTRAS_KEY]
        assert isinstance(store, MemoryFlowStore)
        assert len(store._sources) == 2


class _FlakyStore(MemoryFlowStore):
    """The store is unreachable for its first write (a Redis blip)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    def record(self, *args: object, **kwargs: object) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unavailable")
        super().record(*args, **kwargs)  # type: ignore[arg-type]


def test_a_result_the_store_failed_to_take_is_recorded_when_it_comes_again(tmp_path: Path) -> None:
    wall, _ = make_wall(tmp_path)
    with wall.session(agent="helper", role="assistant") as s:
        store = s.state.extras[EXTRAS_KEY] = _FlakyStore()
        with pytest.raises(Denied) as first:  # the write failed: the gate refuses the result
            s.call("read_file", {"path": "secrets.txt"})
        assert "gate.layer_error" in first.value.rules
        s.call("read_file", {"path": "secrets.txt"})  # same result again: now recorded
        assert len(store._sources) == 1
        with pytest.raises(Denied) as e:
            s.call("send_email", {"to": "someone@else.example", "subject": "x", "body": SECRETS_TXT})
        assert "flow.confidential_to_external" in e.value.rules
