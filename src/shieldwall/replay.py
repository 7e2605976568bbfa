"""Replay a recorded audit log against a candidate policy before it goes live.

Each recorded decision on a call (tool call, egress, code run) is decided again under
the candidate policy, in sessions rebuilt from the log (same ids, agents, roles, tasks),
and every verdict that would change is reported. Limits, stated plainly: arguments were
redacted before they were written, so a redacted value is replayed as the redaction
marker; tool results are not in the log, so result-side layers (flow labels, injection
scans) cannot be replayed and flow rules see less than they would live.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actions import Action, CodeRun, Egress, ToolCall
from .errors import ShieldwallError
from .policy.model import Policy
from .session import Session
from .wall import Shieldwall

_REPLAYED = {"tool_call", "egress", "code_run"}


@dataclass
class Change:
    seq: int
    session: str
    agent: str
    role: str
    target: str
    before: str
    after: str
    rules: list[str]


@dataclass
class ReplayReport:
    replayed: int = 0
    skipped: int = 0
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def newly_denied(self) -> list[Change]:
        return [c for c in self.changes if c.after in ("deny", "ask") and c.before not in ("deny", "ask")]

    def newly_allowed(self) -> list[Change]:
        return [c for c in self.changes if c.before in ("deny", "ask") and c.after not in ("deny", "ask")]


def _action(entry: dict[str, Any]) -> Action | None:
    kind = entry.get("kind")
    if kind == "tool_call":
        return ToolCall(str(entry.get("tool", "")), dict(entry.get("args") or {}))
    if kind == "egress":
        return Egress(str(entry.get("method", "GET")), str(entry.get("url", "")))
    if kind == "code_run":
        return CodeRun(tool=str(entry.get("tool", "run_code")))
    return None


def replay_entries(candidate: Policy, entries: Iterable[tuple[int, dict[str, Any]]], *,
                   base_dir: Path) -> ReplayReport:
    wall = Shieldwall(candidate, base_dir=base_dir, audit=False)
    sessions: dict[str, Session | None] = {}
    report = ReplayReport()
    for seq, e in entries:
        if e.get("event") != "decision" or e.get("kind") not in _REPLAYED:
            continue
        sid = str(e.get("session", ""))
        if sid not in sessions:
            try:
                sessions[sid] = wall.session(agent=str(e.get("agent", "")), role=str(e.get("role", "")),
                                             task=e.get("task"), session_id=sid)
            except ShieldwallError as err:
                sessions[sid] = None
                report.errors.append(f"session {sid}: {err}")
        s = sessions[sid]
        action = _action(e)
        before = str(e.get("verdict", ""))
        if action is None:
            report.skipped += 1
            continue
        if s is None:
            after, rules = "deny", ["identity.session_refused"]
        else:
            d = s.decide(action)
            after, rules = d.verdict.label, d.rules()
        report.replayed += 1
        if after != before:
            report.changes.append(Change(seq, sid, str(e.get("agent", "")), str(e.get("role", "")),
                                         action.target(), before, after, rules))
    return report


def audit_entries(policy: Policy, base_dir: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """The entries of the audit log that ``policy``'s ``audit:`` section points at."""
    from .audit import open_store

    store = open_store(policy.audit, base_dir)
    try:
        for row in store.iter_rows():
            yield row.seq, json.loads(row.leaf)
    finally:
        store.close()
