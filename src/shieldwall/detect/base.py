"""The value every detector returns."""

from __future__ import annotations

from dataclasses import dataclass

from ..actions import Severity


@dataclass(frozen=True, slots=True)
class Hit:
    """One detection. ``rule`` is a stable id (``detect.injection.heuristic``); ``span`` is
    a character range in the text the detector was given (after normalisation where the
    detector normalises); ``evidence`` is a short excerpt, never a secret value."""

    rule: str
    message: str
    score: float = 1.0
    span: tuple[int, int] | None = None
    evidence: str = ""
    severity: Severity = Severity.MEDIUM


def excerpt(text: str, span: tuple[int, int] | None, width: int = 80) -> str:
    """A one-line excerpt around ``span``, at most ``width`` characters."""
    if span is None:
        return text[:width].replace("\n", " ")
    s, e = span
    s = max(0, min(s, len(text)))
    e = max(s, min(e, len(text), s + width))
    return text[s:e].replace("\n", " ")
