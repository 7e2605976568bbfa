"""Fingerprints of text that survive copying, reformatting and encoding.

Three kinds, all 64-bit integers so that a sink check is hash-set lookups, never a scan
of what the session has seen:

* **n-grams of normalised tokens** (NFKC, case-folded, alphanumeric runs — so case,
  whitespace and punctuation changes do not matter). Long texts keep only the n-grams
  chosen by *winnowing* (Schleimer, Wilkerson & Aiken, "Winnowing: local algorithms for
  document fingerprinting", SIGMOD 2003): in every window of ``w`` consecutive n-gram
  hashes the minimum (rightmost on ties) is kept, which guarantees that any shared run
  of ``w + k - 1`` tokens shares a fingerprint. Short texts keep every n-gram. The sink
  side always computes every n-gram of its argument.
* **exact spans**: key-like runs (``[A-Za-z0-9+/_-]`` of ``span_chars`` or more with
  digits or mixed case) — an API key copied alone matches on its own.
* **short values** (fewer than ``k`` tokens): the whole token sequence, matched against
  the sink argument's n-grams of that length.

Encoded copies are found by decoding, not by encoding: base64, hex and percent-encoded
runs in the text are decoded (twice at most) and fingerprinted too.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

_TOKEN = re.compile(r"[^\W_]+")
# The look-behind makes each run start once (no retry inside a short word): linear time.
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{16,}={0,2}")
_HEX_RUN = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")
_PCT = re.compile(r"%[0-9a-fA-F]{2}")
_MAX_DECODE_DEPTH = 2


# Everyday words: an n-gram made only of these ("let me know if", "thank you for your")
# is boilerplate that private and public text share, so it is not a fingerprint.
COMMON_WORDS = frozenset("""
a about above after again against all also am an and any are as at back be because been
before being below between both but by can could did do does doing done down during each
even ever every few for from further get gets getting got had has have having he her here
hers herself him himself his how i if in into is it its itself just let lets like me more
most my myself no nor not now of off on once only or other our ours ourselves out over own
please same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up us very was we were what when where
which while who whom why will with would you your yours yourself yourselves hi hello hey
dear thanks thank thankyou regards best kind sincerely cheers morning afternoon evening
today tomorrow yesterday week weeks month next last soon later know see look looking
forward hope happy glad sure ok okay yes well new one two time times day days everyone
team all question questions help need needs want make made take find found send sent
email mail call meeting attached attachment following follow update updates via re fw
fwd note notes info information let's great good thing things way may might must shall
""".split())


def tokens(text: str) -> list[str]:
    """Normalised tokens: NFKC, case-folded, alphanumeric runs. Upper-casing first makes
    letters whose lower forms differ but upper forms agree (ı/i, ſ/s) one token."""
    if text.isascii():
        return _TOKEN.findall(text.lower())
    folded = unicodedata.normalize("NFKC", text).upper().casefold()
    return _TOKEN.findall(unicodedata.normalize("NFKC", folded))


@functools.lru_cache(maxsize=1 << 16)
def stable_hash(s: str) -> int:
    """A 64-bit hash that is the same in every process (Python's ``hash`` of a str is
    salted per process; shared stores need one value everywhere)."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little", signed=True)


_COMMON_HASHES: frozenset[int] = frozenset(stable_hash(w) for w in COMMON_WORDS)


def _token_hashes(toks: list[str]) -> list[int]:
    return [stable_hash(t) for t in toks]


def ngram_hashes(th: list[int], n: int, skip_common: bool = True) -> list[int]:
    """Hashes of every run of ``n`` token hashes, leaving out runs made only of common
    words. ``hash`` of a tuple of ints is not salted, so it is stable across processes.
    (Written with ``zip`` so the loop runs in C: this is the sink check's hot path.)"""
    m = len(th) - n + 1
    if m <= 0:
        return []
    grams = zip(*(th[j:j + m] for j in range(n)), strict=True)
    if not skip_common:
        return [hash(g) for g in grams]
    common = _COMMON_HASHES
    rare = [h not in common for h in th]
    keep = map(any, zip(*(rare[j:j + m] for j in range(n)), strict=True))
    return [hash(g) for g, k in zip(grams, keep, strict=True) if k]


def winnow(hashes: list[int], w: int) -> set[int]:
    """Winnowing: the set of minima of every window of ``w`` consecutive hashes. (The
    paper also records positions and breaks ties to the right; as a set of values the
    selection is the same.) Vectorised with numpy for long texts."""
    if len(hashes) <= w:
        return set(hashes)
    if len(hashes) < 256:
        return {min(hashes[i:i + w]) for i in range(len(hashes) - w + 1)}
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    arr = np.fromiter(hashes, dtype=np.int64, count=len(hashes))
    mins = sliding_window_view(arr, w).min(axis=1)
    return set(np.unique(mins).tolist())


def _key_like(run: str) -> bool:
    has_digit = any(c.isdigit() for c in run)
    has_lower = any(c.islower() for c in run)
    has_upper = any(c.isupper() for c in run)
    return (has_digit and (has_lower or has_upper)) or (has_lower and has_upper)


def decoded_forms(text: str, depth: int = _MAX_DECODE_DEPTH) -> list[str]:
    """Texts hidden in ``text`` as base64, hex or percent encoding (recursively)."""
    out: list[str] = []
    if depth <= 0:
        return out
    found: list[str] = []
    if "%" in text and _PCT.search(text):
        u = unquote_plus(text)
        if u != text:
            found.append(u)
    for m in _HEX_RUN.finditer(text):
        try:
            found.append(_printable(bytes.fromhex(m.group(0))))
        except ValueError:
            pass
    for m in _B64_RUN.finditer(text):
        run = m.group(0)
        if _HEX_RUN.fullmatch(run):
            continue
        raw = run.rstrip("=")
        pad = "=" * (-len(raw) % 4)
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                found.append(_printable(decoder(raw + pad)))
                break
            except (binascii.Error, ValueError):
                continue
    for f in found:
        if f and f != text:
            out.append(f)
            out.extend(decoded_forms(f, depth - 1))
    return list(dict.fromkeys(out))


def _printable(b: bytes) -> str:
    """The bytes as text when they look like text, else ``""`` (random bytes decoded
    from an innocent base64-looking word must not become noise)."""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not s:
        return ""
    good = sum(1 for c in s if c.isprintable() or c in "\n\r\t")
    return s if good / len(s) >= 0.9 else ""


@dataclass(frozen=True, slots=True)
class Settings:
    k: int = 3
    window: int = 4
    dense_tokens: int = 512
    min_chars: int = 8
    span_chars: int = 16
    decode: bool = True

    def span_re(self) -> re.Pattern[str]:
        return re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{" + str(self.span_chars)
                          + ",}")


@dataclass(slots=True)
class SeenPrints:
    """What one seen text contributes to the index."""

    grams: set[int] = field(default_factory=set)
    spans: set[int] = field(default_factory=set)
    shorts: dict[int, set[int]] = field(default_factory=dict)  # n tokens → hashes

    def empty(self) -> bool:
        return not (self.grams or self.spans or self.shorts)


@dataclass(slots=True)
class QueryPrints:
    """Every fingerprint of a sink argument (all n-grams, not winnowed)."""

    grams: set[int] = field(default_factory=set)
    spans: set[int] = field(default_factory=set)
    shorts: set[int] = field(default_factory=set)


class Fingerprinter:
    def __init__(self, settings: Settings | None = None) -> None:
        self.s = settings or Settings()
        self._span = self.s.span_re()

    def _spans(self, text: str) -> set[int]:
        return {stable_hash(m.group(0)) for m in self._span.finditer(text)
                if _key_like(m.group(0))}

    def _texts(self, text: str) -> list[str]:
        return [text, *decoded_forms(text)] if self.s.decode else [text]

    def seen(self, text: str) -> SeenPrints:
        """Fingerprints of a result the session saw (winnowed when long)."""
        out = SeenPrints()
        k, w = self.s.k, self.s.window
        for t in self._texts(text):
            toks = tokens(t)
            if sum(map(len, toks)) < self.s.min_chars:
                continue
            out.spans |= self._spans(t)
            th = _token_hashes(toks)
            if len(th) < k:
                out.shorts.setdefault(len(th), set()).add(hash(tuple(th)))
                continue
            grams = ngram_hashes(th, k)
            out.grams |= set(grams) if len(toks) <= self.s.dense_tokens else winnow(grams, w)
        return out

    def query(self, text: str, short_lengths: Iterable[int] = ()) -> QueryPrints:
        """Fingerprints of a sink argument: every n-gram, spans, and n-grams of the
        lengths that short seen values have."""
        out = QueryPrints()
        k = self.s.k
        lengths = [n for n in short_lengths if 0 < n < k]
        for t in self._texts(text):
            toks = tokens(t)
            out.spans |= self._spans(t)
            th = _token_hashes(toks)
            out.grams.update(ngram_hashes(th, k))
            for n in lengths:
                out.shorts.update(ngram_hashes(th, n))
        return out
