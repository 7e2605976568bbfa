"""Code runs the policy marks for approval: a person sees the exact code, the approval
covers only that code, and no answer means no run (real bwrap sandbox)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from shieldwall import CallbackApprover, Denied
from shieldwall.actions import CodeRun, Verdict
from shieldwall.approvals import ApprovalRequest
from shieldwall.audit import MemoryAuditLog
from shieldwall.policy.model import Policy
from shieldwall.wall import Shieldwall

pytestmark = pytest.mark.bwrap


def _policy() -> Policy:
    return Policy.model_validate({
        "version": 1,
        "roles": {"coder": {"tools": ["run_code"], "code": True}},
        "tools": {"run_code": {"approval": {"required": True, "reason": "code needs a reviewer"}}},
        "sandbox": {"backend": "bwrap", "limits": {"wall": 5, "memory": "128M"}},
    })


def _wall(tmp_path: Path, answer: Any, seen: list[ApprovalRequest]) -> Shieldwall:
    if shutil.which("bwrap") is None:
        pytest.skip("component missing: bubblewrap")

    def approve(req: ApprovalRequest) -> Any:
        seen.append(req)
        return answer(req) if callable(answer) else answer

    return Shieldwall(_policy(), base_dir=tmp_path, audit=MemoryAuditLog(),
                      approver=CallbackApprover(approve))


def test_code_run_marked_for_approval_asks_with_the_exact_code(tmp_path: Path) -> None:
    seen: list[ApprovalRequest] = []
    wall = _wall(tmp_path, True, seen)
    with wall.session(agent="bot", role="coder") as s:
        r = s.run_code("print(6 * 7)")
    assert r.ok and r.stdout == "42\n"
    assert len(seen) == 1
    assert seen[0].tool == "run_code"
    assert seen[0].preview["code"] == "print(6 * 7)"  # the person saw what runs
    assert "code needs a reviewer" in seen[0].reason
    assert s.last is not None and any(f.rule == "approval.granted" for f in s.last.findings)


def test_refused_or_unanswered_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    seen: list[ApprovalRequest] = []
    wall = _wall(tmp_path, False, seen)
    with wall.session(agent="bot", role="coder") as s, pytest.raises(Denied) as e:
        s.run_code(f"open({str(marker)!r}, 'w').write('x')")
    assert e.value.decision.verdict == Verdict.DENY
    assert any(f.rule == "approval.denied" for f in e.value.decision.findings)
    assert not marker.exists()
    audit = wall.audit
    assert isinstance(audit, MemoryAuditLog)
    assert not [x for x in audit.entries if x.get("event") == "outcome"]


def test_approval_covers_only_the_code_it_was_given_for(tmp_path: Path) -> None:
    seen: list[ApprovalRequest] = []
    wall = _wall(tmp_path, None, seen)  # the approver never answers (timeout = deny)
    with wall.session(agent="bot", role="coder") as s:
        first = s.decide(CodeRun(code="print('reviewed')"))
        assert first.verdict == Verdict.ASK and first.approval is not None
        wall.approvals.resolve(first.approval.id, True, approver="alice")
        # The same approval id presented with other code is not a grant.
        other = s.decide(CodeRun(code="import os; os.system('id')"), approval_id=first.approval.id)
        assert other.verdict == Verdict.ASK
        assert any(f.rule == "approval.args_mismatch" for f in other.findings)
        same = s.decide(CodeRun(code="print('reviewed')"), approval_id=first.approval.id)
        assert same.verdict == Verdict.ALLOW
        # Single use: the grant is spent.
        again = s.decide(CodeRun(code="print('reviewed')"), approval_id=first.approval.id)
        assert again.verdict == Verdict.ASK


def test_code_run_without_approval_marking_does_not_ask(tmp_path: Path) -> None:
    if shutil.which("bwrap") is None:
        pytest.skip("component missing: bubblewrap")
    pol = _policy().model_copy(update={"tools": {}})
    wall = Shieldwall(pol, base_dir=tmp_path, audit=MemoryAuditLog())
    with wall.session(agent="bot", role="coder") as s:
        assert s.decide(CodeRun(code="print(1)")).verdict == Verdict.ALLOW
