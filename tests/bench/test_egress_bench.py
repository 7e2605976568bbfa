"""``shieldwall bench egress`` end to end with tiny counts: both tables are written, the
CPU-bound one first, the service-time scenario in its own section."""

from __future__ import annotations

from pathlib import Path

from shieldwall.bench.egress import command


def test_egress_bench_writes_both_sections(tmp_path: Path) -> None:
    command(n=20, n_large=2, concurrency=2, rounds=1, seconds=5.0, service_ms=[1.0],
            service_connections=4, n_service=40, out=tmp_path)
    text = (tmp_path / "egress.md").read_text(encoding="utf-8")
    strict, _, extra = text.partition("## A different scenario, not CPU-bound")
    assert extra, "the service-time scenario has its own section"
    for body in ("small GET", "1 MB JSON POST (inspected)", "1 MB GET response"):
        assert sum(line.startswith(f"| {body} |") for line in strict.splitlines()) == 4
    rows = [line for line in extra.splitlines() if line.startswith("| 1 ms |")]
    assert [r.split(" | ")[1] for r in rows] == [
        "direct", "proxy (policy)", "proxy (gate)", "proxy (gate, no audit)"]
    assert "not the figure the target is judged on" in extra
