"""Placeholders: ``{{secret:name/key}}`` and ``{{token}}`` / ``{{token:scope scope}}``.

A placeholder is what the model and the audit log see; the value replaces it only inside
the executor, after the gate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SECRET = re.compile(r"\{\{\s*secret:([^{}\s]*)\s*\}\}")
TOKEN = re.compile(r"\{\{\s*token(?::([^{}]*))?\s*\}\}")
_REF = re.compile(r"^[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*/[A-Za-z0-9_.\-]+$")
ANY = re.compile(r"\{\{\s*(?:secret|token)\b")


@dataclass(frozen=True, slots=True)
class Ref:
    """``name/key``: ``name`` may itself hold slashes (a Vault path); ``key`` is the last part."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


def parse_ref(text: str) -> Ref:
    if not _REF.match(text):
        raise ValueError(f"invalid secret reference {text!r}: use {{{{secret:name/key}}}}")
    name, key = text.rsplit("/", 1)
    return Ref(name, key)


def refs_in(value: Any, depth: int = 0) -> tuple[list[str], list[str | None]]:
    """(secret reference texts, token scope texts) in a JSON-like value."""
    secrets: list[str] = []
    tokens: list[str | None] = []
    for s in _strings(value, depth):
        secrets.extend(m.group(1) for m in SECRET.finditer(s))
        tokens.extend(m.group(1) for m in TOKEN.finditer(s))
    return secrets, tokens


def _strings(value: Any, depth: int) -> list[str]:
    if depth > 32:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(k, str):
                out.append(k)
            out.extend(_strings(v, depth + 1))
        return out
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


def substitute(value: Any, secret: Callable[[str], str],
               token: Callable[[str | None], str], depth: int = 0) -> Any:
    """A copy of ``value`` with every placeholder replaced (strings anywhere inside)."""
    if depth > 32:
        raise ValueError("arguments nest too deeply")
    if isinstance(value, str):
        if "{{" not in value:
            return value
        out = SECRET.sub(lambda m: secret(m.group(1)), value)
        return TOKEN.sub(lambda m: token(m.group(1)), out)
    if isinstance(value, dict):
        return {k: substitute(v, secret, token, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, secret, token, depth + 1) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, secret, token, depth + 1) for v in value)
    return value
