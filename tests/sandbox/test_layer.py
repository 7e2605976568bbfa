"""Sandbox runs through the gate: CodeRun actions decided by the policy, then executed and
audited (real Shieldwall, real bwrap)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from shieldwall.actions import CodeRun, Verdict
from shieldwall.audit import MemoryAuditLog
from shieldwall.errors import Denied
from shieldwall.policy.model import Policy
from shieldwall.sandbox import SandboxError
from shieldwall.sandbox.execute import run_code
from shieldwall.wall import Shieldwall

from .conftest import backend_or_skip

pytestmark = pytest.mark.bwrap

SECRET = "svc-key-" + "9f8e7d6c5b4a"


def policy(**sandbox: Any) -> Policy:
    return Policy.model_validate({
        "version": 1,
        "roles": {
            "coder": {"tools": ["run_code", "run_shell"], "code": True},
            "reader": {"tools": ["run_code"]},
        },
        "sandbox": {
            "backend": "bwrap",
            "limits": {"wall": 2, "cpu": 1, "memory": "96M", "pids": 32, "disk": "8M",
                       "stdout": "64k"},
            "tools": {
                "run_code": {"env": {"API_KEY": "{{secret:svc/key}}", "MODE": "test"},
                             "languages": ["python"]},
            },
            **sandbox,
        },
        "secrets": {"grants": {"run_code": ["svc/key"]}},
    })


@pytest.fixture
def wall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shieldwall:
    backend_or_skip("bwrap")
    monkeypatch.setenv("SHIELDWALL_SECRET_SVC_KEY", SECRET)
    return Shieldwall(policy(), base_dir=tmp_path, audit=MemoryAuditLog())


def test_allowed_run_executes_with_granted_env_and_secret_redacted(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s:
        r = run_code(s, "import os; print(os.environ['MODE'], os.environ['API_KEY'])")
    assert r.ok, r.stderr
    assert r.stdout == "test [REDACTED:API_KEY]\n"
    assert SECRET not in r.stdout


def test_every_run_is_audited_with_digest_and_outcome(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s:
        run_code(s, "print('hello')")
    audit = wall.audit
    assert isinstance(audit, MemoryAuditLog)
    kinds = [e.get("kind") for e in audit.entries]
    assert "code_run" in kinds
    outcome = [e for e in audit.entries if e.get("event") == "outcome"][-1]
    import hashlib

    assert outcome["args"]["code_sha256"] == hashlib.sha256(b"print('hello')").hexdigest()
    assert outcome["result_digest"]
    assert SECRET not in repr(audit.entries)


def test_role_without_code_permission_is_denied(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="reader") as s, pytest.raises(Denied) as e:
        run_code(s, "print(1)")
    assert "policy.code_not_allowed" in e.value.rules


def test_language_not_granted_to_the_tool_is_denied(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s, pytest.raises(Denied) as e:
        run_code(s, "echo hi", language="sh")
    assert e.value.rules == ["sandbox.language_not_allowed"]


def test_other_tool_may_run_shell(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s:
        r = run_code(s, argv=["sh", "-c", "echo $API_KEY-$MODE"], tool="run_shell")
    assert r.stdout == "-\n"  # no secret or env granted to run_shell


def test_requested_limits_above_the_grant_are_capped(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s:
        d = s.decide(CodeRun(code="pass", limits={"wall_s": 600, "memory_bytes": 1 << 40}))
        assert d.verdict == Verdict.CHANGES and d.rules() == ["sandbox.limits_capped"]
        assert isinstance(d.action, CodeRun)
        assert d.action.limits == {"wall_s": 2.0, "memory_bytes": 96 << 20}
        r = run_code(s, "import time; time.sleep(60)", limits={"wall_s": 600})
    assert r.error is not None and r.error.value == "timeout"
    assert r.usage.wall_s < 30


def test_tighter_limits_pass_unchanged(wall: Shieldwall) -> None:
    with wall.session(agent="bot", role="coder") as s:
        d = s.decide(CodeRun(code="pass", limits={"wall_s": 1}))
    assert d.verdict == Verdict.ALLOW


@pytest.mark.parametrize("limits", [{"nope": 1}, {"wall_s": -1}, {"pids": "many"}])
def test_invalid_limits_are_denied(wall: Shieldwall, limits: dict[str, Any]) -> None:
    with wall.session(agent="bot", role="coder") as s:
        d = s.decide(CodeRun(code="pass", limits=limits))
    assert d.verdict == Verdict.DENY and d.rules() == ["sandbox.limits_invalid"]


def test_oversized_and_empty_code_is_denied(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    w = Shieldwall(policy(max_code_bytes=100), base_dir=tmp_path, audit=False)
    with w.session(agent="bot", role="coder") as s:
        assert s.decide(CodeRun(code="x" * 101)).rules() == ["sandbox.code_too_large"]
        assert s.decide(CodeRun(code="")).rules() == ["sandbox.empty"]


def test_weak_backend_is_denied_unless_allowed(tmp_path: Path) -> None:
    w = Shieldwall(policy(backend="process"), base_dir=tmp_path, audit=False)
    with w.session(agent="bot", role="coder") as s:
        assert s.decide(CodeRun(code="pass")).rules() == ["sandbox.weak_backend_refused"]
    w2 = Shieldwall(policy(backend="process", allow_weak=True), base_dir=tmp_path, audit=False)
    with w2.session(agent="bot", role="coder") as s:
        assert s.decide(CodeRun(code="pass")).verdict == Verdict.ALLOW


def test_unavailable_backend_is_denied_with_the_reason(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from shieldwall.sandbox import backends

    class Missing:
        name, strength, guarantees, python = "gvisor", 40, frozenset(), "python3"

        def available(self) -> tuple[bool, str]:
            return False, "runsc (gVisor) is not installed"

    monkeypatch.setattr(backends, "_make", lambda name, root: Missing())
    w = Shieldwall(policy(backend="gvisor"), base_dir=tmp_path, audit=False)
    with w.session(agent="bot", role="coder") as s:
        d = s.decide(CodeRun(code="pass"))
    assert d.rules() == ["sandbox.backend_unavailable"] and "runsc" in d.reason()


def test_workspaces_need_a_grant(wall: Shieldwall, tmp_path: Path) -> None:
    with wall.session(agent="bot", role="coder") as s, pytest.raises(SandboxError,
                                                                    match="not granted"):
        run_code(s, "pass", workspace="proj")


def test_role_grant_enables_workspace_and_files(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    backend_or_skip("bwrap")
    monkeypatch.setenv("SHIELDWALL_SECRET_SVC_KEY", SECRET)
    w = Shieldwall(policy(roles={"coder": {"workspaces": True}},
                          workspaces_dir=str(tmp_path / "ws")),
                   base_dir=tmp_path, audit=False)
    with w.session(agent="bot", role="coder") as s:
        r1 = run_code(s, "open('n', 'w').write(open('seed').read() * 2)", workspace="p",
                      files={"seed": "ab"})
        r2 = run_code(s, "print(open('n').read())", workspace="p")
    assert r1.ok and r2.stdout == "abab\n"


def test_empty_sandbox_section_validates() -> None:
    p = Policy.model_validate({"version": 1, "sandbox": {}})
    assert p.sandbox.backend == "auto" and p.sandbox.allow_weak is False
    assert os.environ.get("SHIELDWALL_SECRET_SVC_KEY") is None


def test_policy_extra_paths_reach_the_run_read_only_and_read_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend_or_skip("bwrap")
    monkeypatch.setenv("SHIELDWALL_SECRET_SVC_KEY", SECRET)
    base = Path(tempfile.mkdtemp(prefix="shieldwall-paths-", dir="/tmp"))
    try:
        base.chmod(0o755)
        ro, rw = base / "ro", base / "rw"
        ro.mkdir(mode=0o755)
        rw.mkdir()
        (ro / "model.txt").write_text("weights")
        (ro / "model.txt").chmod(0o644)
        if os.geteuid() == 0:  # the sandbox's host uid is in group 65534 (see bwrap.py)
            os.chown(rw, 0, 65534)
        rw.chmod(0o775 if os.geteuid() == 0 else 0o777)
        w = Shieldwall(policy(ro_paths=[str(ro)], rw_paths=[str(rw)]), base_dir=tmp_path,
                       audit=False)
        code = (f"print(open('{ro}/model.txt').read())\n"
                f"try:\n    open('{ro}/x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n"
                f"open('{rw}/out.txt', 'w').write('result')\n")
        with w.session(agent="bot", role="coder") as s:
            r = run_code(s, code)
        assert r.ok, (r.stderr, r.message)
        assert r.stdout.split() == ["weights", "ro", "30"]  # EROFS
        assert (rw / "out.txt").read_text() == "result"
        assert not (ro / "x").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("premake", [True, False])
def test_policy_decides_whether_sandboxes_are_premade(
        premake: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = backend_or_skip("bwrap")
    monkeypatch.setenv("SHIELDWALL_SECRET_SVC_KEY", SECRET)
    end = time.monotonic() + 20
    while b._spare_making and time.monotonic() < end:  # one being made by an earlier test
        time.sleep(0.01)
    left = b.adopt_workdir(0)  # take (or drop) any spare left by earlier tests
    if left is not None:
        left[0].close(save=False)
    w = Shieldwall(policy(premake=premake), base_dir=tmp_path, audit=False)
    served = b.premade_runs
    with w.session(agent="bot", role="coder") as s:
        for _ in range(2):
            assert run_code(s, "pass").ok
            while b._spare_making and time.monotonic() < end:
                time.sleep(0.01)
    # on: each closing CodeRun sandbox leaves a spare that the next one adopts
    assert (b.premade_runs - served, b._spare is not None) == ((1, True) if premake
                                                                else (0, False))
