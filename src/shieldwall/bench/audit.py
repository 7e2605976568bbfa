"""``shieldwall bench audit``: append throughput, full verification and proof times of the
tamper-evident audit log, each beside a plain-table baseline measured in the same run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def _entry(i: int) -> dict[str, Any]:
    deny = i % 5 == 0
    return {
        "time": 1_764_000_000.0 + i / 1000,
        "session": f"sess-{i // 50:06d}",
        "agent": "support-bot",
        "role": "reader",
        "task": "triage",
        "kind": "tool_call",
        "tool": ("lookup", "read_document", "send_email")[i % 3],
        "args": {"order_id": f"ORD-{100000 + i}", "limit": 10, "api_key": "sk-not-a-real-key"},
        "verdict": "deny" if deny else "allow",
        "findings": [{"layer": "policy", "rule": "policy.tool_not_in_role",
                      "message": "tool not granted to role reader"}] if deny else [],
        "result_digest": f"{i:064x}",
        "duration_ms": 0.42,
        "event": "decision",
    }


def _open(kind: str, where: str) -> Any:
    if kind == "sqlite":
        from ..audit.sqlite_store import SQLiteStore

        return SQLiteStore(where)
    from ..audit.postgres_store import PostgresStore

    return PostgresStore(PG_DSN, where)


def _writer(kind: str, where: str, n: int, offset: int, signer: Any) -> None:
    from ..audit.log import MerkleAuditLog

    log = MerkleAuditLog(_open(kind, where), signer, redact_fields=["api_key"],
                         batch_max_entries=1024, batch_max_delay_ms=20)
    for i in range(offset, offset + n):
        log.append(_entry(i))
    log.close()


def _fork_writers(kind: str, where: str, n: int, writers: int, signer: Any) -> float:
    """Wall time for ``writers`` processes appending ``n`` entries in all."""
    _open(kind, where).close()
    per = n // writers
    t0 = time.perf_counter()
    pids = []
    for w in range(writers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _writer(kind, where, per, w * per, signer)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError("a writer process failed")
    return time.perf_counter() - t0


def _baseline_sqlite(path: str, n: int) -> float:
    """Plain table, same rows' JSON, same batch size and fsync policy; no hashing or signing."""
    import json
    import sqlite3

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, body BLOB)")
    t0 = time.perf_counter()
    batch: list[tuple[int, bytes]] = []
    for i in range(n):
        batch.append((i, json.dumps(_entry(i)).encode()))
        if len(batch) == 1024 or i == n - 1:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO log VALUES (?, ?)", batch)
            db.execute("COMMIT")
            batch = []
    dt = time.perf_counter() - t0
    db.close()
    return dt


def _baseline_pg(schema: str, n: int) -> float:
    import json

    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_DSN) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        c.execute(sql.SQL("CREATE TABLE {}.log (seq bigint PRIMARY KEY, body bytea)").format(sql.Identifier(schema)))
        c.commit()
        t0 = time.perf_counter()
        batch: list[tuple[int, bytes]] = []
        for i in range(n):
            batch.append((i, json.dumps(_entry(i)).encode()))
            if len(batch) == 1024 or i == n - 1:
                with c.cursor().copy(sql.SQL("COPY {}.log FROM STDIN").format(sql.Identifier(schema))) as cp:
                    for r in batch:
                        cp.write_row(r)
                c.commit()
                batch = []
        dt = time.perf_counter() - t0
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        c.commit()
    return dt


def _drop_pg(schema: str) -> None:
    from ..audit.postgres_store import PostgresStore

    st = PostgresStore(PG_DSN, schema)
    st.drop()
    st.close()


def command(
    entries: Annotated[int, typer.Option(help="log size for the verification and proof runs")] = 1_000_000,
    appends: Annotated[int, typer.Option(help="entries per append-throughput run")] = 20_000,
    postgres: Annotated[bool, typer.Option(help="include PostgreSQL (127.0.0.1:5432)")] = True,
    deep: Annotated[bool, typer.Option(help="also time verify --deep (columns, canonical form)")] = True,
    out: Annotated[Path, typer.Option(help="folder for the markdown table")] = Path("benchmarks"),
) -> None:
    """Append throughput (SQLite, PostgreSQL; 1 and 4 writers), verify time, proof times."""
    import random
    import uuid

    from rich.console import Console
    from rich.table import Table

    from ..audit.log import MerkleAuditLog
    from ..audit.merkle import build_levels, consistency_proof, inclusion_proof, verify_inclusion
    from ..audit.proofs import inclusion_document, verify_inclusion_document
    from ..audit.signing import HeadSigner, keyring
    from ..audit.verify import verify_store
    from . import machine, write_markdown

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-audit-"))
    signer = HeadSigner.generate()
    rows: list[list[str]] = []

    def add(what: str, value: str, baseline: str = "", note: str = "") -> None:
        rows.append([what, value, baseline, note])
        console.print(f"  {what}: {value}  {baseline}  {note}")

    # ---- append throughput
    base = appends / _baseline_sqlite(str(tmp / "plain.db"), appends)
    for writers in (1, 4):
        path = str(tmp / f"w{writers}.db")
        dt = _fork_writers("sqlite", path, appends, writers, signer)
        add(f"SQLite append, {writers} writer(s), batched (1024 / 20 ms)", f"{appends / dt:,.0f} entries/s",
            f"plain table: {base:,.0f} rows/s", "synchronous=FULL, Merkle + Ed25519 heads")
    small = 300
    log = MerkleAuditLog(_open("sqlite", str(tmp / "each.db")), signer, redact_fields=["api_key"])
    t0 = time.perf_counter()
    for i in range(small):
        log.append(_entry(i), durable=True)
    add("SQLite append, 1 writer, commit each (durable=True)",
        f"{small / (time.perf_counter() - t0):,.0f} entries/s", "", "one fsync per entry")
    log.close()
    if postgres:
        schema = f"bench_plain_{uuid.uuid4().hex[:8]}"
        pbase = appends / _baseline_pg(schema, appends)
        for writers in (1, 4):
            schema = f"bench_audit_{uuid.uuid4().hex[:8]}"
            try:
                dt = _fork_writers("postgres", schema, appends, writers, signer)
            finally:
                _drop_pg(schema)
            add(f"PostgreSQL append, {writers} writer(s), batched (1024 / 20 ms)", f"{appends / dt:,.0f} entries/s",
                f"plain table COPY: {pbase:,.0f} rows/s", "row lock on the tree state")

    # ---- a big log, written with the batch API
    big = str(tmp / "big.db")
    log = MerkleAuditLog(_open("sqlite", big), signer, redact_fields=["api_key"],
                         head_every_entries=10_000, batch_max_entries=1 << 30)
    t0 = time.perf_counter()
    chunk = 10_000
    for start in range(0, entries, chunk):
        log.append_many((_entry(i) for i in range(start, min(entries, start + chunk))), durable=True)
    log.close()
    gen = time.perf_counter() - t0
    add(f"SQLite append_many, 10,000 per commit ({entries:,} entries)", f"{entries / gen:,.0f} entries/s", "",
        "how the verification log was built")

    store = _open("sqlite", big)
    keys = keyring(signer.public_key)
    t0 = time.perf_counter()
    n_read = sum(1 for _ in store.iter_leaves())
    read_s = time.perf_counter() - t0
    rep = verify_store(store, keys)
    assert rep.ok and rep.size == entries == n_read, rep.summary()
    add(f"verify {entries:,} entries (hashes, positions, {rep.heads_checked} heads)", f"{rep.seconds:.2f} s",
        f"reading the rows alone: {read_s:.2f} s")
    if deep:
        rep = verify_store(store, keys, check_columns=True)
        assert rep.ok
        add(f"verify --deep {entries:,} entries (+ canonical form, query columns)", f"{rep.seconds:.2f} s")

    # ---- proofs
    rnd = random.Random(7)
    t0 = time.perf_counter()
    hashes = store.leaf_hashes()
    levels = build_levels(hashes)
    cold = time.perf_counter() - t0
    seqs = [rnd.randrange(entries) for _ in range(1000)]
    t0 = time.perf_counter()
    proofs = [inclusion_proof(levels, s, entries) for s in seqs]
    warm_us = (time.perf_counter() - t0) / len(seqs) * 1e6
    root = levels[-1][0]
    t0 = time.perf_counter()
    assert all(verify_inclusion(hashes[s], s, entries, p, root) for s, p in zip(seqs, proofs, strict=True))
    ver_us = (time.perf_counter() - t0) / len(seqs) * 1e6
    t0 = time.perf_counter()
    for _ in range(200):
        consistency_proof(levels, rnd.randrange(1, entries), entries)
    cons_us = (time.perf_counter() - t0) / 200 * 1e6
    t0 = time.perf_counter()
    doc = inclusion_document(store, seqs[0])
    doc_s = time.perf_counter() - t0
    verify_inclusion_document(doc, signer.public_pem())
    add("inclusion proof, tree levels in memory", f"{warm_us:.1f} µs", f"verify: {ver_us:.1f} µs",
        f"{len(proofs[0])} hashes")
    add("consistency proof, tree levels in memory", f"{cons_us:.1f} µs")
    add(f"load leaf hashes + build tree ({entries:,})", f"{cold:.2f} s", "", "once per process")
    add("`audit prove SEQ` end to end (cold, signed head)", f"{doc_s:.2f} s")
    store.close()

    table = Table(title="shieldwall bench audit")
    for col in ("measure", "result", "baseline (same run)", "note"):
        table.add_column(col)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    size_mb = sum(f.stat().st_size for f in Path(big).parent.glob("big.db*")) / 1e6
    md_path = write_markdown(
        "audit", "shieldwall bench audit", ["measure", "result", "baseline (same run)", "note"], rows,
        [f"Command: `shieldwall bench audit --entries {entries} --appends {appends}`"
         f"{'' if postgres else ' --no-postgres'}.  ",
         f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f} (the machine is shared). "
         f"The verification log of {entries:,} entries took {size_mb:,.0f} MB on disk.",
         "",
         "Append runs use the gate's path: `MerkleAuditLog.append(entry)` (redaction, canonical JSON, "
         "SHA-256 leaf, frontier update) with batches of 1024 entries or 20 ms, one commit per batch; "
         "every writer is a separate process and all of them extend one tree. Baselines insert the "
         "same entries as plain JSON rows with the same batch size and durability settings.",
         "Verification recomputes every leaf hash from the stored bytes, checks positions, rebuilds the "
         "tree and checks every signed head's signature and root; `--deep` also re-encodes every entry "
         "and compares the query columns."],
        out,
    )
    console.print(f"wrote {md_path}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
