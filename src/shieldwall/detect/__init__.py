"""Content detectors: pure functions from text to :class:`Hit` values.

Injection (normalise -> encodings -> heuristics + classifier), canary and system-prompt
leaks, secrets, PII and exfiltration URLs. The gate composes them in ``layer.py``.
"""

from .base import Hit

__all__ = ["Hit"]
