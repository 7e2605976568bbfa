"""Content inspection of what leaves: URL, headers and body of an outbound request.

Looks for secrets (live values the secrets room supplies, and well-known key formats),
also when base64-, hex- or URL-encoded, and for long encoded or high-entropy blobs that
carry data out. Patterns run on RE2 (linear time in the input, whatever the pattern
count), so a 1 MB body costs milliseconds. Findings never contain the secret: evidence
names the kind and where it was found.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

import re2

from ..actions import Finding, Severity, Verdict
from ..policy.sections.egress import InspectionSettings

LAYER = "egress"
MIN_SECRET_CHARS = 8  # shorter live values would match by accident

# Well-known credential formats (token prefixes documented by their issuers).
KEY_FORMATS: tuple[tuple[str, str], ...] = (
    ("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("aws_secret_access_key", r"(?i:aws_secret_access_key)\s*[=:]\s*[A-Za-z0-9/+=]{40}"),
    ("github_token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
    ("github_fine_grained_pat", r"\bgithub_pat_[A-Za-z0-9_]{60,255}"),
    ("gitlab_token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),
    ("slack_webhook", r"hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+"),
    ("stripe_key", r"\b[rs]k_live_[A-Za-z0-9]{20,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{16,}T3BlbkFJ[A-Za-z0-9_\-]{16,}"),
    ("openai_project_key", r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}"),
    ("anthropic_key", r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_\-]{80,}"),
    ("google_api_key", r"\bAIza[0-9A-Za-z_\-]{35}"),
    ("private_key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    ("npm_token", r"\bnpm_[A-Za-z0-9]{36}\b"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{34,}\b"),
    ("sendgrid_key", r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}"),
    ("azure_storage_key", r"AccountKey=[A-Za-z0-9+/]{80,}={0,2}"),
)

# Everything runs on bytes: RE2 on str pays for UTF-8 conversion and offset mapping.
_KEYS = re2.compile("|".join(f"(?P<{name}>{rx})" for name, rx in KEY_FORMATS).encode())
_B64_RUN = re2.compile(rb"[A-Za-z0-9+/_\-]{16,}={0,2}")
# Either of the two above: a text where this finds nothing has no key format and no
# encoded-looking run, so only a live secret's value can be in it (one scan, not two).
_KEY_OR_RUN = re2.compile(_KEYS.pattern + rb"|[A-Za-z0-9+/_\-]{16,}")
# The same question for short texts (a URL, a header block), asked of Python's own engine:
# RE2 lets go of the GIL on every call, and where another thread is busy (the gate's audit
# writer) each call can cost a thread switch, more than the scan itself. This finds a run
# of 16 base64 characters or the start of each key format whose match can be shorter than
# that; tests check it against every format. A fixed repeat and literals: linear time.
_KEY_OR_RUN_SHORT = re.compile(rb"[A-Za-z0-9+/_\-]{16}|xox[abposr]-|-----BEGIN |eyJ")
_SHORT = 4096
_HEX_RUN = re2.compile(rb"[0-9A-Fa-f]{16,}")
_DIGIT = re2.compile(rb"[0-9]")
_HEX_ONLY = re2.compile(rb"[0-9A-Fa-f]+")
_MAX_DECODE_RUNS = 256  # decoded-content scan: bounded work per request
_MAX_RUNS = 100_000  # encoded-looking runs considered per text


def shannon_entropy(text: str | bytes) -> float:
    """Bits per character (or byte) of ``text``'s own distribution."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _b64_needles(raw: bytes) -> set[str]:
    """Base64 spellings of ``raw`` at each of the three byte alignments it can sit at inside
    a larger encoded text: the characters fully determined by ``raw`` alone."""
    out: set[str] = set()
    n = len(raw)
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw).decode("ascii").rstrip("=")
        start = -(-8 * k // 6)
        end = (8 * (k + n)) // 6
        piece = enc[start:end]
        if len(piece) >= MIN_SECRET_CHARS:
            out.add(piece)
            out.add(piece.replace("+", "-").replace("/", "_"))
    return out


def secret_needles(secret: str) -> dict[str, str]:
    """Every spelling of ``secret`` that inspection looks for, mapped to the form's name."""
    raw = secret.encode("utf-8")
    forms: dict[str, str] = {secret: "plain"}
    for form in (raw.hex(), raw.hex().upper()):
        forms.setdefault(form, "hex")
    for form in _b64_needles(raw):
        forms.setdefault(form, "base64")
    return forms


class _SecretMatcher:
    """One RE2 alternation of every needle of every live secret (cached per secret set)."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.forms: dict[bytes, str] = {}
        for s in secrets:
            for needle, form in secret_needles(s).items():
                self.forms.setdefault(needle.encode("utf-8"), form)
        self.regex: Any = (
            re2.compile(b"|".join(re2.escape(n) for n in sorted(self.forms, key=len, reverse=True)))
            if self.forms
            else None
        )

    def first(self, text: bytes) -> str | None:
        if self.regex is None:
            return None
        m = self.regex.search(text)
        return None if m is None else self.forms.get(m.group(0), "plain")


class Inspector:
    """Inspects one outbound request. Configuration is compiled once; live secrets are
    re-read on every call (they rotate) and their matcher is cached per set."""

    def __init__(self, settings: InspectionSettings | None = None) -> None:
        self.settings = settings if settings is not None else InspectionSettings()
        self.ignore = frozenset(self.settings.ignore_headers)
        self._matcher_key: tuple[str, ...] | None = None
        self._matcher: _SecretMatcher | None = None
        s = self.settings
        self._blob_url = _hex_blob(s.blob_min_chars_url)
        self._blob_body = _hex_blob(s.blob_min_chars_body)

    def _secrets(self, live_secrets: Callable[[], Iterable[str]] | None) -> _SecretMatcher | None:
        if live_secrets is None:
            return None
        key = tuple(sorted({s for s in live_secrets() if len(s) >= MIN_SECRET_CHARS}))
        if not key:
            return None
        if key != self._matcher_key:
            self._matcher, self._matcher_key = _SecretMatcher(key), key
        return self._matcher

    def inspect(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        live_secrets: Callable[[], Iterable[str]] | None = None,
    ) -> list[Finding]:
        s = self.settings
        findings: list[Finding] = []
        if len(body) > s.max_inspect_bytes:
            return [
                Finding(
                    layer=LAYER, rule="egress.too_large",
                    message=f"request body of {len(body)} bytes is larger than inspection "
                    f"allows (egress.inspect.max_inspect_bytes {s.max_inspect_bytes})",
                    evidence=f"body: {len(body)} bytes", severity=Severity.MEDIUM,
                )
            ]
        head: list[tuple[str, bytes, bool]] = [("url", url.encode("utf-8", "replace"), True)]
        for k, v in headers.items():
            if k.lower() not in self.ignore:
                head.append((f"header {k}", f"{k}: {v}".encode("utf-8", "replace"), True))
        matcher = self._secrets(live_secrets) if s.secrets else None
        # Fast path: URL and headers in one pass ('\n' ends every run and token); only a
        # hit is worth a second look, part by part, to say where it is.
        joined = b"\n".join(t for _, t, _ in head)
        if self._inspect_text("request head", joined, True, matcher) is not None:
            for where, text, short in head:
                f = self._inspect_text(where, text, short, matcher)
                if f is not None:
                    findings.append(f)
            if not findings:  # pragma: no cover - a hit that no single part shows
                findings.append(self._inspect_text("request head", joined, True, matcher))  # type: ignore[arg-type]
        if body:
            f = self._inspect_text("body", body, False, matcher)
            if f is not None:
                findings.append(f)
        return findings

    def _inspect_text(
        self, where: str, text: bytes, short: bool, matcher: _SecretMatcher | None
    ) -> Finding | None:
        s = self.settings
        views = [text]
        if b"%" in text or (not short and b"+" in text):
            decoded = unquote_to_bytes(text if short else text.replace(b"+", b" "))
            views.append(decoded)
            if b"%" in decoded:
                views.append(unquote_to_bytes(decoded))
        min_chars = s.blob_min_chars_url if short else s.blob_min_chars_body
        for view in views:
            if (_KEY_OR_RUN_SHORT if len(view) <= _SHORT else _KEY_OR_RUN).search(view) is None:
                if matcher is not None and s.secrets:
                    form = matcher.first(view)
                    if form is not None:
                        return self._secret_finding(where, f"live secret ({form})")
                continue
            # One pass finds every encoded-looking run (hex is a subset of the base64
            # alphabet); secret decoding and blob detection both work from it.
            runs = [m.group(0) for m, _ in zip(_B64_RUN.finditer(view), range(_MAX_RUNS), strict=False)]
            if s.secrets:
                hit = self._secret_in(view, runs, matcher)
                if hit is not None:
                    return self._secret_finding(where, hit)
            if s.blobs:
                f = self._blob_in(where, [r for r in runs if len(r) >= min_chars], min_chars,
                                  self._blob_url if short else self._blob_body)
                if f is not None:
                    return f
        return None

    def _secret_in(self, text: bytes, runs: list[bytes], matcher: _SecretMatcher | None) -> str | None:
        if matcher is not None:
            form = matcher.first(text)
            if form is not None:
                return f"live secret ({form})"
        m = _KEYS.search(text)
        if m is not None:
            return f"{m.lastgroup} key format"
        # Encoded content: decode base64 and hex runs and look again.
        for run in runs[:_MAX_DECODE_RUNS]:
            candidates: list[tuple[str, bytes | None]] = []
            if _HEX_ONLY.fullmatch(run):
                candidates.append(("hex", _unhex(run)))
            else:
                candidates.append(("base64", _unb64(run)))
                hm = _HEX_RUN.search(run)
                if hm is not None:
                    candidates.append(("hex", _unhex(hm.group(0))))
            for kind, raw in candidates:
                if raw is None or len(raw) < MIN_SECRET_CHARS:
                    continue
                if matcher is not None and matcher.first(raw) is not None:
                    return f"live secret ({kind})"
                km = _KEYS.search(raw)
                if km is not None:
                    return f"{km.lastgroup} key format ({kind})"
        return None

    def _secret_finding(self, where: str, what: str) -> Finding:
        return Finding(
            layer=LAYER, rule="egress.secret_in_request",
            message=f"{what} found in the request {where}; secrets may not leave through egress",
            evidence=f"{where}: {what}", severity=Severity.CRITICAL,
        )

    def _blob_in(self, where: str, runs: list[bytes], min_chars: int, hex_rx: Any) -> Finding | None:
        s = self.settings
        found: tuple[str, int] | None = None
        for run in runs:
            hm = hex_rx.search(run)
            if hm is not None and shannon_entropy(hm.group(0)[:4096]) >= 3.0:
                found = ("hex", len(hm.group(0)))
                break
            body = run.rstrip(b"=")
            sample = body[:4096]  # judging randomness needs a sample, not a megabyte
            # Random base64 has upper, lower and digits; words and slugs rarely do.
            if (
                len(body) >= min_chars
                and sample.lower() != sample  # has upper case
                and sample.upper() != sample  # has lower case
                and _DIGIT.search(sample) is not None
                and shannon_entropy(sample) >= s.min_entropy
            ):
                found = ("base64/high-entropy", len(body))
                break
        if found is None:
            return None
        kind, size = found
        verdict = Verdict.ASK if s.blob_verdict == "ask" else Verdict.DENY
        return Finding(
            layer=LAYER, rule="egress.blob_in_request",
            message=f"{kind} blob of {size} characters in the request {where} "
            f"(threshold {min_chars}; egress.inspect.blobs turns this off)",
            verdict=verdict, evidence=f"{where}: {kind} blob, {size} chars",
            severity=Severity.MEDIUM,
        )


def _hex_blob(min_chars: int) -> Any:
    return re2.compile(rb"[0-9A-Fa-f]{" + str(min_chars).encode() + rb",}")


def _unhex(run: bytes) -> bytes | None:
    if len(run) % 2:
        run = run[:-1]
    try:
        return bytes.fromhex(run.decode("ascii"))
    except ValueError:
        return None


def _unb64(run: bytes) -> bytes | None:
    body = run.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    if len(body) % 4 == 1:
        body = body[:-1]
    try:
        return base64.b64decode(body + b"=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
