"""The Merkle audit log: redact, encode, hash, batch, commit, sign heads.

Durability contract (what a returned sequence number means):

- ``append(entry, durable=True)`` returns once the entry is committed (fsync'ed by
  SQLite with ``synchronous=FULL``; committed by PostgreSQL). It is *acknowledged*.
- ``append(entry, durable=False)`` (the gate's hot path) returns the entry's sequence
  number at once. The entry joins an open batch that commits when it holds
  ``batch_max_entries`` entries, when ``batch_max_delay_ms`` has passed (a small
  flusher thread sees to that even if no further append comes), at ``flush()``,
  ``sign_head()`` or ``close()``. Once any of those returns, the entry is acknowledged.
  If that commit fails, the next ``append``/``flush`` raises ``AuditError`` (so the gate
  fails closed) and the unacknowledged sequence numbers are handed out again.
- ``append_many(entries)`` commits a whole list in one transaction (bulk import, bench).

While a batch is open this process holds the log's writer lock, so sequence numbers are
final when handed out and writers in other processes wait at most one batch delay.

``sequence="commit"`` (``audit.sequence``) is for several processes writing one log (the
proxy's workers): a non-durable ``append`` only queues the entry and returns ``None``,
never waiting for the writer lock that another process may hold; the flusher takes the
lock after ``batch_max_delay_ms``, numbers the queued entries and commits them in one
transaction. Durability, the failure rule (the next ``append`` raises) and the bound
(``batch_max_entries`` queued: that append commits before it returns) are as above;
durable appends number and commit at once and return their sequence number.

After a failed commit (or a store that cannot begin one), until a commit succeeds, every
``append`` commits before it returns, in both modes: while the store keeps failing each
decision is refused, instead of joining a batch whose entry would be lost a moment later.
Tree heads are signed at the first commit after ``head_every_entries`` new entries or
``head_every_seconds``, on ``sign_head()`` and at ``close()``.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import ShieldwallError
from .canonical import canonical_json, leaf_bytes
from .merkle import Frontier
from .signing import HeadSigner, TreeHead
from .store import Row, Store, columns_of

REDACTED = "[redacted]"

# Keys of the gate's entry envelope: never treated as sensitive names themselves.
ENVELOPE_KEYS = frozenset({
    "time", "session", "agent", "role", "task", "kind", "tool", "args", "verdict",
    "findings", "result_digest", "duration_ms", "event",
})

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[^a-z0-9]+")


class AuditError(ShieldwallError):
    """The audit log could not record an entry; the gate must fail closed."""


def _tokens(name: str) -> tuple[str, ...]:
    return tuple(t for t in _SPLIT.split(_CAMEL.sub(r"\1_\2", name).lower()) if t)


class EntryRedactor:
    """Defence in depth before anything is written: the gate redacts too.

    A key is sensitive when the tokens of a configured field name occur, contiguous, in
    the key's tokens (``api_key`` matches ``X-Api-Key`` and ``openai_api_key``; ``token``
    matches ``access_token`` but not ``tokens_used``), or when both join to the same word
    (``apikey``). Its value, whatever its type, becomes ``[redacted]``. Every other string,
    key or value, passes through ``redact`` (the secrets room's live-secret redactor).
    """

    def __init__(self, fields: Iterable[str], redact: Callable[[str], str] | None = None) -> None:
        self._fields = [t for t in (_tokens(f) for f in fields) if t]
        self._joined = frozenset("".join(t) for t in self._fields)
        self._redact = redact
        self._cache: dict[str, bool] = {}

    def is_sensitive(self, key: str) -> bool:
        hit = self._cache.get(key)
        if hit is None:
            toks = _tokens(key)
            hit = "".join(toks) in self._joined or any(
                toks[i : i + len(f)] == f for f in self._fields for i in range(len(toks) - len(f) + 1)
            )
            if len(self._cache) < 10000:
                self._cache[key] = hit
        return hit

    def entry(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        value = self._value
        for k, v in entry.items():
            key = k if type(k) is str else str(k)
            if key in ENVELOPE_KEYS:
                t = type(v)
                out[key] = v if (t is int or t is float or v is None or (t is str and self._redact is None)) \
                    else value(v)
            elif self.is_sensitive(key):
                out[self._str(key)] = REDACTED
            else:
                out[self._str(key)] = value(v)
        return out

    def _str(self, s: str) -> str:
        return self._redact(s) if self._redact is not None else s

    def _value(self, v: Any) -> Any:
        # the hot path of every audit append: scalars are handled inline, without a call
        t = type(v)
        redact = self._redact
        if t is str:
            return redact(v) if redact is not None else v
        if t is dict or isinstance(v, Mapping):
            cache = self._cache
            out: dict[str, Any] = {}
            for k, x in v.items():
                key = k if type(k) is str else str(k)
                hit = cache.get(key)
                if hit is None:
                    hit = self.is_sensitive(key)
                if redact is not None:
                    key = redact(key)
                if hit:
                    out[key] = REDACTED
                    continue
                tx = type(x)
                if tx is int or tx is float or tx is bool or x is None or (tx is str and redact is None):
                    out[key] = x
                else:
                    out[key] = self._value(x)
            return out
        if t is list or t is tuple:
            return [self._value(x) for x in v]
        return v


class MerkleAuditLog:
    """An ``AuditLog`` whose entries are leaves of a signed Merkle tree."""

    def __init__(
        self,
        store: Store,
        signer: HeadSigner,
        *,
        redact_fields: Iterable[str] = (),
        redact: Callable[[str], str] | None = None,
        head_every_entries: int = 1000,
        head_every_seconds: float = 10.0,
        batch_max_entries: int = 1024,
        batch_max_delay_ms: float = 20.0,
        durable_each: bool = False,
        clock: Callable[[], float] = time.time,
        sequence: str = "append",
    ) -> None:
        if sequence not in ("append", "commit"):
            raise ValueError("sequence must be 'append' or 'commit'")
        self.store = store
        self.signer = signer
        self.redactor = EntryRedactor(redact_fields, redact)
        self._head_every_entries = head_every_entries
        self._head_every_ms = int(head_every_seconds * 1000)
        self._batch_max = batch_max_entries
        self._max_delay = batch_max_delay_ms / 1000.0
        self._durable_each = durable_each or batch_max_delay_ms == 0
        self._clock = clock
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._rows: list[Row] = []
        self._frontier: Frontier | None = None  # set while this process holds the lock
        self._base: Any = None  # WriterState read at begin
        self._opened_at = 0.0
        self._failure: BaseException | None = None
        self._closed = False
        self._flusher: threading.Thread | None = None
        # sequence="commit": appends queue here and return at once; the flusher takes the
        # writer lock, numbers and commits them (see the module docstring).
        self._defer = sequence == "commit"
        self._pending: list[tuple[bytes, tuple[Any, ...]]] = []
        self._pending_cv = threading.Condition(threading.Lock())
        self._pending_since = 0.0
        self._sealed = False  # closing: no more queued appends
        # A commit (or begin) failed and none has succeeded since: every append commits
        # before it returns, so it raises while the store keeps failing (fail closed).
        self._degraded = False
        self._pid = os.getpid()
        self._atexit = _closer(weakref.ref(self))
        atexit.register(self._atexit)
        before, after_parent, after_child = _fork_guards(weakref.ref(self))
        os.register_at_fork(before=before, after_in_parent=after_parent, after_in_child=after_child)

    # ----------------------------------------------------------------- writing

    def prepare(self, entry: Mapping[str, Any]) -> tuple[bytes, tuple[Any, ...]]:
        """Redact and encode one entry (no lock needed): its canonical bytes and columns."""
        clean = self.redactor.entry(entry)
        try:
            return canonical_json(clean), columns_of(clean)
        except (TypeError, ValueError) as exc:
            raise AuditError(f"audit entry is not JSON: {exc}") from exc

    def append(self, entry: Mapping[str, Any], *, durable: bool | None = None) -> int | None:
        """Record one entry and return its sequence number (see the module docstring);
        ``None`` with ``sequence="commit"`` unless the append is durable."""
        prepared = self.prepare(entry)
        if self._pid != os.getpid():
            self._after_fork()
        at_once = durable or (durable is None and self._durable_each) or self._degraded
        if self._defer:
            if at_once:
                with self._lock:
                    self._raise_failure()
                    return self._drain([prepared])
            with self._pending_cv:
                self._raise_failure()
                if self._sealed:
                    raise AuditError("audit log is closed")
                self._pending.append(prepared)
                queued = len(self._pending)
                if queued == 1:
                    self._pending_since = time.monotonic()
                    self._arm_deferred()
            if queued >= self._batch_max:  # the flusher is behind: wait for a commit
                with self._lock:
                    self._drain()
            return None
        with self._lock:
            seq = self._add(prepared)
            if at_once or len(self._rows) >= self._batch_max:
                self._commit()
            elif len(self._rows) == 1:
                self._arm_flusher()
            return seq

    def append_many(self, entries: Iterable[Mapping[str, Any]], *, durable: bool = True) -> list[int]:
        """Record many entries in one transaction; returns their sequence numbers."""
        prepared = [self.prepare(e) for e in entries]
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            seqs = [self._add(p) for p in prepared]
            if durable or len(self._rows) >= self._batch_max:
                self._commit()
            elif self._rows:
                self._arm_flusher()
            return seqs

    def flush(self) -> int:
        """Commit the open batch; return the log size this process has seen committed."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            self._raise_failure()
            if self._defer:
                self._drain()
                return self.store.size()
            if self._frontier is not None:
                size = self._frontier.size
                self._commit()
                return size
            return self.store.size()

    def sign_head(self) -> TreeHead:
        """Commit the open batch and sign a head for the log as it now stands."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._defer:
                self._drain()
            if self._frontier is not None:
                self._commit(force_head=True)
            else:
                self._begin()
                self._commit(force_head=True)
            heads = self.store.heads()
            return heads[-1]

    def close(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        with self._pending_cv:
            self._sealed = True  # an append from now on raises; what is queued commits below
        with self._lock:
            if self._closed:
                return
            try:
                self._raise_failure()
                if self._defer:
                    self._drain()
                if self._frontier is not None:
                    self._commit()
                self._begin()
                st = self._base
                self._commit(force_head=st.size > st.head_size)
            finally:
                self._closed = True
                self._wake.notify_all()
                with self._pending_cv:
                    self._pending_cv.notify_all()
                atexit.unregister(self._atexit)
                self.store.close()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)

    def __enter__(self) -> MerkleAuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals

    def _after_fork(self) -> None:
        """First use in a forked child (a pre-fork server): the parent's batch, locks,
        flusher thread and database connection are not this process's. Start clean on a
        connection of its own; the parent's pending entries stay the parent's."""
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._rows = []
        self._frontier = None
        self._flusher = None
        self._failure = None
        self._pending = []
        self._pending_cv = threading.Condition(threading.Lock())
        self._degraded = False
        reopen = getattr(self.store, "reopen_after_fork", None)
        if reopen is not None:
            reopen()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc, self._failure = self._failure, None
            raise AuditError(f"audit log commit failed; unacknowledged entries were lost: {exc}") from exc

    def _begin(self) -> None:
        if self._closed:
            raise AuditError("audit log is closed")
        try:
            st = self.store.begin()
        except Exception as exc:
            self._degraded = True
            raise AuditError(f"audit store unavailable: {exc}") from exc
        try:
            self._frontier = Frontier.from_bytes(st.size, st.frontier)
        except ValueError as exc:
            self.store.rollback()
            raise AuditError(f"audit store state is corrupt: {exc}") from exc
        self._base = st
        self._opened_at = time.monotonic()

    def _add(self, prepared: tuple[bytes, tuple[Any, ...]]) -> int:
        self._raise_failure()
        return self._push(prepared)

    def _push(self, prepared: tuple[bytes, tuple[Any, ...]]) -> int:
        if self._frontier is None:
            self._begin()
        frontier = self._frontier
        assert frontier is not None
        seq = frontier.size
        leaf = leaf_bytes(prepared[0], seq)
        lh = hashlib.sha256(b"\x00" + leaf).digest()
        frontier.push(lh)
        self._rows.append(Row(seq, leaf, lh, *prepared[1]))
        return seq

    def _commit(self, *, force_head: bool = False) -> None:
        frontier, st = self._frontier, self._base
        if frontier is None:
            return
        rows, self._rows = self._rows, []
        self._frontier = None
        try:
            head = None
            now_ms = int(self._clock() * 1000)
            grown = frontier.size > st.head_size
            if force_head or (grown and (
                    frontier.size - st.head_size >= self._head_every_entries
                    or now_ms - st.head_timestamp_ms >= self._head_every_ms)):
                head = self.signer.sign(self.store.log_id, frontier.size, frontier.root(), now_ms)
            self.store.commit(rows, frontier.size, frontier.to_bytes(), head)
        except BaseException as exc:
            self._degraded = True
            try:
                self.store.rollback()
            except Exception:  # noqa: S110 - the commit's own error is the one to report
                pass
            raise AuditError(f"audit log commit failed: {exc}") from exc
        self._degraded = False

    def _drain(self, extra: list[tuple[bytes, tuple[Any, ...]]] | None = None) -> int | None:
        """sequence="commit", with the writer lock held: number and commit every queued
        entry (and ``extra``) in one transaction. Returns the last sequence number."""
        with self._pending_cv:
            batch, self._pending = self._pending, []
        batch += extra or []
        if not batch:
            return None
        seq = None
        for prepared in batch:
            seq = self._push(prepared)
        self._commit()
        return seq

    def _arm_deferred(self) -> None:
        """sequence="commit" (with the queue's lock held): wake or start the flusher."""
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._deferred_loop, name="audit-flusher",
                                             daemon=True)
            self._flusher.start()
        self._pending_cv.notify()

    def _deferred_loop(self) -> None:
        while True:
            with self._pending_cv:
                while not self._pending and not self._closed:
                    self._pending_cv.wait()
                if self._closed:
                    return
                delay = self._pending_since + self._max_delay - time.monotonic()
                if delay > 0:
                    self._pending_cv.wait(delay)
                    continue
            with self._lock:
                if self._closed:
                    return
                try:
                    self._drain()
                except BaseException as exc:  # the next append raises it: the gate denies
                    self._failure = exc

    def _arm_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True)
            self._flusher.start()
        self._wake.notify()

    def _flush_loop(self) -> None:
        with self._lock:
            while not self._closed:
                if self._frontier is None:
                    self._wake.wait()
                    continue
                delay = self._opened_at + self._max_delay - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                try:
                    self._commit()
                except BaseException as exc:
                    self._failure = exc


def _closer(ref: weakref.ReferenceType[MerkleAuditLog]) -> Callable[[], None]:
    """At interpreter exit, commit what is pending (best effort: a kill skips this)."""

    def close() -> None:
        log = ref()
        if log is not None:
            with contextlib.suppress(Exception):
                log.close()

    return close


def _fork_guards(ref: weakref.ReferenceType[MerkleAuditLog]
                 ) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    """Commit any open batch before fork(), so no transaction (and no database lock) is
    copied into the child; the child then opens its own connection on first use."""
    held: list[MerkleAuditLog] = []

    def before() -> None:
        log = ref()
        if log is None or log._closed or log._pid != os.getpid():
            return
        log._lock.acquire()
        held.append(log)
        if log._defer:
            try:
                log._drain()
            except BaseException as exc:  # reported at the next append in the parent
                log._failure = exc
        if log._frontier is not None:
            try:
                log._commit()
            except BaseException as exc:  # reported at the next append in the parent
                log._failure = exc

    def after_in_parent() -> None:
        while held:
            held.pop()._lock.release()

    def after_in_child() -> None:
        held.clear()  # the child replaces the copied lock on first use (_after_fork)

    return before, after_in_parent, after_in_child


def open_log(store: Store, signer: HeadSigner, section: Any,
             redact: Callable[[str], str] | None = None,
             clock: Callable[[], float] = time.time) -> MerkleAuditLog:
    """A log configured from an ``AuditSection``."""
    return MerkleAuditLog(
        store, signer,
        redact_fields=section.redact_fields,
        redact=redact,
        head_every_entries=section.head_every_entries,
        head_every_seconds=section.head_every_seconds,
        batch_max_entries=section.batch_max_entries,
        batch_max_delay_ms=section.batch_max_delay_ms,
        durable_each=section.durable_each,
        clock=clock,
        sequence=section.sequence,
    )

