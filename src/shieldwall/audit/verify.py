"""Recompute an audit log from its bytes and say where it was tampered with.

Checks, in order of how precisely they locate a change:

1. sequence numbers are 0, 1, 2 ... with no gap (a deleted row);
2. each leaf ends with ``,"seq":N}`` for its own position N (an entry moved, inserted,
   or deleted with the rest renumbered shows up where the recorded and actual positions
   first disagree);
3. each leaf's SHA-256 matches the leaf hash stored beside it (an edited entry);
4. optionally each leaf is canonical JSON and the query columns match it;
5. every signed tree head: signed by a known key, for this log, not beyond the end of the
   log (truncation), and its root equals the root recomputed from the leaves (an edit
   whose stored hashes were recomputed too: located between the last good head and the
   first bad one).

Entries after the newest head are covered only by 1-4: an attacker holding the database
(and not the signing key) can rewrite that tail unnoticed until the next head. Heads
are signed every ``head_every_entries`` / ``head_every_seconds`` and at close; pass a
head kept elsewhere as ``trusted_heads`` to pin history an attacker could delete whole.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .canonical import canonical_json, leaf_bytes, parse_leaf
from .merkle import build_levels, root_of
from .signing import TreeHead, head_problem
from .store import Row, Store, columns_of


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # entry_deleted | entry_moved | entry_modified | entry_not_canonical |
    #            columns_modified | head_signature | head_foreign | head_beyond_log |
    #            head_root | state_size
    message: str
    seq: int | None = None
    head_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "message": self.message}
        if self.seq is not None:
            d["seq"] = self.seq
        if self.head_size is not None:
            d["head_size"] = self.head_size
        return d


@dataclass(slots=True)
class VerifyReport:
    size: int = 0
    heads_checked: int = 0
    newest_head: int = 0
    problems: list[Problem] = field(default_factory=list)
    first_bad_seq: int | None = None
    unsigned_tail: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            tail = (f"; {self.unsigned_tail} newest entries not yet under a signed head"
                    if self.unsigned_tail else "")
            return (f"ok: {self.size} entries, {self.heads_checked} signed heads verified "
                    f"(newest at size {self.newest_head}){tail}")
        first = f"first bad entry: seq {self.first_bad_seq}; " if self.first_bad_seq is not None else ""
        return f"TAMPERED: {first}{len(self.problems)} problem(s); first: {self.problems[0].message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "size": self.size, "heads_checked": self.heads_checked,
            "newest_head": self.newest_head, "first_bad_seq": self.first_bad_seq,
            "unsigned_tail": self.unsigned_tail, "seconds": round(self.seconds, 3),
            "problems": [p.to_dict() for p in self.problems],
        }


def _embedded_seq(leaf: bytes) -> int | None:
    i = leaf.rfind(b',"seq":')
    if i < 0 or not leaf.endswith(b"}"):
        return None
    try:
        return int(leaf[i + 7 : -1])
    except ValueError:
        return None


def verify_store(
    store: Store,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    trusted_heads: Iterable[TreeHead] = (),
    check_columns: bool = False,
    max_problems: int = 1000,
) -> VerifyReport:
    """Verify everything ``store`` holds (in one read snapshot where the store has one)."""
    snapshot = getattr(store, "snapshot", None)
    if snapshot is None:
        return _verify(store, public_keys, list(trusted_heads), check_columns, max_problems)
    with snapshot():
        return _verify(store, public_keys, list(trusted_heads), check_columns, max_problems)


def _verify(store: Store, public_keys: Mapping[str, Ed25519PublicKey], trusted: list[TreeHead],
            check_columns: bool, max_problems: int) -> VerifyReport:
    t0 = time.perf_counter()
    rep = VerifyReport()
    problems = rep.problems
    entry_bad: list[int] = []

    def add(p: Problem) -> None:
        if len(problems) < max_problems:
            problems.append(p)

    heads = store.heads()
    state_size = store.size()
    sha = hashlib.sha256
    hashes: list[bytes] = []
    expected = 0
    source: Iterator[Any] = iter(store.iter_rows() if check_columns else store.iter_leaves())
    while True:
        batch = list(islice(source, 8192))
        if not batch:
            break
        # fast path: whole batch in comprehensions; the slow per-row path only on a mismatch
        seqs = [r[0] for r in batch]
        leaves = [r[1] if type(r[1]) is bytes else bytes(r[1]) for r in batch]
        computed = [sha(b"\x00" + leaf).digest() for leaf in leaves]
        clean = (
            seqs[0] == expected and seqs[-1] == expected + len(batch) - 1
            and computed == [r[2] if type(r[2]) is bytes else bytes(r[2]) for r in batch]
            and all([leaf.endswith(b',"seq":%d}' % q) for leaf, q in zip(leaves, seqs, strict=True)])
        )
        if not clean:
            for rec, leaf, h in zip(batch, leaves, computed, strict=True):
                expected = _check_row(rec[0], leaf, h, bytes(rec[2]), expected, add, entry_bad)
        else:
            expected += len(batch)
        if check_columns:
            for rec, leaf in zip(batch, leaves, strict=True):
                _check_columns(rec, leaf, rec[0], add, entry_bad)
        hashes += computed

    n = len(hashes)
    rep.size = n
    if state_size != n and expected == n:
        add(Problem("state_size", f"the log holds {n} entries but its writer state says {state_size} "
                    "(entries removed from or added to the end)", min(n, state_size)))
        entry_bad.append(min(n, state_size))
    levels = build_levels(hashes) if hashes else [[]]
    good_below = 0
    range_start: int | None = None
    for head, where in [*((h, "stored") for h in heads), *((h, "trusted") for h in trusted)]:
        rep.heads_checked += 1
        label = f"{where} head at size {head.tree_size}"
        why = head_problem(head, public_keys)
        if why is not None:
            add(Problem("head_signature", f"{label}: {why}", head_size=head.tree_size))
            continue
        if head.log_id != store.log_id:
            add(Problem("head_foreign", f"{label} belongs to log {head.log_id}, not {store.log_id}",
                        head_size=head.tree_size))
            continue
        if head.tree_size > n:
            add(Problem("head_beyond_log", f"{label} but the log has only {n} entries (truncated)",
                        n, head.tree_size))
            entry_bad.append(n)
            continue
        if (root_of(levels, head.tree_size) if head.tree_size else hashlib.sha256(b"").digest()) != head.root:
            add(Problem("head_root", f"{label}: recomputed root differs; an entry before "
                        f"{head.tree_size} was changed", head_size=head.tree_size))
            if range_start is None or head.tree_size < range_start:
                range_start = head.tree_size
            continue
        good_below = max(good_below, head.tree_size)
        rep.newest_head = max(rep.newest_head, head.tree_size)
    if range_start is not None:
        # the change lies below the smallest bad head and at or above the good heads under it
        lower = max([h.tree_size for h in heads if h.tree_size < range_start
                     and h.root == (root_of(levels, h.tree_size) if h.tree_size else h.root)] or [0])
        problems.sort(key=lambda p: p.kind != "head_root")
        if not entry_bad:
            add(Problem("head_root", f"the first changed entry lies in seq {lower}..{range_start - 1}",
                        lower, range_start))
            entry_bad.append(lower)
    rep.unsigned_tail = max(0, n - rep.newest_head) if not problems else 0
    rep.first_bad_seq = min(entry_bad) if entry_bad else None
    problems.sort(key=lambda p: (p.seq if p.seq is not None else 1 << 62))
    rep.seconds = time.perf_counter() - t0
    return rep


def _check_row(seq: int, leaf: bytes, computed: bytes, stored: bytes, expected: int,
               add: Callable[[Problem], None], entry_bad: list[int]) -> int:
    """Locate what is wrong with one row; returns the next expected seq."""
    if seq != expected:
        add(Problem("entry_deleted", f"entries {expected}..{seq - 1} are missing (deleted)", expected))
        entry_bad.append(expected)
    if not leaf.endswith(b',"seq":%d}' % seq):
        recorded = _embedded_seq(leaf)
        add(Problem("entry_moved",
                    f"entry at seq {seq} was written as seq {recorded}: entries were moved, "
                    "inserted or deleted here", seq))
        entry_bad.append(min(seq, recorded) if recorded is not None and recorded >= 0 else seq)
    if computed != stored:
        add(Problem("entry_modified", f"entry {seq} does not match its recorded leaf hash "
                    "(modified after it was written)", seq))
        entry_bad.append(seq)
    return seq + 1


def _check_columns(rec: Any, leaf: bytes, seq: int, add: Callable[[Problem], None],
                   entry_bad: list[int]) -> None:
    try:
        entry, _ = parse_leaf(leaf)
        canonical = canonical_json({"entry": entry, "seq": _}) == leaf
    except (ValueError, TypeError):
        add(Problem("entry_not_canonical", f"entry {seq} is not valid leaf JSON", seq))
        entry_bad.append(seq)
        return
    if not canonical:
        add(Problem("entry_not_canonical", f"entry {seq} is not in canonical form", seq))
        entry_bad.append(seq)
    if isinstance(rec, Row) and tuple(rec[3:]) != columns_of(entry):
        add(Problem("columns_modified", f"entry {seq}: query columns differ from the entry", seq))
        entry_bad.append(seq)


def verify_entries(entries: Iterable[Mapping[str, Any]], head: TreeHead,
                   public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Check that ``entries`` (in order, from seq 0) are exactly the log ``head`` signs.

    Needs only the public key: for an exported log (``audit export --format jsonl``
    writes the entries). Raises ``ValueError`` saying what does not match.
    """
    why = head_problem(head, public_keys)
    if why is not None:
        raise ValueError(f"tree head: {why}")
    hashes = [hashlib.sha256(b"\x00" + leaf_bytes(canonical_json(e), i)).digest()
              for i, e in enumerate(entries)]
    if len(hashes) < head.tree_size:
        raise ValueError(f"head covers {head.tree_size} entries, got {len(hashes)}")
    root = root_of(build_levels(hashes), head.tree_size) if head.tree_size else hashlib.sha256(b"").digest()
    if root != head.root:
        raise ValueError(f"root mismatch: head says {head.root.hex()}, entries give {root.hex()}")
