"""The log as the gate uses it: sequence numbers, redaction, batching and durability,
signed heads on a schedule, proofs that travel. SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from shieldwall.audit import AuditError, open_audit
from shieldwall.audit.proofs import (
    ProofError,
    consistency_document,
    inclusion_document,
    verify_consistency_document,
    verify_inclusion_document,
)
from shieldwall.audit.signing import HeadSigner, keyring, load_public_key
from shieldwall.audit.store import Query
from shieldwall.audit.verify import verify_entries, verify_store
from shieldwall.audit.view import query_entries
from shieldwall.policy.sections.audit import AuditSection

from .conftest import PG_DSN, LogFactory, StoreSpec, make_entry, wait_until


def test_append_returns_consecutive_sequence_numbers(make_log: LogFactory) -> None:
    log = make_log()
    assert [log.append(make_entry(i), durable=True) for i in range(5)] == [0, 1, 2, 3, 4]
    assert log.append_many([make_entry(i) for i in range(5, 9)]) == [5, 6, 7, 8]
    assert log.store.size() == 9


def test_buffered_appends_are_durable_after_flush(spec: StoreSpec, make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=1000, batch_max_delay_ms=60_000)
    seqs = [log.append(make_entry(i)) for i in range(50)]
    assert seqs == list(range(50))
    other = spec.open()  # another connection sees nothing before the batch commits
    assert other.size() == 0
    log.flush()
    assert other.size() == 50
    other.close()


def test_durable_append_commits_before_returning(spec: StoreSpec, make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=1000, batch_max_delay_ms=60_000)
    log.append(make_entry(0))
    seq = log.append(make_entry(1), durable=True)
    other = spec.open()
    assert seq == 1 and other.size() == 2
    other.close()


def test_a_full_batch_commits_on_its_own(spec: StoreSpec, make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=10, batch_max_delay_ms=60_000)
    for i in range(25):
        log.append(make_entry(i))
    other = spec.open()
    assert other.size() == 20
    other.close()


def test_the_flusher_commits_an_idle_batch_after_its_delay(spec: StoreSpec, make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=1000, batch_max_delay_ms=30)
    log.append(make_entry(0))
    other = spec.open()
    assert wait_until(lambda: other.size() == 1, timeout=5)
    other.close()


def test_heads_are_signed_every_n_entries_and_on_close(spec: StoreSpec, make_log: LogFactory) -> None:
    now = [1000.0]
    log = make_log(head_every_entries=10, head_every_seconds=3600, batch_max_entries=5, clock=lambda: now[0])
    for i in range(23):
        log.append(make_entry(i))
    log.close()
    store = spec.open()
    sizes = [h.tree_size for h in store.heads()]
    store.close()
    assert sizes == [10, 20, 23]  # every 10 entries (at batch commits), then at close


def test_heads_are_signed_after_t_seconds(spec: StoreSpec, make_log: LogFactory) -> None:
    now = [1000.0]
    log = make_log(head_every_entries=10_000, head_every_seconds=5, batch_max_entries=1, clock=lambda: now[0])
    log.append(make_entry(0))  # first head
    log.append(make_entry(1))
    now[0] += 6
    log.append(make_entry(2))
    heads = log.store.heads()
    assert [h.tree_size for h in heads] == [1, 3]
    assert heads[1].timestamp_ms == 1_006_000


def test_sign_head_on_demand(make_log: LogFactory, signer: HeadSigner) -> None:
    log = make_log(head_every_entries=10_000, batch_max_entries=1000, batch_max_delay_ms=60_000)
    for i in range(7):
        log.append(make_entry(i))
    h = log.sign_head()
    assert h.tree_size == 7 and h.key_id == signer.key_id
    assert log.sign_head().tree_size == 7  # same size: the same head


def test_configured_fields_are_redacted_at_any_depth(make_log: LogFactory) -> None:
    log = make_log(redact_fields=["password", "api_key", "token"])
    log.append(make_entry(0, args={"user": "bob", "password": "hunter2", "nested": {"X-Api-Key": "k-123"},
                                   "items": [{"access_token": "t-1", "tokens_used": 12}]}), durable=True)
    entry = json.loads(bytes(log.store.get(0).leaf))["entry"]  # type: ignore[union-attr]
    assert entry["args"] == {"user": "bob", "password": "[redacted]", "nested": {"X-Api-Key": "[redacted]"},
                             "items": [{"access_token": "[redacted]", "tokens_used": 12}]}


def test_live_secret_redactor_applies_to_every_string(make_log: LogFactory) -> None:
    secret = "sk-live-" + secrets.token_hex(12)
    log = make_log(redact=lambda s: s.replace(secret, "[secret:openai]"))
    log.append(make_entry(0, args={"q": f"use {secret} now", secret: 1},
                          findings=[{"layer": "detect", "rule": "secrets.leak", "message": f"saw {secret}"}]),
               durable=True)
    raw = bytes(log.store.get(0).leaf)  # type: ignore[union-attr]
    assert secret.encode() not in raw and b"[secret:openai]" in raw


def _raw_database_bytes(spec: StoreSpec, store: Any) -> bytes:
    if spec.kind == "sqlite":
        assert spec.path is not None
        return b"".join(p.read_bytes() for p in spec.path.parent.glob(spec.path.name + "*"))
    import psycopg

    # the server reads its own files (superuser), so this works with a remote server too
    with psycopg.connect(PG_DSN, autocommit=True) as c:
        c.execute("CHECKPOINT")
        rel = f"{spec.schema}.entries"
        data = c.execute("SELECT pg_read_binary_file(pg_relation_filepath(%s))", (rel,)).fetchone()[0]  # type: ignore[index]
        wal = c.execute("SELECT pg_read_binary_file('pg_wal/' || pg_walfile_name(pg_current_wal_lsn()))"
                        ).fetchone()[0]  # type: ignore[index]
    return bytes(data) + bytes(wal)


def test_secrets_never_reach_the_raw_database_bytes(spec: StoreSpec, make_log: LogFactory) -> None:
    password = "pw-" + secrets.token_hex(10)
    live = "ghp_" + secrets.token_hex(18)
    log = make_log(redact_fields=["password", "authorization"],
                   redact=lambda s: s.replace(live, "[secret:github]"))
    marker = "visible-" + secrets.token_hex(8)
    for i in range(20):
        log.append(make_entry(i, args={"password": password, "headers": {"Authorization": f"Bearer {live}"},
                                       "body": f"token={live}", "note": marker}))
    log.close()
    raw = _raw_database_bytes(spec, log.store)
    assert marker.encode() in raw and b"[secret:github]" in raw  # we are looking at the right bytes
    assert password.encode() not in raw
    assert live.encode() not in raw


def test_a_failed_commit_fails_closed_and_is_reported(make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=1000, batch_max_delay_ms=60_000)
    log.append(make_entry(0), durable=True)
    real = log.store.commit

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("disk full")

    log.store.commit = broken  # type: ignore[method-assign]
    with pytest.raises(AuditError, match="disk full"):
        log.append(make_entry(1), durable=True)
    log.store.commit = real  # type: ignore[method-assign]
    assert log.append(make_entry(2), durable=True) == 1  # seq 1 was never acknowledged: reused


def test_a_failure_in_the_flusher_surfaces_at_the_next_append(make_log: LogFactory) -> None:
    log = make_log(batch_max_entries=1000, batch_max_delay_ms=10)
    real = log.store.commit

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("store gone")

    log.store.commit = broken  # type: ignore[method-assign]
    log.append(make_entry(0))
    assert wait_until(lambda: log._failure is not None)
    log.store.commit = real  # type: ignore[method-assign]
    with pytest.raises(AuditError, match="store gone"):
        log.append(make_entry(1))


@pytest.mark.parametrize("sequence", ["append", "commit"])
def test_after_a_failed_commit_appends_commit_at_once_until_the_store_works(
        spec: StoreSpec, make_log: LogFactory, sequence: str) -> None:
    """Fail closed while the store keeps failing: an append that only joined a batch
    would let its decision through and lose its entry a moment later. After a failed
    batch every append commits before it returns (so it raises while the store fails),
    until one commit succeeds; then batching resumes."""
    log = make_log(sequence=sequence, batch_max_entries=1000, batch_max_delay_ms=10)
    real = log.store.commit

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("disk full")

    log.store.commit = broken  # type: ignore[method-assign]
    log.append(make_entry(0))
    assert wait_until(lambda: log._failure is not None)
    with pytest.raises(AuditError, match="disk full"):  # the loss is reported
        log.append(make_entry(1))
    for i in range(2, 5):  # still failing: every decision is refused, none is queued
        with pytest.raises(AuditError, match="disk full"):
            log.append(make_entry(i))
    log.store.commit = real  # type: ignore[method-assign]
    other = spec.open()
    try:
        seq = log.append(make_entry(5))  # commits at once: the store works again
        assert seq is not None and other.size() == seq + 1
        queued = log.append(make_entry(6))  # and batching resumes
        assert (queued is None) == (sequence == "commit") and other.size() == seq + 1
        log.flush()
        assert other.size() == seq + 2
    finally:
        other.close()


def test_non_json_entries_are_refused(make_log: LogFactory) -> None:
    log = make_log()
    with pytest.raises(AuditError):
        log.append(make_entry(0, args={"x": float("nan")}))


def test_proof_documents_verify_with_only_the_public_key(spec: StoreSpec, make_log: LogFactory,
                                                        signer: HeadSigner) -> None:
    log = make_log(head_every_entries=7, batch_max_entries=3)
    for i in range(40):
        log.append(make_entry(i))
    log.close()
    store = spec.open()
    pem = signer.public_pem()
    heads = store.heads()
    for seq in (0, 13, 39):
        doc = json.loads(json.dumps(inclusion_document(store, seq)))
        entry = verify_inclusion_document(doc, pem)
        assert entry["result_digest"] == f"{seq:064x}"
        bad = json.loads(json.dumps(doc))
        bad["inclusion_path"][0] = "00" * 32
        with pytest.raises(ProofError):
            verify_inclusion_document(bad, pem)
        forged = dict(doc, leaf=doc["leaf"][:-8] + "AAAAAAA=")
        with pytest.raises(ProofError):
            verify_inclusion_document(forged, pem)
    old, new = heads[1].tree_size, heads[-1].tree_size
    doc = json.loads(json.dumps(consistency_document(store, old, new)))
    verify_consistency_document(doc, pem)
    with pytest.raises(ProofError, match="unknown key"):
        verify_consistency_document(doc, HeadSigner.generate().public_pem())
    doc["consistency_path"][-1] = "11" * 32
    with pytest.raises(ProofError):
        verify_consistency_document(doc, pem)
    with pytest.raises(ProofError, match="no signed head"):
        consistency_document(store, 2, new)
    d2 = consistency_document(store, 2, new, signer=signer)  # the log signs its view of size 2
    verify_consistency_document(d2, pem)
    assert verify_store(store, keyring(load_public_key(pem))).ok
    store.close()


def test_exported_entries_verify_against_a_head(spec: StoreSpec, make_log: LogFactory, signer: HeadSigner) -> None:
    log = make_log()
    for i in range(12):
        log.append(make_entry(i))
    head = log.sign_head()
    entries = [json.loads(bytes(leaf))["entry"] for _, leaf, _ in log.store.iter_leaves()]
    verify_entries(entries, head, keyring(signer.public_key))
    entries[3]["verdict"] = "deny"  # it was an allow
    with pytest.raises(ValueError, match="root mismatch"):
        verify_entries(entries, head, keyring(signer.public_key))


def test_query_filters(make_log: LogFactory) -> None:
    log = make_log()
    log.append_many([make_entry(i) for i in range(24)])
    st = log.store

    def seqs(**kw: Any) -> list[int]:
        return [s for s, _ in query_entries(st, Query(**kw))]

    assert seqs(session="s1") == [i for i in range(24) if i % 3 == 1]
    assert seqs(agent="ops-bot", tool="lookup") == [i for i in range(24) if i % 2 == 0 and i % 3 == 0]
    assert seqs(verdict="deny") == seqs(rule="policy.tool_not_in_role") == list(range(0, 24, 4))
    assert seqs(rule="policy.tool") == []  # rule ids match whole
    t0 = 1_764_000_000.0
    assert seqs(since=t0 + 5, until=t0 + 7) == [5, 6, 7]
    assert seqs(event="outcome", limit=2, descending=True) == [23, 21]


def test_open_audit_creates_key_and_database_from_the_policy_section(tmp_path: Path) -> None:
    section = AuditSection(path="state/audit.db", key_path="state/key.pem")
    log = open_audit(section, tmp_path, redact=lambda s: s.replace("ORD-1000", "[r]"))
    assert log.append(make_entry(0)) == 0
    log.close()
    assert (tmp_path / "state/audit.db").exists()
    key = tmp_path / "state/key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    signer = HeadSigner.load_or_create(key)
    log2 = open_audit(section, tmp_path)
    assert log2.append(make_entry(1), durable=True) == 1  # type: ignore[call-arg]
    log2.close()
    from shieldwall.audit import open_store

    st = open_store(section, tmp_path)
    assert verify_store(st, keyring(signer.public_key)).ok
    assert all(h.key_id == signer.key_id for h in st.heads())
    leaf = bytes(st.get(0).leaf)  # type: ignore[union-attr]
    assert b'"ORD-1000"' not in leaf and b'"[r]"' in leaf  # redact= was applied
    st.close()


def test_disabled_audit_writes_nothing(tmp_path: Path) -> None:
    log = open_audit(AuditSection(enabled=False), tmp_path)
    assert log.append(make_entry(0)) == -1
    assert not (tmp_path / ".shieldwall").exists()


def test_many_threads_share_one_log(make_log: LogFactory) -> None:
    import threading

    log = make_log(batch_max_entries=64, batch_max_delay_ms=5)
    got: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(100):
            s = log.append(make_entry(k * 1000 + i))
            with lock:
                got.append(s)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    log.flush()
    assert sorted(got) == list(range(400))
    time.sleep(0.01)
    assert log.store.size() == 400


def test_writers_with_different_keys_share_one_log(spec: StoreSpec, make_log: LogFactory) -> None:
    # two gateway hosts, each with its own signing key, one shared tree
    a, b = HeadSigner.generate(), HeadSigner.generate()
    from shieldwall.audit.log import MerkleAuditLog

    la = MerkleAuditLog(spec.open(), a, batch_max_entries=4)
    lb = MerkleAuditLog(spec.open(), b, batch_max_entries=4)
    for i in range(10):
        (la if i % 2 else lb).append(make_entry(i), durable=True)
    la.sign_head()
    lb.append(make_entry(10), durable=True)
    lb.close()
    la.close()
    st = spec.open()
    assert {h.key_id for h in st.heads()} == {a.key_id, b.key_id}
    assert verify_store(st, keyring(a.public_key, b.public_key)).ok
    rep = verify_store(st, keyring(a.public_key))
    assert not rep.ok and all("unknown key" in p.message for p in rep.problems)
    st.close()


def test_memory_store_for_tests_of_other_rooms(tmp_path: Path) -> None:
    log = open_audit(AuditSection(store="memory"), tmp_path)
    assert [log.append(make_entry(i)) for i in range(3)] == [0, 1, 2]
    log.close()
    assert not (tmp_path / ".shieldwall").exists()


@pytest.mark.postgres
def test_postgres_writer_fails_closed_then_reconnects_after_losing_its_backend(spec: StoreSpec,
                                                                              make_log: LogFactory) -> None:
    if spec.kind != "postgres":
        pytest.skip("PostgreSQL only")
    import psycopg

    log = make_log()
    log.append(make_entry(0), durable=True)
    pid = log.store._conn.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(AuditError):
        log.append(make_entry(1), durable=True)  # the gate denies this action
    assert log.append(make_entry(2), durable=True) == 1
    log.close()
    st = spec.open()
    assert st.size() == 2 and verify_store(st, keyring(log.signer.public_key)).ok
    st.close()


# --------------------------------------------------------------------------- sequence="commit"


def test_sequence_at_commit_queues_appends_and_the_flusher_numbers_them(
        spec: StoreSpec, make_log: LogFactory, signer: HeadSigner) -> None:
    log = make_log(sequence="commit", batch_max_entries=1000, batch_max_delay_ms=30)
    assert [log.append(make_entry(i)) for i in range(20)] == [None] * 20
    other = spec.open()
    try:
        assert wait_until(lambda: other.size() == 20, timeout=5)
        # A durable append numbers and commits what is queued before it, then itself.
        log.append(make_entry(20))
        assert log.append(make_entry(21), durable=True) == 21 and other.size() == 22
        log.close()
        assert verify_store(other, keyring(signer.public_key), check_columns=True).ok
        assert [e["duration_ms"] for _, e in query_entries(other, Query())][:3] == [0.5, 1.5, 2.5]
    finally:
        other.close()


def test_sequence_at_commit_appends_never_wait_for_another_writers_lock(
        spec: StoreSpec, make_log: LogFactory) -> None:
    """Proxy workers share one log. With numbers given at append, a writer holds the log's
    lock while its batch is open, and another process's append waits for it (on an
    event loop: every connection of that worker waits). With numbers given at commit
    the append returns at once; only the flusher waits."""
    import threading

    holder = make_log(batch_max_entries=1000, batch_max_delay_ms=60_000)
    holder.append(make_entry(0))  # an open batch: the holder has the writer lock now
    at_append = make_log(batch_max_entries=1000, batch_max_delay_ms=10)
    at_commit = make_log(sequence="commit", batch_max_entries=1000, batch_max_delay_ms=10)
    done = {"append": threading.Event(), "commit": threading.Event()}

    def write(log: Any, key: str) -> None:
        for i in range(5):
            log.append(make_entry(100 + i))
        done[key].set()

    threading.Thread(target=write, args=(at_append, "append"), daemon=True).start()
    threading.Thread(target=write, args=(at_commit, "commit"), daemon=True).start()
    assert done["commit"].wait(5), "appends with sequence=commit waited for the lock"
    assert not done["append"].wait(0.5), "the contrast: appends numbered at once wait"
    holder.flush()  # lets go of the lock: both others commit
    assert done["append"].wait(10)
    other = spec.open()
    try:
        assert wait_until(lambda: other.size() == 11, timeout=10)
    finally:
        other.close()


def test_sequence_at_commit_bounds_the_queue_and_fails_closed(
        spec: StoreSpec, make_log: LogFactory) -> None:
    log = make_log(sequence="commit", batch_max_entries=10, batch_max_delay_ms=60_000)
    for i in range(25):
        log.append(make_entry(i))
    other = spec.open()
    try:
        assert other.size() == 20  # the 10th and 20th appends committed the queue themselves
    finally:
        other.close()
    real = log.store.commit

    def broken(*a: Any, **k: Any) -> None:
        raise OSError("store gone")

    log.store.commit = broken  # type: ignore[method-assign]
    with pytest.raises(AuditError, match="store gone"):
        log.flush()
    log.store.commit = real  # type: ignore[method-assign]
    quick = make_log(sequence="commit", batch_max_entries=1000, batch_max_delay_ms=10)
    quick_real = quick.store.commit
    quick.store.commit = broken  # type: ignore[method-assign]
    quick.append(make_entry(0))
    assert wait_until(lambda: quick._failure is not None)
    quick.store.commit = quick_real  # type: ignore[method-assign]
    with pytest.raises(AuditError, match="store gone"):  # the gate refuses this decision
        quick.append(make_entry(1))
    quick.close()
    with pytest.raises(AuditError, match="closed"):  # nothing queues after close
        quick.append(make_entry(2))


def test_the_audit_section_sets_the_sequence_mode(tmp_path: Path) -> None:
    log = open_audit(AuditSection(path="a.db", sequence="commit"), tmp_path)
    try:
        assert log is not None and log.append(make_entry(0)) is None
        assert log.flush() == 1
    finally:
        assert log is not None
        log.close()
    with pytest.raises(ValueError, match="sequence"):
        AuditSection(sequence="later")  # type: ignore[arg-type]
