"""Canary tokens (after Rebuff): a random per-session marker placed in the system prompt.

The model never has a reason to repeat it; its appearance in a reply or a tool argument
means the system prompt (or the context around it) is leaking. Matching also survives
the cheap disguises: case, separators, base64 and hex of the token.
"""

from __future__ import annotations

import base64
import re
import secrets as _secrets
from collections.abc import Callable
from functools import lru_cache

from ..actions import Severity
from .base import Hit

PREFIX = "swc"


def new_canary(token_hex: Callable[[int], str] = _secrets.token_hex) -> str:
    """A fresh canary (``swc-`` + 16 hex characters); randomness injectable for tests."""
    return f"{PREFIX}-{token_hex(8)}"


def canary_line(canary: str) -> str:
    """The line to put in a system prompt."""
    return f"<!-- {canary} -->"


_SQUASH = re.compile(r"[\s\-_.:/\\|*`'\"]+")


@lru_cache(maxsize=1024)
def _forms(canary: str) -> tuple[tuple[str, str], ...]:
    """Each searchable form of the canary, with its squashed spelling (computed once)."""
    core = canary.split("-", 1)[-1]
    raw = canary.encode()
    forms = [canary.lower(), core.lower(), base64.b64encode(raw).decode().rstrip("=").lower(),
             raw.hex()]
    return tuple((f, _SQUASH.sub("", f)) for f in forms)


def find(text: str, canary: str) -> list[Hit]:
    """Hits where ``canary`` (or an encoding of it) appears in ``text``."""
    if not canary:
        return []
    low = text.lower()
    squashed = _SQUASH.sub("", low)
    for form, squashed_form in _forms(canary):
        i = low.find(form)
        if i >= 0 or squashed_form in squashed:
            span = (i, i + len(form)) if i >= 0 else None
            return [Hit("detect.canary_leak",
                        "the session's canary token appeared: the system prompt is leaking",
                        score=1.0, span=span, evidence="[canary]", severity=Severity.CRITICAL)]
    return []
