"""Canonical JSON: one byte string per value, so every reader recomputes the same hashes.

The form is a subset of RFC 8785 (JSON Canonicalization Scheme) that Python's ``json``
module produces exactly:

- objects with keys sorted by Unicode code point (RFC 8785 sorts by UTF-16 code unit;
  the two orders differ only between astral-plane characters and U+E000..U+FFFF in keys,
  which Shieldwall's keys never contain);
- no whitespace: ``,`` and ``:`` as separators;
- UTF-8, non-ASCII characters written as themselves (no ``\\uXXXX``), except the control
  characters JSON requires to be escaped; lone surrogates are replaced by ``?``;
- integers in decimal of any size; floats in the shortest form that reads back exactly
  (Python ``repr``); NaN and infinities are refused;
- only JSON types: tuples become arrays, enums their value, bytes ``"b64:..."``,
  datetimes ISO 8601, anything else is refused.

A leaf of the audit tree is the canonical form of ``{"entry": ENTRY, "seq": SEQ}``; since
``"entry" < "seq"`` the bytes are ``{"entry":...,"seq":N}``, which lets a verifier check
an entry's position without parsing it. Hashes are taken over the stored bytes, so a
reader needs only SHA-256; re-encoding is needed only to check canonicality.
"""

from __future__ import annotations

import base64
import datetime as _dt
import enum
import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

_encoder = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=True,
)


def _default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "b64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"audit entries hold JSON values only, not {type(value).__name__}")


_encoder_with_default = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_default,
)


# The C encoder, built once (JSONEncoder.encode builds it again on every call). No
# circular-reference bookkeeping: a cycle ends in RecursionError, which is refused below.
_fast: Any = None
if c_make_encoder is not None:
    _fast = c_make_encoder(None, _default, encode_basestring, None, ":", ",", True, False, False)


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (see the module docstring for the rules)."""
    if _fast is not None and type(value) is dict:
        try:
            text = "".join(_fast(value, 0))
        except RecursionError as exc:
            raise ValueError("audit entry is nested too deeply or refers to itself") from exc
        return text.encode("utf-8", "replace")
    try:
        text = _encoder.encode(value)
    except TypeError:
        text = _encoder_with_default.encode(value)
    return text.encode("utf-8", "replace")


def leaf_bytes(entry_json: bytes, seq: int) -> bytes:
    """The leaf data for an entry whose canonical bytes are ``entry_json`` at ``seq``.

    Equal to ``canonical_json({"entry": entry, "seq": seq})``, built by concatenation so
    the entry is encoded once, outside any lock.
    """
    return b'{"entry":' + entry_json + b',"seq":' + str(seq).encode("ascii") + b"}"


def leaf_suffix(seq: int) -> bytes:
    """The bytes every leaf at ``seq`` ends with."""
    return b',"seq":' + str(seq).encode("ascii") + b"}"


def parse_leaf(data: bytes) -> tuple[dict[str, Any], int]:
    """Split leaf bytes into (entry, seq); raises ``ValueError`` if malformed."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or set(obj) != {"entry", "seq"}:
        raise ValueError("leaf is not {entry, seq}")
    entry, seq = obj["entry"], obj["seq"]
    if not isinstance(entry, dict) or not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError("leaf has the wrong types")
    return entry, seq


def is_canonical(data: bytes) -> bool:
    """True if ``data`` is exactly the canonical form of the JSON value it encodes."""
    try:
        return canonical_json(json.loads(data)) == data
    except (ValueError, TypeError):
        return False
