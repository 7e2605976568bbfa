"""Secrets in outgoing text: detect-secrets' plugins plus exact live values.

The regex plugins of ``detect-secrets`` (AWS, GitHub, Slack, Stripe, private keys, JWT
...) find credentials by shape; the keyword plugin finds ``password = "..."``
assignments. The strongest check is exact: the secret values this deployment actually
holds (from the vault) are matched literally and in their base64, hex and URL-encoded
forms, so a leaked live key is found whatever its shape.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from ..actions import Severity
from .base import Hit

# Plugins left out: entropy ones (encodings.blobs covers long blobs with fewer false
# positives on prose), IPPublic (an address is not a secret), Keyword (run per line below).
_SKIP = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector", "KeywordDetector"}
_KEYWORDISH = re.compile(r"pass(?:word|wd)?|secret|token|api[_-]?key|credential|private[_-]?key", re.I)


@lru_cache(maxsize=1)
def _plugins() -> tuple[list[tuple[str, list[re.Pattern[str]]]], Any]:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.keyword import KeywordDetector

    regexes: list[tuple[str, list[re.Pattern[str]]]] = []
    mapping: dict[str, Any] = get_mapping_from_secret_type_to_class()
    for secret_type, cls in mapping.items():
        if cls.__name__ in _SKIP:
            continue
        deny = getattr(cls, "denylist", None)
        if deny:
            regexes.append((secret_type, list(deny)))
    return regexes, KeywordDetector()


@lru_cache(maxsize=1)
def _prefilter() -> tuple[re.Pattern[str], ...]:
    """The plugins' patterns joined into one alternation per flag set: one search says
    whether any plugin could match, so clean text (most tool arguments) costs one pass
    instead of ~45."""
    regexes, _ = _plugins()
    by_flags: dict[int, list[str]] = {}
    for _, pats in regexes:
        for pat in pats:
            by_flags.setdefault(pat.flags, []).append(f"(?:{pat.pattern})")
    return tuple(re.compile("|".join(ps), flags) for flags, ps in by_flags.items())


def _slug(secret_type: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")


def scan(text: str) -> list[Hit]:
    """Credential-shaped strings (no live values needed)."""
    hits: list[Hit] = []
    regexes, keyword = _plugins()
    if not any(p.search(text) for p in _prefilter()):
        regexes = []
    for secret_type, pats in regexes:
        for pat in pats:
            for m in pat.finditer(text):
                hits.append(Hit(f"detect.secret.{_slug(secret_type)}", f"{secret_type} in text",
                                span=m.span(), evidence="[redacted]", severity=Severity.HIGH))
                break
    if _KEYWORDISH.search(text):
        offset = 0
        for line in text.splitlines(keepends=True):
            if _KEYWORDISH.search(line):
                for value in keyword.analyze_string(line):
                    i = line.find(value)
                    span = (offset + i, offset + i + len(value)) if i >= 0 else None
                    hits.append(Hit("detect.secret.keyword", "a secret assigned to a keyword",
                                    span=span, evidence="[redacted]", score=0.7,
                                    severity=Severity.MEDIUM))
                    break
            offset += len(line)
    return hits


class LiveSecrets:
    """Exact matching of the secret values a deployment holds (and their encodings)."""

    def __init__(self, values: Iterable[str] = (), min_len: int = 6) -> None:
        self._forms: dict[str, str] = {}
        for v in values:
            self.add(v, min_len)

    def add(self, value: str, min_len: int = 6) -> None:
        if len(value) < min_len:
            return  # too short to match without false positives
        raw = value.encode()
        for form in (value, base64.b64encode(raw).decode().rstrip("="),
                     base64.urlsafe_b64encode(raw).decode().rstrip("="), raw.hex(),
                     quote(value, safe="")):
            self._forms.setdefault(form, value)

    def __len__(self) -> int:
        return len(self._forms)

    def scan(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        seen: set[str] = set()
        for form, value in self._forms.items():
            i = text.find(form)
            if i >= 0 and value not in seen:
                seen.add(value)
                encoded = "" if form == value else " (encoded)"
                hits.append(Hit("detect.secret.live_value", f"a live secret value{encoded} in text",
                                span=(i, i + len(form)), evidence="[redacted]",
                                severity=Severity.CRITICAL))
        return hits
