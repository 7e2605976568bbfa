"""Manifest pinning: the rug-pull defence.

``shieldwall.lock`` records, per MCP server, each tool's name with the SHA-256 of its
input schema and of its description (and the text itself, so drift can be shown as a
diff). A tool whose description or schema differs from the lock, or that the lock does
not know, is blocked until someone looks and re-pins (``shieldwall mcp pin``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..actions import Action, Finding, Severity, ToolCall, Verdict
from ..layers import ORDER_POLICY, Outcome

if TYPE_CHECKING:
    from ..session import SessionState

LOCK_VERSION = 1
RULE_DRIFT = "mcp.manifest_drift"
RULE_NOT_PINNED = "mcp.tool_not_pinned"
ORDER_PIN = ORDER_POLICY + 1  # right after role/task grants, before args reach anything else


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@dataclass(frozen=True, slots=True)
class ToolManifest:
    """What is pinned of one tool."""

    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def schema_sha256(self) -> str:
        return sha256_hex(_canonical(self.input_schema))

    @property
    def description_sha256(self) -> str:
        return sha256_hex(self.description)

    def to_lock(self) -> dict[str, Any]:
        return {
            "schema_sha256": self.schema_sha256,
            "description_sha256": self.description_sha256,
            "description": self.description,
            "input_schema": self.input_schema,
        }

    @classmethod
    def from_mcp(cls, tool: Any) -> ToolManifest:
        """From an ``mcp.types.Tool`` (or anything with name/description/input_schema)."""
        schema = getattr(tool, "input_schema", None) or {}
        return cls(str(tool.name), str(getattr(tool, "description", None) or ""), dict(schema))

    @classmethod
    def from_wire(cls, tool: Mapping[str, Any]) -> ToolManifest:
        """From a tool as it appears in a tools/list result on the wire."""
        return cls(str(tool.get("name", "")), str(tool.get("description") or ""),
                   dict(tool.get("inputSchema") or {}))


@dataclass(slots=True)
class ServerPin:
    name: str
    version: str
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)


class LockFile:
    """``shieldwall.lock``: ``{"version": 1, "servers": {name: {version, tools}}}``."""

    def __init__(self, path: Path, servers: dict[str, ServerPin] | None = None) -> None:
        self.path = path
        self.servers: dict[str, ServerPin] = servers or {}

    @classmethod
    def load(cls, path: str | Path) -> LockFile:
        p = Path(path)
        if not p.exists():
            return cls(p)
        data = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
            raise ValueError(f"{p}: not a shieldwall lock file (version {LOCK_VERSION})")
        servers = {
            name: ServerPin(name, str(s.get("version", "")), dict(s.get("tools", {})))
            for name, s in dict(data.get("servers", {})).items()
        }
        return cls(p, servers)

    def pin(self, server: str, version: str, tools: Iterable[ToolManifest]) -> ServerPin:
        sp = ServerPin(server, version, {t.name: t.to_lock() for t in tools})
        self.servers[server] = sp
        return sp

    def save(self) -> None:
        data = {
            "version": LOCK_VERSION,
            "servers": {
                n: {"version": s.version, "tools": dict(sorted(s.tools.items()))}
                for n, s in sorted(self.servers.items())
            },
        }
        text = json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename so a reader never sees half a lock
        fd, tmp = tempfile.mkstemp(prefix=".shieldwall-lock-", dir=self.path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, self.path)


def _diff(label: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), f"pinned {label}",
                                 f"current {label}", lineterm="", n=1)
    return "\n".join(lines)


def drift_message(server: str, cur: ToolManifest, pinned: Mapping[str, Any]) -> str:
    parts = [f"tool {cur.name!r} of MCP server {server!r} changed since it was pinned; "
             "blocked until re-pinned (`shieldwall mcp pin`)"]
    if pinned.get("description_sha256") != cur.description_sha256:
        parts.append(f"description sha256 {str(pinned.get('description_sha256'))[:12]} -> "
                     f"{cur.description_sha256[:12]}")
        parts.append(_diff("description", str(pinned.get("description", "")), cur.description))
    if pinned.get("schema_sha256") != cur.schema_sha256:
        parts.append(f"input schema sha256 {str(pinned.get('schema_sha256'))[:12]} -> "
                     f"{cur.schema_sha256[:12]}")
        old = json.dumps(pinned.get("input_schema", {}), indent=1, sort_keys=True)
        new = json.dumps(cur.input_schema, indent=1, sort_keys=True)
        parts.append(_diff("inputSchema", old, new))
    return "\n".join(p for p in parts if p)


def compare(server: str, pinned: ServerPin | None,
            current: Iterable[ToolManifest]) -> dict[str, Finding]:
    """Findings for every current tool that does not match the lock (empty = all pinned)."""
    out: dict[str, Finding] = {}
    for cur in current:
        entry = pinned.tools.get(cur.name) if pinned is not None else None
        if entry is None:
            out[cur.name] = Finding(
                "mcp", RULE_NOT_PINNED,
                f"tool {cur.name!r} of MCP server {server!r} is not in the lock file; review "
                "it and run `shieldwall mcp pin` to allow it", Verdict.DENY,
                evidence=cur.name, severity=Severity.HIGH)
            continue
        if (entry.get("description_sha256") != cur.description_sha256
                or entry.get("schema_sha256") != cur.schema_sha256):
            out[cur.name] = Finding("mcp", RULE_DRIFT, drift_message(server, cur, entry),
                                    Verdict.DENY, evidence=cur.name,
                                    severity=Severity.CRITICAL)
    return out


class PinState:
    """The live pin verdicts of one upstream server, updated whenever its tools are listed.

    ``mode``: enforce (block), tofu (pin the first listing, then enforce), warn (report
    only), off. Thread-safe: the gate runs in worker threads, listings on the event loop.
    """

    def __init__(self, lock: LockFile, mode: str = "enforce") -> None:
        self.lock = lock
        self.mode = mode
        self.server = ""
        self.blocked: dict[str, Finding] = {}
        self._mu = threading.Lock()

    def update(self, server: str, version: str, tools: list[ToolManifest]) -> dict[str, Finding]:
        """Compare a fresh listing with the lock; returns the newly blocked tools. Blocked
        tools stay blocked for the life of this state (re-pin, then restart the gateway)."""
        if self.mode == "off":
            return {}
        with self._mu:
            self.server = server
            pinned = self.lock.servers.get(server)
            if pinned is None and self.mode == "tofu":
                pinned = self.lock.pin(server, version, tools)
                self.lock.save()
            found = compare(server, pinned, tools)
            new = {k: v for k, v in found.items() if k not in self.blocked
                   or self.blocked[k].message != v.message}
            # a block holds until the tool is re-pinned: a server that flips back, or
            # another connection's listing (HTTP sessions each have their own), does not
            # lift it
            self.blocked.update(found)
            return new

    def finding(self, tool: str) -> Finding | None:
        if self.mode == "off":
            return None
        f = self.blocked.get(tool)
        if f is None:
            return None
        if self.mode == "warn":
            return Finding(f.layer, f.rule, f.message, Verdict.ALLOW, f.evidence, Severity.MEDIUM)
        return f

    def visible(self, tool: str) -> bool:
        """Whether the client may see this tool in tools/list (drifted text is withheld)."""
        return self.mode in ("off", "warn") or tool not in self.blocked


class PinLayer:
    """Gate layer: a tools/call of a drifted or unpinned MCP tool is denied."""

    name = "mcp_pin"
    order = ORDER_PIN
    kinds = frozenset({ToolCall.kind})

    def __init__(self, state: PinState) -> None:
        self.state = state

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if not isinstance(action, ToolCall):
            return None
        f = self.state.finding(action.tool)
        return None if f is None else Outcome((f,))
