"""System-prompt leakage: how much of the session's system prompt a text reproduces.

Word 6-gram shingles of the system prompt are hashed once; a reply is scored by the
share of those shingles it contains. Quoting one sentence is noise; reproducing a large
part of the prompt, even reflowed or re-cased, is a leak.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..actions import Severity
from .base import Hit

_WORD = re.compile(r"\w+")
N = 6


def _shingles(text: str, n: int = N) -> set[int]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {hash(" ".join(words))} if words else set()
    return {hash(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)}


@dataclass(slots=True)
class PromptLeakGuard:
    """Built once per session from its system prompt."""

    shingles: set[int]
    threshold: float = 0.25  # share of the prompt's shingles reproduced

    @classmethod
    def for_prompt(cls, system_prompt: str, threshold: float = 0.25) -> PromptLeakGuard:
        return cls(_shingles(system_prompt), threshold)

    def overlap(self, text: str) -> float:
        if not self.shingles:
            return 0.0
        return len(self.shingles & _shingles(text)) / len(self.shingles)

    def check(self, text: str) -> list[Hit]:
        o = self.overlap(text)
        if o < self.threshold or len(self.shingles) < 2:
            return []
        return [Hit("detect.system_prompt_leak",
                    f"the text reproduces {o:.0%} of the system prompt",
                    score=o, severity=Severity.HIGH)]
