"""The CLI end to end: the demo, `check`, and the policy commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shieldwall.demo import run_demo


def sw(*args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shieldwall.cli", *args], capture_output=True,
                          text=True, cwd=cwd, input=input, timeout=120)


def test_demo_runs_end_to_end(tmp_path):
    attempts, approvals, wall = run_demo(tmp_path / "demo")
    wall.close()
    by_what = {a.what: a for a in attempts}
    assert by_what["read the returns policy"].verdict == "allow"
    assert by_what["hijacked: refund an order"].rule == "policy.tool_not_in_role"
    assert by_what["hijacked: path traversal"].rule == "args.path_outside_root"
    assert by_what["hijacked: symlink out of the root"].rule == "args.path_outside_root"
    assert by_what["hijacked: DROP TABLE via read-only query"].rule == "args.sql_scope"
    assert by_what["hijacked: HTTP DELETE"].rule == "policy.method_not_allowed"
    assert by_what["hijacked: tool outside its task"].rule == "policy.tool_not_in_task"
    assert by_what["refund (needs a person)"].rule == "approval.denied"
    assert by_what["hijacked: smuggle extra argument"].verdict == "allow-with-changes"
    assert by_what["read a customer ticket (untrusted)"].verdict == "allow"
    assert by_what["read a ticket carrying an injection"].verdict == "deny"
    assert by_what["read a ticket carrying an injection"].rule.startswith("detect.injection")
    assert by_what["hijacked: exfiltrate over HTTP"].rule == "egress.host_not_allowed"
    assert len(approvals) == 1 and approvals[0].tool == "refund_order"
    hijacks = [a for a in attempts if a.what.startswith("hijacked")]
    assert all(a.verdict in ("deny", "allow-with-changes") for a in hijacks)


def test_demo_command_prints_table_and_its_audit_log_verifies(tmp_path):
    r = sw("demo", "--folder", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "policy.tool_not_in_role" in r.stdout and "audit" in r.stdout.lower()
    v = sw("audit", "verify", "--policy", str(tmp_path / "d" / "shieldwall.yaml"))
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout.startswith("ok:")


@pytest.fixture
def policy_file(tmp_path):
    r = sw("policy", "example")
    p = tmp_path / "shieldwall.yaml"
    p.write_text(r.stdout)
    (tmp_path / "docs").mkdir()
    return p


def test_check_exit_codes(policy_file, tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"agent": "a", "role": "reader", "kind": "tool_call",
                              "tool": "read_document", "args": {"path": "x.md"}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agent": "a", "role": "reader", "kind": "tool_call",
                               "tool": "refund_order", "args": {}}))
    r = sw("check", "--policy", str(policy_file), "--action", str(ok))
    assert r.returncode == 0, r.stdout + r.stderr
    r = sw("check", "--policy", str(policy_file), "--action", str(bad))
    assert r.returncode == 1
    assert json.loads(r.stdout)["findings"][0]["rule"] == "policy.tool_not_in_role"
    r = sw("check", "--policy", str(policy_file), "--action", "-",
           input='{"role": "operator", "kind": "egress", "method": "DELETE", "url": "https://x.example.com"}')
    assert r.returncode == 1 and "policy.method_not_allowed" in r.stdout


def test_check_bad_input_is_clear(policy_file, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = sw("check", "--policy", str(policy_file), "--action", str(bad))
    assert r.returncode == 2 and "cannot read action JSON" in r.stderr


def test_policy_check_explain_schema_lint(policy_file, tmp_path):
    r = sw("policy", "check", "--policy", str(policy_file))
    assert r.returncode == 0 and "3 roles" in r.stdout
    r = sw("policy", "explain", "operator", "ship_order", "--policy", str(policy_file))
    assert r.returncode == 0 and "send_email" in r.stdout and "read_document" in r.stdout
    r = sw("policy", "schema")
    assert json.loads(r.stdout)["title"].startswith("Shieldwall policy")
    broken = tmp_path / "broken.yaml"
    broken.write_text("roles:\n  r:\n    tools: [a]\n    db_scope: root\n")
    r = sw("policy", "check", "--policy", str(broken))
    assert r.returncode == 1 and "broken.yaml:4: roles.r.db_scope" in r.stderr
    r = sw("policy", "lint", "--policy", str(policy_file))
    assert "lint." in r.stdout or r.returncode == 0
