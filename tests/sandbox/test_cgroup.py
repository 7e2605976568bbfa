"""cgroup handling: v1 for real on this machine; v2 detection against a directory laid out
like a v2 mount (a stand-in, since this kernel has memory/pids on v1 — said so here)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from shieldwall.sandbox import cgroup


def test_detects_a_usable_layout_here() -> None:
    layout, why = cgroup.detect()
    if layout is None:
        pytest.skip(f"no writable cgroup here: {why}")
    assert layout.version in (1, 2)


def test_run_group_counts_kills_and_is_removed() -> None:
    layout, why = cgroup.detect()
    if layout is None:
        pytest.skip(why)
    cg = cgroup.RunCgroup.create(layout, 64 << 20, 8)
    p = subprocess.Popen(["sleep", "30"], preexec_fn=cg.join_in_child)
    time.sleep(0.05)
    assert p.pid in cg.pids()
    assert cg.kill()
    assert p.wait(timeout=5) == -9
    dirs = list(cg.dirs)
    cg.destroy()
    assert not any(d.exists() for d in dirs)


def test_pids_limit_is_enforced_and_counted() -> None:
    layout, why = cgroup.detect()
    if layout is None:
        pytest.skip(why)
    cg = cgroup.RunCgroup.create(layout, 64 << 20, 4)
    try:
        out = subprocess.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait"],
                             preexec_fn=cg.join_in_child, capture_output=True, text=True,
                             timeout=20)
        assert "fork" in out.stderr.lower() or "resource" in out.stderr.lower()
        assert cg.stats()["pids_max_hits"] > 0
    finally:
        cg.destroy()


def _fake_v2(tmp: Path, subtree: str, writable: bool = True) -> Path:
    (tmp / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp / "cgroup.subtree_control").write_text(subtree)
    if not writable:
        os.chmod(tmp / "cgroup.subtree_control", 0o444)
    return tmp


def test_v2_with_delegated_subtree_is_detected(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup, "_ROOT", tmp_path / "nope")
    base = _fake_v2(tmp_path, "memory pids\n")
    (tmp_path / "nope").mkdir()
    (tmp_path / "nope" / "cgroup.controllers").write_text("memory pids")
    layout, why = cgroup.detect(str(base))
    assert layout is not None and layout.version == 2 and layout.memory_base == base, why


def test_v2_enables_controllers_for_children(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup, "_ROOT", tmp_path / "root")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "cgroup.controllers").write_text("memory pids")
    base = _fake_v2(tmp_path, "")
    layout, _ = cgroup.detect(str(base))
    assert layout is not None
    assert (base / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_v2_without_pids_controller_says_why(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroup, "_ROOT", tmp_path / "root")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "cgroup.controllers").write_text("memory")
    (tmp_path / "cgroup.controllers").write_text("memory\n")
    layout, why = cgroup.detect(str(tmp_path))
    assert layout is None and "lacks memory/pids" in why


def test_v2_stats_are_parsed(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (d / "memory.peak").write_text("1048576\n")
    (d / "pids.events").write_text("max 2\n")
    (d / "pids.peak").write_text("7\n")
    (d / "cpu.stat").write_text("usage_usec 900\nuser_usec 600\nsystem_usec 300\n")
    cg = cgroup.RunCgroup(cgroup.CgroupLayout(2, tmp_path, tmp_path), [d])
    assert cg.stats() == {"oom_kills": 1, "memory_peak": 1048576, "pids_max_hits": 2,
                          "pids_peak": 7, "cpu_user_us": 600, "cpu_sys_us": 300}


def test_stale_groups_of_dead_processes_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / "shieldwall-999999999-1"
    alive = tmp_path / f"shieldwall-{os.getpid()}-1"
    other = tmp_path / "not-ours"
    for d in (dead, alive, other):
        d.mkdir()
    n = cgroup.sweep_stale(cgroup.CgroupLayout(2, tmp_path, tmp_path))
    assert n == 1 and not dead.exists() and alive.exists() and other.exists()
