"""`shieldwall audit ...` end to end on a real SQLite log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shieldwall.audit import open_audit
from shieldwall.audit.cli import app
from shieldwall.audit.signing import TreeHead, keyring, load_public_key
from shieldwall.audit.sqlite_store import SQLiteStore
from shieldwall.audit.verify import verify_entries
from shieldwall.policy.sections.audit import AuditSection

from .conftest import make_entry
from .test_export import receiver  # noqa: F401  (fixture)

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    section = AuditSection(path="logs/audit.db", key_path="logs/audit-signing-key.pem", head_every_entries=10)
    log = open_audit(section, tmp_path)
    for i in range(30):
        log.append(make_entry(i))
    log.close()
    return tmp_path / "logs/audit.db"


def run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_verify_ok_then_tampered(db: Path) -> None:
    r = run("verify", "--db", db)
    assert r.exit_code == 0, r.output
    assert "ok: 30 entries" in r.output
    st = SQLiteStore(db)
    st.execute("UPDATE entries SET leaf = replace(leaf, 'ORD-1003', 'ORD-9999') WHERE seq = 3")
    st.close()
    r = run("verify", "--db", db)
    assert r.exit_code == 1
    assert "TAMPERED: first bad entry: seq 3" in r.output
    r = run("verify", "--db", db, "--json")
    assert json.loads(r.output)["first_bad_seq"] == 3


def test_verify_with_the_wrong_public_key_fails(db: Path, tmp_path: Path) -> None:
    from shieldwall.audit.signing import HeadSigner

    other = tmp_path / "other.pem"
    other.write_bytes(HeadSigner.generate().public_pem())
    r = run("verify", "--db", db, "--pubkey", other)
    assert r.exit_code == 1 and "unknown key" in r.output


def test_prove_and_check_with_only_the_public_key(db: Path, tmp_path: Path) -> None:
    pem = tmp_path / "pub.pem"
    assert run("pubkey", "--db", db, "--out", pem).exit_code == 0
    load_public_key(pem.read_bytes())
    r = run("prove", "7", "--db", db)
    assert r.exit_code == 0, r.output
    proof = tmp_path / "p.json"
    proof.write_text(r.output)
    r = run("check-proof", proof, "--pubkey", pem)
    assert r.exit_code == 0 and "entry 7 is in the log" in r.output
    doc = json.loads(proof.read_text())
    doc["tree_size"] = doc["tree_size"] + 1
    proof.write_text(json.dumps(doc))
    assert run("check-proof", proof, "--pubkey", pem).exit_code == 1

    r = run("consistency", "4", "30", "--db", db)
    assert r.exit_code == 0, r.output
    proof.write_text(r.output)
    r = run("check-proof", proof, "--pubkey", pem)
    assert r.exit_code == 0 and "size 4 is a prefix of size 30" in r.output


def test_head_signs_now_and_can_be_kept_as_a_trusted_head(db: Path, tmp_path: Path) -> None:
    r = run("head", "--db", db)
    assert r.exit_code == 0
    head = TreeHead.from_dict(json.loads(r.output))
    assert head.tree_size == 30
    kept = tmp_path / "head.json"
    kept.write_text(r.output)
    st = SQLiteStore(db)
    st.execute("DELETE FROM entries WHERE seq >= 20")
    st.execute("DELETE FROM heads WHERE tree_size > 20")
    st.execute("UPDATE state SET size = 20")
    st.close()
    r = run("verify", "--db", db, "--trusted-head", kept)
    assert r.exit_code == 1 and "truncated" in r.output


def test_query_as_json_lines_and_table(db: Path) -> None:
    r = run("query", "--db", db, "--verdict", "deny", "--session", "s0", "--json")
    assert r.exit_code == 0
    lines = [json.loads(x) for x in r.output.splitlines()]
    assert [x["seq"] for x in lines] == [i for i in range(30) if i % 4 == 0 and i % 3 == 0]
    assert all(x["entry"]["verdict"] == "deny" for x in lines)
    r = run("query", "--db", db, "--rule", "policy.tool_not_in_role", "--since", "2025-11-24T16:00:05Z",
            "--limit", "2")
    assert r.exit_code == 0 and "audit entries (2)" in r.output and "deny" in r.output


def test_export_jsonl_verifies_against_a_signed_head(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    assert run("export", "--db", db, "--format", "jsonl", "--out", out).exit_code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(range(30))
    head = TreeHead.from_dict(json.loads(run("head", "--db", db, "--no-sign").output))
    pem = run("pubkey", "--db", db).stdout
    verify_entries([x["entry"] for x in lines], head, keyring(load_public_key(pem.encode())))


def test_export_otlp_to_a_receiver(db: Path, receiver: tuple[str, list[Any]]) -> None:  # noqa: F811
    url, got = receiver
    r = run("export", "--db", db, "--format", "otlp", "--endpoint", url)
    assert r.exit_code == 0, r.output
    n = sum(len(ss.spans) for _, _, req in got for rs in req.resource_spans for ss in rs.scope_spans)
    assert n == 30 + 3


def test_policy_file_locates_the_log(db: Path, tmp_path: Path) -> None:
    policy = tmp_path / "shieldwall.yaml"
    policy.write_text("version: 1\naudit:\n  path: logs/audit.db\n  key_path: logs/audit-signing-key.pem\n")
    r = run("verify", "--policy", policy)
    assert r.exit_code == 0, r.output


def test_missing_log_is_a_usage_error(tmp_path: Path) -> None:
    r = run("verify", "--db", tmp_path / "nope.db")
    assert r.exit_code == 2
