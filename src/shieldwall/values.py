"""Walking the values that cross the gate: every string inside a tool's arguments or
result, whatever shape it comes in (JSON-like data, pydantic models, dataclasses).

Shared by the layers that read content (flow fingerprints, detect scans), so they see the
same text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


def plain(value: Any) -> Any:
    """A pydantic model or dataclass instance as JSON-like data (``str()`` of a model
    escapes newlines and glues words to field names); anything else unchanged."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        try:
            return dump(mode="json")
        except Exception:  # an odd model: fall back to its fields
            return dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string (and number) inside a JSON-like value, dict keys included (an address
    can be a key: a file's ``shared_with``). Pydantic models and dataclasses are walked
    as their JSON-like data."""
    if depth > 32:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("utf-8", "replace")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k, depth + 1)
            yield from strings(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from strings(v, depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif value is not None and not isinstance(value, bool):
        flat = plain(value)
        if flat is value:
            yield str(value)
        else:
            yield from strings(flat, depth + 1)
