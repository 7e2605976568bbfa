"""``shieldwall bench egress`` end to end with tiny counts: both tables are written, the
CPU-bound one first, the service-time scenario in its own section."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shieldwall.bench.egress import command


@pytest.mark.redis
def test_egress_bench_writes_both_sections(tmp_path: Path) -> None:
    """With Redis on 127.0.0.1:6379 (as in CI) the `shieldwall proxy` command rows run
    too: one worker on the memory store, then two workers sharing Redis."""
    command(n=20, n_large=2, concurrency=2, rounds=1, seconds=5.0, service_ms=[1.0],
            service_connections=4, n_service=40, native=False, workers=[2], out=tmp_path)
    text = (tmp_path / "egress.md").read_text(encoding="utf-8")
    strict, _, extra = text.partition("## A different scenario, not CPU-bound")
    assert extra, "the service-time scenario has its own section"
    for body in ("small GET", "1 MB JSON POST (inspected)", "1 MB GET response"):
        rows = [line.split(" | ") for line in strict.splitlines() if line.startswith(f"| {body} |")]
        assert [r[1] for r in rows] == [
            "direct", "proxy (policy)", "proxy (gate)", "proxy (gate, no audit)",
            "proxy command, 1 worker (gate, memory store)",
            "proxy command, 2 workers (gate, Redis store)"]
        for r in rows[4:]:  # the command relayed: a rate, and its processes' CPU (10 ms ticks)
            assert float(r[6]) > 0 and float(r[8]) >= 0
    rows = [line for line in extra.splitlines() if line.startswith("| 1 ms |")]
    assert [r.split(" | ")[1] for r in rows] == [
        "direct", "proxy (policy)", "proxy (gate)", "proxy (gate, no audit)",
        "proxy command, 1 worker (gate, memory store)", "proxy command, 2 workers (gate, Redis store)"]
    assert "not the figure the target is judged on" in extra


@pytest.mark.skipif(shutil.which("haproxy") is None,
                    reason="the native reference relay is a benchmark peer (apt-get install haproxy); "
                           "CI does not install it")
def test_egress_bench_runs_the_native_relay_reference_when_haproxy_is_installed(tmp_path: Path) -> None:
    command(n=20, n_large=2, concurrency=2, rounds=1, seconds=5.0, service_ms=[1.0],
            service_connections=4, n_service=40, native=True, workers=[0], out=tmp_path)
    strict = (tmp_path / "egress.md").read_text(encoding="utf-8").partition("## A different scenario")[0]
    for body in ("small GET", "1 MB JSON POST (inspected)", "1 MB GET response"):
        rows = [line.split(" | ") for line in strict.splitlines() if line.startswith(f"| {body} |")]
        assert [r[1] for r in rows][:4] == ["direct", "proxy (policy)", "proxy (gate)", "proxy (gate, no audit)"]
        native = rows[4]
        assert native[1].startswith("HAProxy ") and native[1].endswith("(C relay, reference)")
        assert float(native[6]) > 0 and float(native[8]) >= 0  # it relayed: a rate, its own CPU
    assert "it shows what a native relay gets on this machine" in strict
