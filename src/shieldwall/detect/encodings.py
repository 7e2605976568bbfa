"""Encoded payloads: find base64, hex, URL-encoded and rot13 text and decode it.

An instruction written in base64 passes every word-based filter and is still read by a
model that knows base64. Each candidate span is decoded (bounded depth and size), kept
only if it decodes to mostly printable text, and the decoded text goes back through
the injection checks. Long high-entropy blobs that decode to nothing readable are an
output-side signal (a key or an exfiltrated archive), reported by :func:`blobs`.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import math
import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import unquote

import re2

from ..actions import Severity
from .base import Hit

MAX_DEPTH = 3
MAX_DECODED = 64 * 1024  # total decoded characters per text
MIN_B64 = 16

# RE2 (linear time, leftmost-longest runs make look-arounds unnecessary).
_B64 = re2.compile(r"[A-Za-z0-9+/_-]{%d,}={0,2}".replace("%d", str(MIN_B64)))
_HEX = re2.compile(r"(?:[0-9A-Fa-f]{2}[ :]?){8,}|(?:\\x[0-9A-Fa-f]{2}){6,}")
_URLENC = re.compile(r"[^\s%]*(?:%[0-9A-Fa-f]{2}[^\s%]*){3,}")
_ROT13_HINT = re.compile(r"\brot[- ]?13\b|\bcaesar\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z]{2,}")
# The most frequent English words: decoded text that holds several of them is language.
_COMMON = frozenset(
    "the be to of and in that have it for not on with he as you do at this but his by from "
    "they we say her she or an will my one all would there their what so up out if about "
    "who get which go me when make can like time no just him know take people into year "
    "your good some could them see other than then now look only come its over think also "
    "back after use two how our work first well way even new want because any these give "
    "day most us is are was were ignore instructions previous print say tell system prompt "
    "reveal secret password".split()
)


@dataclass(frozen=True, slots=True)
class Decoded:
    kind: str  # base64 | hex | url | rot13
    span: tuple[int, int]  # in the text it was found in (for depth > 1, the parent's decoded text)
    text: str
    depth: int


def _printable(s: str) -> bool:
    if not s:
        return False
    good = sum(1 for c in s if c.isprintable() or c in "\n\r\t")
    return good / len(s) >= 0.9


def english_ratio(s: str) -> float:
    words = _WORD.findall(s.lower())
    if not words:
        return 0.0
    return sum(1 for w in words if w in _COMMON) / len(words)


def _try_b64(s: str) -> str | None:
    t = s.rstrip("=")
    if len(t) < MIN_B64:
        return None
    # Identifiers, paths and hex digests look base64-ish; real base64 mixes cases and digits.
    if (t.isalpha() and (t.islower() or t.isupper())) or t.isdigit():
        return None
    pad = "=" * (-len(t) % 4)
    try:
        raw = (base64.urlsafe_b64decode(t + pad) if ("-" in t or "_" in t)
               else base64.b64decode(t + pad, validate=True))
        out = raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return out if _printable(out) else None


def _try_hex(s: str) -> str | None:
    t = s.replace("\\x", "").replace(" ", "").replace(":", "")
    if len(t) % 2:
        t = t[:-1]
    try:
        out = bytes.fromhex(t).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return out if _printable(out) else None


def _candidates(text: str) -> list[tuple[str, tuple[int, int], str]]:
    found: list[tuple[str, tuple[int, int], str]] = []
    for m in _HEX.finditer(text):
        d = _try_hex(m.group(0))
        if d:
            found.append(("hex", m.span(), d))
    for m in _B64.finditer(text):
        s = m.group(0)
        if all(c in "0123456789abcdefABCDEF" for c in s):
            continue  # hex digests are handled above and are not base64
        d = _try_b64(s)
        if d:
            found.append(("base64", m.span(), d))
    if "%" in text:
        for m in _URLENC.finditer(text):
            d = unquote(m.group(0))
            if d != m.group(0) and _printable(d):
                found.append(("url", m.span(), d))
    return found


def decode_all(text: str, *, max_depth: int = MAX_DEPTH, budget: int = MAX_DECODED) -> list[Decoded]:
    """Every readable decoding found in ``text``, nested up to ``max_depth`` levels, with
    no more than ``budget`` decoded characters in all."""
    out: list[Decoded] = []
    frontier: list[tuple[str, int]] = [(text, 0)]
    while frontier:
        current, depth = frontier.pop()
        if depth >= max_depth:
            continue
        for kind, span, decoded in _candidates(current):
            if budget <= 0:
                return out
            decoded = decoded[:budget]
            budget -= len(decoded)
            out.append(Decoded(kind, span, decoded, depth + 1))
            frontier.append((decoded, depth + 1))
    # rot13 of the whole text, when it is asked for or when it turns gibberish into English.
    if budget > 0 and len(text) >= 12 and max_depth > 0:
        hinted = _ROT13_HINT.search(text) is not None
        if hinted or english_ratio(text[:4096]) < 0.1:
            rot = codecs.decode(text, "rot13")
            if hinted or english_ratio(rot[:4096]) >= 0.3:
                out.append(Decoded("rot13", (0, len(text)), rot[:budget], 1))
    return out


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


_BLOB = re.compile(r"[A-Za-z0-9+/=_-]{64,}")


def blobs(text: str, *, min_len: int = 64, min_entropy: float = 4.5) -> list[Hit]:
    """Long high-entropy runs (keys, archives, exfiltrated data packed into one token)."""
    hits: list[Hit] = []
    for m in _BLOB.finditer(text):
        s = m.group(0)
        if len(s) >= min_len and entropy(s) >= min_entropy:
            hits.append(Hit("detect.encoded_blob",
                            f"{len(s)}-character high-entropy blob",
                            score=0.6, span=m.span(), evidence=s[:12] + "...",
                            severity=Severity.MEDIUM))
    return hits
