"""Every way of rewriting history is detected: edit, delete, swap, insert, truncate,
forged heads. Runs against SQLite and PostgreSQL (the attacker has full SQL access to the
database, but not the signing key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shieldwall.audit.canonical import canonical_json, leaf_bytes
from shieldwall.audit.merkle import Frontier
from shieldwall.audit.signing import HeadSigner, TreeHead, keyring
from shieldwall.audit.store import Store, columns_of
from shieldwall.audit.verify import VerifyReport, verify_store

from .conftest import LogFactory, StoreSpec, make_entry

N = 8


class Attacker:
    """Raw SQL on the audit tables, as someone who owns the database host would do it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.pg = store.describe.startswith("postgres")
        self.p = "%s" if self.pg else "?"
        self.t = (lambda n: "{schema}." + n) if self.pg else (lambda n: n)

    def sql(self, q: str, *params: object) -> list[tuple[Any, ...]]:
        q = q.replace("?", self.p).replace("ENTRIES", self.t("entries")).replace(
            "HEADS", self.t("heads")).replace("STATE", self.t("state"))
        return self.store.execute(q, params)

    def leaf(self, seq: int) -> bytes:
        return bytes(self.sql("SELECT leaf FROM ENTRIES WHERE seq = ?", seq)[0][0])

    def entry(self, seq: int) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(self.leaf(seq))["entry"]
        return entry

    def write_entry(self, seq: int, entry: dict[str, Any], *, careful: bool) -> None:
        leaf = leaf_bytes(canonical_json(entry), seq)
        if careful:  # recompute the leaf hash and the query columns too
            cols = columns_of(entry)
            self.sql("UPDATE ENTRIES SET leaf = ?, leaf_hash = ?, time = ?, session = ?, agent = ?, tool = ?, "
                     "verdict = ?, kind = ?, event = ?, rules = ? WHERE seq = ?",
                     leaf, hashlib.sha256(b"\x00" + leaf).digest(), *cols, seq)
        else:
            self.sql("UPDATE ENTRIES SET leaf = ? WHERE seq = ?", leaf, seq)

    def renumber(self, above: int, delta: int) -> None:
        self.sql("UPDATE ENTRIES SET seq = -seq - 1000 WHERE seq > ?", above)
        self.sql("UPDATE ENTRIES SET seq = -seq - 1000 + ? WHERE seq < 0", delta)

    def fix_state(self) -> None:
        """Recompute the writer state from the (tampered) leaves, as a careful attacker would."""
        f = Frontier()
        rows = self.sql("SELECT leaf FROM ENTRIES ORDER BY seq")
        for (leaf,) in rows:
            f.push(hashlib.sha256(b"\x00" + bytes(leaf)).digest())
        self.sql("UPDATE STATE SET size = ?, frontier = ? WHERE id = 1", f.size, f.to_bytes())


@pytest.fixture
def built(spec: StoreSpec, make_log: LogFactory, signer: HeadSigner) -> Iterator[tuple[Store, Attacker, Any]]:
    log = make_log(head_every_entries=3, batch_max_entries=1)
    for i in range(N):
        log.append(make_entry(i), durable=True)
    log.close()
    store = spec.open()
    yield store, Attacker(store), keyring(signer.public_key)
    store.close()


def check(store: Store, keys: Any, **kw: Any) -> VerifyReport:
    return verify_store(store, keys, **kw)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaf_paths(v, (*prefix, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaf_paths(v, (*prefix, i))
    else:
        yield prefix


def altered(v: Any) -> Any:
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if v == []:
        return ["x"]
    return "x"


def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def get_path(obj: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def test_untouched_log_verifies(built: Any) -> None:
    store, _, keys = built
    rep = check(store, keys, check_columns=True)
    assert rep.ok, rep.problems
    assert rep.size == N and rep.newest_head == N and rep.heads_checked >= 3


def test_editing_any_field_of_any_entry_is_detected_at_that_entry(built: Any) -> None:
    store, atk, keys = built
    tried = 0
    for seq in range(N):
        original = atk.leaf(seq)
        entry = atk.entry(seq)
        for path in leaf_paths(entry):
            forged = json.loads(json.dumps(entry))
            set_path(forged, path, altered(get_path(entry, path)))
            atk.write_entry(seq, forged, careful=False)
            rep = check(store, keys)
            assert not rep.ok, (seq, path)
            assert rep.first_bad_seq == seq, (seq, path, rep.problems)
            assert any(p.kind == "entry_modified" for p in rep.problems)
            atk.sql("UPDATE ENTRIES SET leaf = ? WHERE seq = ?", original, seq)
            tried += 1
    assert tried >= N * 12
    assert check(store, keys).ok


def test_careful_edit_with_recomputed_hashes_is_caught_by_the_signed_heads(built: Any) -> None:
    store, atk, keys = built
    for seq in (0, 4, 7):
        original = atk.sql("SELECT leaf, leaf_hash, time, session, agent, tool, verdict, kind, event, rules "
                           "FROM ENTRIES WHERE seq = ?", seq)[0]
        forged = atk.entry(seq)
        forged["verdict"] = "allow"
        forged["findings"] = []
        forged["args"]["order_id"] = "ORD-0"
        atk.write_entry(seq, forged, careful=True)
        atk.fix_state()
        rep = check(store, keys, check_columns=True)
        assert not rep.ok
        assert any(p.kind == "head_root" for p in rep.problems)
        assert rep.first_bad_seq is not None and rep.first_bad_seq <= seq
        atk.sql("UPDATE ENTRIES SET leaf = ?, leaf_hash = ?, time = ?, session = ?, agent = ?, tool = ?, "
                "verdict = ?, kind = ?, event = ?, rules = ? WHERE seq = ?", *original, seq)
        atk.fix_state()
    assert check(store, keys).ok


def test_editing_the_stored_leaf_hash_alone_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.sql("UPDATE ENTRIES SET leaf_hash = ? WHERE seq = ?", b"\x00" * 32, 5)
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 5


def test_editing_a_query_column_is_detected_and_never_shown_as_a_hit(built: Any) -> None:
    from shieldwall.audit.store import Query
    from shieldwall.audit.view import query_entries

    store, atk, keys = built
    atk.sql("UPDATE ENTRIES SET verdict = 'allow' WHERE seq = ?", 4)  # entry 4 was a deny
    rep = check(store, keys, check_columns=True)
    assert not rep.ok and rep.first_bad_seq == 4
    assert [p.kind for p in rep.problems] == ["columns_modified"]
    hits = [seq for seq, _ in query_entries(store, Query(verdict="allow"))]
    assert 4 not in hits


def test_deleting_an_entry_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.sql("DELETE FROM ENTRIES WHERE seq = ?", 3)
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 3
    assert rep.problems[0].kind == "entry_deleted"


def test_deleting_an_entry_and_renumbering_the_rest_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.sql("DELETE FROM ENTRIES WHERE seq = ?", 3)
    atk.renumber(3, -1)
    atk.fix_state()
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 3
    assert any(p.kind == "entry_moved" for p in rep.problems)
    assert any(p.kind in ("head_root", "head_beyond_log") for p in rep.problems)


def test_swapping_two_entries_is_detected(built: Any) -> None:
    store, atk, keys = built
    a = atk.sql("SELECT leaf, leaf_hash FROM ENTRIES WHERE seq = ?", 2)[0]
    b = atk.sql("SELECT leaf, leaf_hash FROM ENTRIES WHERE seq = ?", 6)[0]
    atk.sql("UPDATE ENTRIES SET leaf = ?, leaf_hash = ? WHERE seq = ?", *b, 2)
    atk.sql("UPDATE ENTRIES SET leaf = ?, leaf_hash = ? WHERE seq = ?", *a, 6)
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 2
    assert {p.seq for p in rep.problems if p.kind == "entry_moved"} == {2, 6}


def test_swapping_with_rewritten_positions_is_caught_by_heads(built: Any) -> None:
    store, atk, keys = built
    e2, e6 = atk.entry(2), atk.entry(6)
    atk.write_entry(2, e6, careful=True)
    atk.write_entry(6, e2, careful=True)
    atk.fix_state()
    rep = check(store, keys)
    assert not rep.ok and any(p.kind == "head_root" for p in rep.problems)
    assert rep.first_bad_seq is not None and rep.first_bad_seq <= 2


def test_inserting_an_entry_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.renumber(4, +1)  # make room at 5
    forged = make_entry(99, verdict="allow", tool="lookup")
    leaf = leaf_bytes(canonical_json(forged), 5)
    atk.sql("INSERT INTO ENTRIES (seq, leaf, leaf_hash, time, session, agent, tool, verdict, kind, event, rules) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 5, leaf, hashlib.sha256(b"\x00" + leaf).digest(),
            *columns_of(forged))
    atk.fix_state()
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 5
    assert any(p.kind == "entry_moved" and p.seq == 6 for p in rep.problems)


def test_truncating_the_log_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.sql("DELETE FROM ENTRIES WHERE seq >= ?", 5)
    atk.fix_state()
    rep = check(store, keys)
    assert not rep.ok and rep.first_bad_seq == 5
    assert any(p.kind == "head_beyond_log" for p in rep.problems)


def test_truncating_entries_and_heads_is_caught_by_a_head_kept_elsewhere(built: Any) -> None:
    store, atk, keys = built
    kept = store.heads()[-1]  # e.g. from `shieldwall audit head`, stored off the host
    atk.sql("DELETE FROM ENTRIES WHERE seq >= ?", 5)
    atk.sql("DELETE FROM HEADS WHERE tree_size > ?", 5)
    atk.fix_state()
    assert check(store, keys).ok  # without outside evidence a clean cut looks like a shorter log
    rep = check(store, keys, trusted_heads=[kept])
    assert not rep.ok and rep.first_bad_seq == 5
    assert any(p.kind == "head_beyond_log" for p in rep.problems)


def test_writer_state_left_behind_by_a_truncation_is_detected(built: Any) -> None:
    store, atk, keys = built
    atk.sql("DELETE FROM ENTRIES WHERE seq >= ?", 7)
    atk.sql("DELETE FROM HEADS WHERE tree_size > ?", 6)
    rep = check(store, keys)
    assert not rep.ok and any(p.kind == "state_size" for p in rep.problems)


def test_replacing_a_head_root_breaks_its_signature(built: Any) -> None:
    store, atk, keys = built
    mid = store.heads()[-2].tree_size
    atk.sql("UPDATE HEADS SET root = ? WHERE tree_size = ?", b"\x11" * 32, mid)
    rep = check(store, keys)
    assert not rep.ok and any(p.kind == "head_signature" and p.head_size == mid for p in rep.problems)


def test_a_head_signed_with_another_key_is_refused(built: Any) -> None:
    store, atk, keys = built
    # the attacker rewrites entry 1, recomputes everything and re-signs every head with a key of their own
    forged = atk.entry(1)
    forged["verdict"] = "allow"
    atk.write_entry(1, forged, careful=True)
    atk.fix_state()
    mallory = HeadSigner.generate()
    from shieldwall.audit.merkle import build_levels, root_of

    hashes = [bytes(h) for (h,) in atk.sql("SELECT leaf_hash FROM ENTRIES ORDER BY seq")]
    levels = build_levels(hashes)
    for h in store.heads():
        fake = mallory.sign(h.log_id, h.tree_size, root_of(levels, h.tree_size), h.timestamp_ms)
        atk.sql("UPDATE HEADS SET root = ?, key_id = ?, signature = ? WHERE tree_size = ?",
                fake.root, fake.key_id, fake.signature, h.tree_size)
    rep = check(store, keys)
    assert not rep.ok
    assert all(p.kind == "head_signature" and "unknown key" in p.message for p in rep.problems)


def test_a_head_from_another_log_is_refused(built: Any, signer: HeadSigner) -> None:
    store, atk, keys = built
    h = store.heads()[0]
    other = signer.sign("some-other-log", h.tree_size, h.root, h.timestamp_ms)
    atk.sql("UPDATE HEADS SET log_id = ?, signature = ? WHERE tree_size = ?", other.log_id, other.signature,
            h.tree_size)
    rep = check(store, keys)
    assert not rep.ok and [p.kind for p in rep.problems] == ["head_foreign"]


def test_a_valid_head_replayed_at_another_size_is_refused(built: Any) -> None:
    store, atk, keys = built
    heads = store.heads()
    h3: TreeHead = heads[1]
    later = heads[2].tree_size
    atk.sql("DELETE FROM HEADS WHERE tree_size = ?", later)
    atk.sql("INSERT INTO HEADS VALUES (?, ?, ?, ?, ?, ?)", later, h3.root, h3.timestamp_ms, h3.key_id,
            h3.signature, h3.log_id)
    rep = check(store, keys)
    assert not rep.ok and any(p.kind == "head_signature" for p in rep.problems)
