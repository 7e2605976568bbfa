"""Merkle tree hashing, inclusion proofs and consistency proofs as in RFC 9162 §2.1.

Pure functions over bytes: no I/O, no clocks. The tree over n leaves is the RFC's
MTH(D[n]); leaf and interior hashes are domain separated (0x00 / 0x01 prefixes), so a
leaf can never be passed off as an interior node (second-preimage attack).

Proof generation works on ``levels``: level 0 holds the leaf hashes, level l+1 the
hashes of adjacent pairs of level l, a lone last node carried up unchanged. That is the
same tree as the RFC's recursive split at the largest power of two below n, built
iteratively (fast in CPython) and able to answer for any prefix of the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def hash_leaf(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return _sha256(LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def hash_leaves(datas: Iterable[bytes]) -> list[bytes]:
    sha = _sha256
    return [sha(b"\x00" + d).digest() for d in datas]


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------- levels


Levels = list[list[bytes]]


def build_levels(leaf_hashes: list[bytes]) -> Levels:
    """All levels of the tree over ``leaf_hashes`` (see the module docstring)."""
    sha = _sha256
    levels: Levels = [leaf_hashes]
    cur = leaf_hashes
    while len(cur) > 1:
        nxt = [sha(b"\x01" + cur[i] + cur[i + 1]).digest() for i in range(0, len(cur) - 1, 2)]
        if len(cur) & 1:
            nxt.append(cur[-1])
        levels.append(nxt)
        cur = nxt
    return levels


def subtree_hash(levels: Levels, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a subtree the RFC's recursion visits.

    ``start`` must be a multiple of the largest power of two not above ``end - start``
    (true of every subtree in the RFC recursion) and ``end`` at most the leaf count.
    """
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        return levels[level][start >> level]
    if end == len(levels[0]):
        # the right edge of the whole tree: the node carried up at the level whose span
        # first covers [start, end) is MTH(D[start:end]) already
        level = (n - 1).bit_length()
        if start & ((1 << level) - 1) == 0 and level < len(levels):
            return levels[level][start >> level]
    k = _largest_power_of_two_below(n)
    return hash_children(subtree_hash(levels, start, start + k), subtree_hash(levels, start + k, end))


def root_of(levels: Levels, size: int | None = None) -> bytes:
    """Root of the first ``size`` leaves (all of them when ``size`` is None)."""
    n = len(levels[0]) if size is None else size
    if n > len(levels[0]):
        raise ValueError(f"tree has {len(levels[0])} leaves, asked for the root of {n}")
    return subtree_hash(levels, 0, n)


def merkle_root(leaf_hashes: list[bytes]) -> bytes:
    return root_of(build_levels(leaf_hashes)) if leaf_hashes else EMPTY_ROOT


# --------------------------------------------------------------------------- frontier


class Frontier:
    """The compact range of a growing tree: roots of its perfect subtrees, largest first.

    Holds at most log2(n) hashes, so a writer can append and compute the current root in
    O(log n) without reading the log back.
    """

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ValueError(f"a frontier of size {size} has {bin(size).count('1')} nodes, "
                             f"got {len(nodes)}")
        self.size = size
        self.nodes = list(nodes)

    def push(self, leaf_hash: bytes) -> None:
        nodes = self.nodes
        nodes.append(leaf_hash)
        s = self.size
        while s & 1:
            right = nodes.pop()
            nodes[-1] = _sha256(b"\x01" + nodes[-1] + right).digest()
            s >>= 1
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        r = self.nodes[-1]
        for h in reversed(self.nodes[:-1]):
            r = hash_children(h, r)
        return r

    def to_bytes(self) -> bytes:
        return b"".join(self.nodes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        nodes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return cls(size, nodes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)


# --------------------------------------------------------------------------- proofs


def inclusion_proof(levels: Levels, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1."""
    if not 0 <= index < size <= len(levels[0]):
        raise ValueError(f"no inclusion proof for leaf {index} in a tree of size {size}")
    return _path(levels, index, 0, size)


def _path(levels: Levels, m: int, start: int, end: int) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return [*_path(levels, m, start, start + k), subtree_hash(levels, start + k, end)]
    return [*_path(levels, m - k, start + k, end), subtree_hash(levels, start, start + k)]


def consistency_proof(levels: Levels, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when the sizes are equal
    or the old tree is empty)."""
    if not 0 <= old_size <= new_size <= len(levels[0]):
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    return _subproof(levels, old_size, 0, new_size, True)


def _subproof(levels: Levels, m: int, start: int, end: int, complete: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if complete else [subtree_hash(levels, start, end)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(levels, m, start, start + k, complete), subtree_hash(levels, start + k, end)]
    return [*_subproof(levels, m - k, start + k, end, False), subtree_hash(levels, start, start + k)]


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` yields for ``leaf_hash`` at ``index`` (RFC 9162 §2.1.3.2).

    Raises ``ValueError`` when the proof has the wrong shape for (index, size).
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise ValueError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True if ``proof`` shows the leaf at ``index`` is in the tree of ``size`` with ``root``."""
    try:
        return root_from_inclusion_proof(leaf_hash, index, size, proof) == root
    except ValueError:
        return False


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes,
                       proof: Sequence[bytes]) -> bool:
    """True if ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size,
    new_root), following RFC 9162 §2.1.4.2."""
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    path = list(proof)
    if not path:
        return False
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
