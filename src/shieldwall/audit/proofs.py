"""Inclusion and consistency proof documents, and their verification.

A document is plain JSON that travels without the database. Verifying one needs only
the log's Ed25519 public key (PEM from ``shieldwall audit pubkey``):

    entry = verify_inclusion_document(json.load(f), public_key_pem)
    verify_consistency_document(json.load(f), public_key_pem)

Both raise ``ProofError`` saying what failed, expected versus got.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import parse_leaf
from .merkle import (
    Levels,
    build_levels,
    consistency_proof,
    inclusion_proof,
    root_from_inclusion_proof,
    root_of,
)
from .merkle import verify_consistency as _verify_consistency
from .signing import HeadSigner, TreeHead, head_problem, keyring, load_public_key
from .store import Store

PROOF_VERSION = 1


class ProofError(ValueError):
    """A proof document does not prove what it claims."""


def _levels(store: Store, size: int) -> Levels:
    hashes = store.leaf_hashes(size)
    if len(hashes) < size:
        raise ProofError(f"log holds {len(hashes)} entries, need {size}")
    return build_levels(hashes)


def head_for(store: Store, size: int | None = None, *, covering: int | None = None,
             signer: HeadSigner | None = None, levels: Levels | None = None) -> TreeHead:
    """A stored signed head of exactly ``size``, or the newest one covering ``covering``.

    When none exists and ``signer`` is given, signs one for the log as stored now.
    """
    heads = store.heads()
    if size is not None:
        for h in heads:
            if h.tree_size == size:
                return h
    elif covering is not None:
        cands = [h for h in heads if h.tree_size > covering]
        if cands:
            return cands[-1]
        size = store.size()
        if size <= covering:
            raise ProofError(f"no entry {covering}: the log holds {size} entries")
    if signer is None:
        have = ", ".join(str(h.tree_size) for h in heads[-10:]) or "none"
        raise ProofError(f"no signed head at the size asked for (newest head sizes: {have}); "
                         "sign one with `shieldwall audit head`")
    assert size is not None
    lv = levels if levels is not None else _levels(store, size)
    root = root_of(lv, size) if size else hashlib.sha256(b"").digest()
    head = signer.sign(store.log_id, size, root, int(time.time() * 1000))
    store.write_head(head)
    return head


def inclusion_document(store: Store, seq: int, head: TreeHead | None = None,
                       signer: HeadSigner | None = None, levels: Levels | None = None) -> dict[str, Any]:
    """Proof that entry ``seq`` is in the tree a signed head commits to."""
    if head is None:
        head = head_for(store, covering=seq, signer=signer, levels=levels)
    row = store.get(seq)
    if row is None:
        raise ProofError(f"no entry {seq}")
    lv = levels if levels is not None else _levels(store, head.tree_size)
    path = inclusion_proof(lv, seq, head.tree_size)
    return {
        "type": "shieldwall.audit.inclusion",
        "version": PROOF_VERSION,
        "seq": seq,
        "leaf": base64.b64encode(bytes(row.leaf)).decode("ascii"),
        "tree_size": head.tree_size,
        "inclusion_path": [h.hex() for h in path],
        "head": head.to_dict(),
    }


def consistency_document(store: Store, old_size: int, new_size: int,
                         signer: HeadSigner | None = None, levels: Levels | None = None) -> dict[str, Any]:
    """Proof that the log at ``old_size`` is a prefix of the log at ``new_size``."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"old size {old_size} must be between 0 and new size {new_size}")
    lv = levels if levels is not None else _levels(store, new_size)
    old = head_for(store, old_size, signer=signer, levels=lv)
    new = head_for(store, new_size, signer=signer, levels=lv)
    return {
        "type": "shieldwall.audit.consistency",
        "version": PROOF_VERSION,
        "old_size": old_size,
        "new_size": new_size,
        "consistency_path": [h.hex() for h in consistency_proof(lv, old_size, new_size)],
        "old_head": old.to_dict(),
        "new_head": new.to_dict(),
    }


def _keys(public_key: bytes | Ed25519PublicKey | Mapping[str, Ed25519PublicKey]) -> Mapping[str, Ed25519PublicKey]:
    if isinstance(public_key, bytes):
        return keyring(load_public_key(public_key))
    if isinstance(public_key, Ed25519PublicKey):
        return keyring(public_key)
    return public_key


def _signed_head(d: Any, keys: Mapping[str, Ed25519PublicKey], what: str) -> TreeHead:
    if not isinstance(d, Mapping):
        raise ProofError(f"{what} is missing")
    try:
        head = TreeHead.from_dict(d)
    except ValueError as exc:
        raise ProofError(f"{what}: {exc}") from exc
    why = head_problem(head, keys)
    if why is not None:
        raise ProofError(f"{what}: {why}")
    return head


def _hashes(v: Any, what: str) -> list[bytes]:
    try:
        out = [bytes.fromhex(h) for h in v]
    except (TypeError, ValueError) as exc:
        raise ProofError(f"{what} is not a list of hex hashes") from exc
    if any(len(h) != 32 for h in out):
        raise ProofError(f"{what} holds a hash that is not 32 bytes")
    return out


def verify_inclusion_document(doc: Mapping[str, Any],
                              public_key: bytes | Ed25519PublicKey | Mapping[str, Ed25519PublicKey]
                              ) -> dict[str, Any]:
    """Check an inclusion document; return the proven entry. Raises ``ProofError``."""
    keys = _keys(public_key)
    if doc.get("type") != "shieldwall.audit.inclusion":
        raise ProofError("not an inclusion proof document")
    head = _signed_head(doc.get("head"), keys, "tree head")
    seq, size = doc.get("seq"), doc.get("tree_size")
    if not isinstance(seq, int) or size != head.tree_size:
        raise ProofError(f"proof is for tree size {size}, head signs {head.tree_size}")
    try:
        leaf = base64.b64decode(str(doc.get("leaf")), validate=True)
        entry, recorded = parse_leaf(leaf)
    except ValueError as exc:
        raise ProofError(f"leaf is malformed: {exc}") from exc
    if recorded != seq:
        raise ProofError(f"leaf was written as seq {recorded}, document claims {seq}")
    leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
    try:
        root = root_from_inclusion_proof(leaf_hash, seq, head.tree_size,
                                         _hashes(doc.get("inclusion_path"), "inclusion path"))
    except ValueError as exc:
        raise ProofError(str(exc)) from exc
    if root != head.root:
        raise ProofError(f"root mismatch: expected {head.root.hex()}, proof gives {root.hex()}")
    return entry


def verify_consistency_document(doc: Mapping[str, Any],
                                public_key: bytes | Ed25519PublicKey | Mapping[str, Ed25519PublicKey]
                                ) -> None:
    """Check a consistency document. Raises ``ProofError``."""
    keys = _keys(public_key)
    if doc.get("type") != "shieldwall.audit.consistency":
        raise ProofError("not a consistency proof document")
    old = _signed_head(doc.get("old_head"), keys, "old head")
    new = _signed_head(doc.get("new_head"), keys, "new head")
    if old.log_id != new.log_id:
        raise ProofError("the two heads belong to different logs")
    if (old.tree_size, new.tree_size) != (doc.get("old_size"), doc.get("new_size")):
        raise ProofError("head sizes differ from the sizes the document claims")
    path = _hashes(doc.get("consistency_path"), "consistency path")
    if not _verify_consistency(old.tree_size, new.tree_size, old.root, new.root, path):
        raise ProofError(f"the tree at size {old.tree_size} is not a prefix of the tree at "
                         f"size {new.tree_size}")
