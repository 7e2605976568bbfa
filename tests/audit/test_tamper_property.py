"""Property: whatever single change an attacker makes to a log's rows, verification
fails and points at or before the changed entry (in-memory store, many random logs)."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.audit.log import MerkleAuditLog
from shieldwall.audit.signing import HeadSigner, keyring
from shieldwall.audit.store import MemoryStore
from shieldwall.audit.verify import verify_store

from .conftest import make_entry

SIGNER = HeadSigner.generate()
KEYS = keyring(SIGNER.public_key)


def build(n: int, every: int) -> MemoryStore:
    store = MemoryStore()
    log = MerkleAuditLog(store, SIGNER, head_every_entries=every, batch_max_entries=1, durable_each=True)
    for i in range(n):
        log.append(make_entry(i))
    log.sign_head()
    return store


@settings(max_examples=300, deadline=None)
@given(n=st.integers(min_value=2, max_value=40), every=st.integers(min_value=1, max_value=10),
       op=st.sampled_from(["flip", "flip_rehash", "delete", "swap", "insert", "truncate"]),
       data=st.data())
def test_any_single_change_is_detected(n: int, every: int, op: str, data: st.DataObject) -> None:
    store = build(n, every)
    assert verify_store(store, KEYS).ok
    rows = store.rows
    k = data.draw(st.integers(min_value=0, max_value=n - 1), label="seq")
    r = rows[k]
    if op in ("flip", "flip_rehash"):
        pos = data.draw(st.integers(min_value=0, max_value=len(r.leaf) - 1), label="byte")
        leaf = r.leaf[:pos] + bytes([r.leaf[pos] ^ 0x20]) + r.leaf[pos + 1 :]
        lh = hashlib.sha256(b"\x00" + leaf).digest() if op == "flip_rehash" else r.leaf_hash
        rows[k] = r._replace(leaf=leaf, leaf_hash=lh)
    elif op == "delete":
        del rows[k]
    elif op == "swap":
        j = data.draw(st.integers(min_value=0, max_value=n - 1).filter(lambda j: j != k), label="other")
        rows[k], rows[j] = rows[j]._replace(seq=k), rows[k]._replace(seq=j)
    elif op == "insert":
        forged = rows[k]._replace(leaf=rows[k].leaf.replace(b'"verdict":"deny"', b'"verdict":"allow"'))
        rows.insert(k, forged)
        store.rows = [row._replace(seq=i) for i, row in enumerate(rows)]
    elif op == "truncate":
        del rows[k:]
    rep = verify_store(store, KEYS)
    assert not rep.ok, (op, k)
    assert rep.first_bad_seq is not None and rep.first_bad_seq <= k, (op, k, rep.problems)

