"""RFC 9162 Merkle hashing and proofs, checked against the RFC's recursive definition."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    build_levels,
    consistency_proof,
    hash_children,
    hash_leaf,
    inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def mth(data: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 §2.1.1 writes it (recursive, slow, obviously right)."""
    n = len(data)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def leaves(n: int) -> list[bytes]:
    return [f"entry-{i}".encode() for i in range(n)]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = b"a", b"b"
    assert hash_leaf(a) == hashlib.sha256(b"\x00a").digest()
    assert hash_children(a, b) == hashlib.sha256(b"\x01ab").digest()
    # a leaf whose data is the concatenation of two child hashes is not that node
    left, right = hash_leaf(a), hash_leaf(b)
    assert hash_leaf(left + right) != hash_children(left, right)


def test_rfc6962_reference_root_for_known_vector() -> None:
    # The certificate-transparency test vector: leaves "", 0x00, 0x10, 0x2021, ... (8 leaves)
    data = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243",
                                      "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
    root = root_of(build_levels([hash_leaf(d) for d in data]))
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@settings(max_examples=150, deadline=None)
@given(n=st.integers(min_value=1, max_value=300), data=st.data())
def test_levels_and_frontier_compute_the_rfc_root_of_every_prefix(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    hashes = [hash_leaf(x) for x in d]
    levels = build_levels(hashes)
    m = data.draw(st.integers(min_value=1, max_value=n))
    assert root_of(levels, m) == mth(d[:m])
    f = Frontier()
    for h in hashes:
        f.push(h)
    assert f.root() == mth(d)
    assert Frontier.from_bytes(n, f.to_bytes()).root() == f.root()


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=400), data=st.data())
def test_inclusion_proof_verifies_and_binds_leaf_index_and_root(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    hashes = [hash_leaf(x) for x in d]
    levels = build_levels(hashes)
    size = data.draw(st.integers(min_value=1, max_value=n), label="size")
    i = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    root = mth(d[:size])
    proof = inclusion_proof(levels, i, size)
    assert verify_inclusion(hashes[i], i, size, proof, root)
    # wrong leaf, wrong index, wrong root, tampered or truncated path: all refused
    assert not verify_inclusion(hash_leaf(b"forged"), i, size, proof, root)
    if size > 1:
        j = (i + 1) % size
        assert not verify_inclusion(hashes[i], j, size, proof, root)
        assert not verify_inclusion(hashes[i], i, size, proof[:-1], root)
        k = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="flip")
        bad = list(proof)
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        assert not verify_inclusion(hashes[i], i, size, bad, root)
    assert not verify_inclusion(hashes[i], i, size, proof, mth([*d[:size], b"x"]))
    assert not verify_inclusion(hashes[i], i, size, [*proof, root], root)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(min_value=1, max_value=400), data=st.data())
def test_consistency_proof_verifies_prefixes_and_refuses_rewritten_history(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    levels = build_levels([hash_leaf(x) for x in d])
    new = data.draw(st.integers(min_value=1, max_value=n), label="new")
    old = data.draw(st.integers(min_value=0, max_value=new), label="old")
    old_root, new_root = mth(d[:old]), mth(d[:new])
    proof = consistency_proof(levels, old, new)
    assert verify_consistency(old, new, old_root, new_root, proof)
    if 0 < old < new:
        # history rewritten: one old leaf changed, the new tree built on it
        k = data.draw(st.integers(min_value=0, max_value=old - 1), label="changed")
        forged = d[:new].copy()
        forged[k] = b"rewritten"
        assert not verify_consistency(old, new, old_root, mth(forged), proof)
        assert not verify_consistency(old, new, mth(forged[:old]), new_root, proof)
        assert not verify_consistency(old, new, old_root, new_root, proof[:-1])
        assert not verify_consistency(old - 1 if old > 1 else old + 1, new, old_root, new_root, proof)


def test_empty_tree_root_is_hash_of_nothing() -> None:
    assert Frontier().root() == EMPTY_ROOT == hashlib.sha256(b"").digest()
