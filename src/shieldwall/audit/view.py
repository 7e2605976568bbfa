"""Reading the log for people: filtered queries and JSON-lines export.

Query columns are only an index: every hit is re-checked against its leaf, so a row
whose columns were edited is never reported as something it is not.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from typing import Any, TextIO

from .canonical import parse_leaf
from .store import Query, Store


def query_entries(store: Store, q: Query) -> Iterator[tuple[int, dict[str, Any]]]:
    n = 0
    for row in store.query(q):
        if q.limit is not None and n >= q.limit:
            return
        try:
            entry, _ = parse_leaf(bytes(row.leaf))
        except ValueError:
            continue
        if q.matches(entry):
            n += 1
            yield row.seq, entry


def row_cells(seq: int, entry: dict[str, Any]) -> list[str]:
    t = entry.get("time")
    if isinstance(t, (int, float)):
        t = _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    rules = ", ".join(str(f.get("rule")) for f in entry.get("findings") or [] if isinstance(f, dict))
    return [str(seq), str(t or ""), str(entry.get("session") or ""), str(entry.get("agent") or ""),
            str(entry.get("event") or ""), str(entry.get("kind") or ""), str(entry.get("tool") or ""),
            str(entry.get("verdict") or ""), rules]


def export_jsonl(store: Store, fh: TextIO, start: int = 0, end: int | None = None) -> int:
    """One line per entry: ``{"seq", "leaf_hash", "entry"}``. ``verify.verify_entries``
    checks such an export against a signed head with only the public key."""
    n = 0
    for seq, leaf, lh in store.iter_leaves(start, end):
        entry, _ = parse_leaf(bytes(leaf))
        fh.write(json.dumps({"seq": seq, "leaf_hash": bytes(lh).hex(), "entry": entry},
                            sort_keys=True, ensure_ascii=False) + "\n")
        n += 1
    return n
