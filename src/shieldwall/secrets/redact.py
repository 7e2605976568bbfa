"""Redaction of live secret values — and their base64, hex and URL-encoded forms — with
one multi-pattern matcher.

The matcher works like multi-pattern Rabin–Karp (Karp & Rabin, "Efficient randomized
pattern-matching algorithms", 1987) with the window itself as the key: every form is at
least ``m`` bytes (m ≤ 8), each form's first ``m`` bytes go into a table, and every
``m``-byte window of the text is tested against a bitmap in a few vectorised passes
(numpy); only the rare candidate windows are looked up and verified byte for byte. Cost
per byte is flat in the number of secrets, where a regular-expression alternation of
thousands of literals exhausted RE2's DFA memory here (0.2 MB/s with 1,000 secrets).

Forms of a value ``v``: ``v``; base64 (standard and URL-safe, padded or not) and the part
of it that stays the same when ``v`` sits inside a longer base64 blob at any of the three
byte alignments; hex (lower and upper); percent-encoding (``quote``, ``quote_plus``);
JSON string escaping.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

import numpy as np

REDACTED = "[REDACTED]"


def _b64_cores(raw: bytes, urlsafe: bool) -> set[str]:
    """Base64 text of ``raw`` that does not depend on the bytes around it."""
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    out = set()
    for off in (0, 1, 2):
        e = enc(b"\0" * off + raw).decode()
        first = -(-8 * off // 6)  # first char made only of raw's bits
        last = (8 * (off + len(raw))) // 6  # end of the last such char
        out.add(e[first:last])
    full = enc(raw).decode()
    out.add(full)
    out.add(full.rstrip("="))
    return out


def forms_of(value: str, encodings: bool = True) -> set[str]:
    """Every text form of ``value`` the redactor removes."""
    out = {value}
    if not encodings:
        return out
    raw = value.encode("utf-8")
    out |= _b64_cores(raw, urlsafe=False)
    out |= _b64_cores(raw, urlsafe=True)
    out.add(raw.hex())
    out.add(raw.hex().upper())
    out.add(quote(value, safe=""))
    out.add(quote(value))
    out.add(quote_plus(value, safe=""))
    out.add(json.dumps(value)[1:-1])
    out.add(json.dumps(value, ensure_ascii=False)[1:-1])
    return out


class _Table:
    """The compiled matcher for one set of forms (immutable; swapped on change).

    Key of a form: its first ``m`` bytes (``m`` ≤ 8, the shortest form's length) read as
    a little-endian integer. The text is read as unaligned 64-bit words at the eight byte
    offsets (zero-copy views), masked to ``m`` bytes, filtered through a 2^20-bit
    bitmap of mixed keys, and only the survivors are looked up and verified.
    """

    _BITS = 20
    _MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier

    def __init__(self, forms: Iterable[bytes]) -> None:
        fs = sorted(set(forms), key=len, reverse=True)
        self.m = min(min((len(f) for f in fs), default=0), 8)
        self.mask = np.uint64((1 << (8 * self.m)) - 1) if self.m else np.uint64(0)
        buckets: dict[int, list[bytes]] = {}
        for f in fs:  # longest first, so the longest form wins at a position
            buckets.setdefault(int.from_bytes(f[: self.m], "little"), []).append(f)
        self.buckets = buckets
        self.bitmap = np.zeros(1 << self._BITS, dtype=bool)
        if buckets:
            keys = np.array(list(buckets), dtype=np.uint64)
            with np.errstate(over="ignore"):
                self.bitmap[(keys * self._MIX) >> np.uint64(64 - self._BITS)] = True

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        m = self.m
        if m == 0 or len(data) < m:
            return []
        padded = data + b"\0" * 8
        shift = np.uint64(64 - self._BITS)
        cands: list[int] = []
        for k in range(8):
            count = (len(padded) - k) // 8
            if count <= 0:
                continue
            v = np.frombuffer(padded, dtype="<u8", count=count, offset=k)
            with np.errstate(over="ignore"):
                keys = v & self.mask
                hit = self.bitmap[(keys * self._MIX) >> shift]
            idx = np.flatnonzero(hit)
            if idx.size:
                cands.extend((idx * 8 + k).tolist())
        if not cands:
            return []
        cands.sort()
        out: list[tuple[int, int]] = []
        end = 0
        buckets = self.buckets
        for pos in cands:
            if pos < end or pos + m > len(data):
                continue
            bucket = buckets.get(int.from_bytes(data[pos:pos + m], "little"))
            if bucket is None:
                continue
            for f in bucket:
                if data.startswith(f, pos):
                    out.append((pos, pos + len(f)))
                    end = pos + len(f)
                    break
        return out


class Redactor:
    """Holds the live values (with optional expiry, for values rotated out) and removes
    them from text. Thread-safe; the compiled table is rebuilt only when values change."""

    def __init__(self, *, encodings: bool = True, min_chars: int = 4,
                 replacement: str = REDACTED) -> None:
        self.encodings = encodings
        self.min_chars = min_chars
        self.replacement = replacement
        self._lock = threading.Lock()
        self._values: dict[str, float | None] = {}  # value -> expiry (None: live)
        self._table = _Table(())
        self._dirty = False

    def add(self, value: str, expires: float | None = None) -> None:
        """Redact ``value`` from now on (until ``expires``, or for as long as it lives)."""
        if len(value) < self.min_chars:
            return
        with self._lock:
            if value in self._values:
                cur = self._values[value]
                new = None if cur is None or expires is None else max(cur, expires)
                if new == cur:
                    return
                self._values[value] = new
            else:
                self._values[value] = expires
            self._dirty = True

    def retire(self, value: str, until: float) -> None:
        """A rotated-out value stays redacted until ``until``."""
        with self._lock:
            if value in self._values:
                self._values[value] = until
                self._dirty = True

    def expire(self, now: float) -> None:
        with self._lock:
            gone = [v for v, t in self._values.items() if t is not None and t < now]
            for v in gone:
                del self._values[v]
            if gone:
                self._dirty = True

    def values(self) -> list[str]:
        """The values currently redacted (live ones and retired ones in their grace period)."""
        with self._lock:
            return list(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _current(self) -> _Table:
        if self._dirty:
            with self._lock:
                if self._dirty:
                    forms: set[bytes] = set()
                    for v in self._values:
                        for f in forms_of(v, self.encodings):
                            if len(f) >= self.min_chars:
                                forms.add(f.encode("utf-8"))
                    self._table = _Table(forms)
                    self._dirty = False
        return self._table

    def redact_bytes(self, data: bytes) -> bytes:
        table = self._current()
        spans = table.spans(data)
        if not spans:
            return data
        rep = self.replacement.encode()
        parts = []
        last = 0
        for a, b in spans:
            parts.append(data[last:a])
            parts.append(rep)
            last = b
        parts.append(data[last:])
        return b"".join(parts)

    def redact(self, text: str) -> str:
        if not self._values or not text:
            return text
        data = text.encode("utf-8", "surrogatepass")
        out = self.redact_bytes(data)
        # UTF-8 is self-synchronising: a whole form is whole characters, so cutting
        # at its bounds leaves valid text.
        return text if out is data else out.decode("utf-8", "surrogatepass")

    def contains(self, text: str) -> bool:
        return bool(self._values) and bool(
            self._current().spans(text.encode("utf-8", "surrogatepass")))

    def redact_value(self, value: Any, depth: int = 0) -> Any:
        """A copy of a JSON-like value with every string (and bytes) redacted."""
        if depth > 32:
            return self.replacement
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, bytes):
            return self.redact_bytes(value)
        if isinstance(value, dict):
            return {(self.redact(k) if isinstance(k, str) else k): self.redact_value(v, depth + 1)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v, depth + 1) for v in value]
        if isinstance(value, tuple):
            return tuple(self.redact_value(v, depth + 1) for v in value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.redact(repr(value))
