"""Actions an agent can take, and the Decision the gate returns for each.

Plain dataclasses: they are values that cross every layer, so they stay cheap to build
and free of I/O. Pydantic lives only at the edges (the policy file, HTTP bodies).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar


class Verdict(enum.IntEnum):
    """Ordered so that ``max()`` merges verdicts: deny > ask > changes > allow."""

    ALLOW = 0
    CHANGES = 1  # allow, but with the action modified (args stripped, text redacted)
    ASK = 2  # a human must approve
    DENY = 3

    @property
    def label(self) -> str:
        return {0: "allow", 1: "allow-with-changes", 2: "ask", 3: "deny"}[int(self)]


class Severity(enum.IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason behind a verdict.

    ``rule`` is a stable id users grep for in the audit log (``policy.tool_not_in_role``).
    ``message`` is for the operator: what was refused and how to allow it. ``evidence`` is
    the offending span or value *after* redaction; it never carries a secret.
    """

    layer: str
    rule: str
    message: str
    verdict: Verdict = Verdict.DENY
    evidence: str = ""
    severity: Severity = Severity.MEDIUM
    score: float = 1.0
    span: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "layer": self.layer,
            "rule": self.rule,
            "message": self.message,
            "verdict": self.verdict.label,
            "severity": self.severity.name.lower(),
        }
        if self.evidence:
            d["evidence"] = self.evidence
        if self.score != 1.0:
            d["score"] = round(self.score, 4)
        if self.span is not None:
            d["span"] = list(self.span)
        return d


# --------------------------------------------------------------------------- actions


@dataclass(slots=True)
class Action:
    """Base of every action kind. ``kind`` is the stable name used in policy and audit."""

    kind: ClassVar[str] = "action"

    def target(self) -> str:
        """What the action is aimed at (tool name, URL, ...), for audit and messages."""
        return ""

    def payload(self) -> dict[str, Any]:
        """The action's content as JSON-able data, for audit (redacted before writing)."""
        return {}

    def approval_subject(self) -> tuple[str, dict[str, Any]] | None:
        """What a person approves, as (tool, arguments): the approval is bound to a hash of
        exactly these. ``None`` for kinds that cannot be put before a person."""
        return None


@dataclass(slots=True)
class ToolCall(Action):
    kind: ClassVar[str] = "tool_call"
    tool: str
    args: dict[str, Any] = field(default_factory=dict)

    def target(self) -> str:
        return self.tool

    def payload(self) -> dict[str, Any]:
        return {"args": self.args}

    def approval_subject(self) -> tuple[str, dict[str, Any]] | None:
        return self.tool, self.args


@dataclass(slots=True)
class ToolResult(Action):
    kind: ClassVar[str] = "tool_result"
    tool: str
    args: dict[str, Any]
    result: Any
    error: str | None = None

    def target(self) -> str:
        return self.tool

    def payload(self) -> dict[str, Any]:
        return {"args": self.args}


@dataclass(slots=True)
class ModelInput(Action):
    """Text about to be given to the model (user turn, retrieved document)."""

    kind: ClassVar[str] = "model_input"
    text: str
    source: str = "user"
    trusted: bool = True

    def target(self) -> str:
        return self.source

    def payload(self) -> dict[str, Any]:
        return {"chars": len(self.text)}


@dataclass(slots=True)
class ModelOutput(Action):
    """Text the model produced, before it reaches a user or another system."""

    kind: ClassVar[str] = "model_output"
    text: str

    def payload(self) -> dict[str, Any]:
        return {"chars": len(self.text)}


@dataclass(slots=True)
class Egress(Action):
    """An outbound network request made by a tool, a sandbox or the proxy."""

    kind: ClassVar[str] = "egress"
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def target(self) -> str:
        return self.url

    def payload(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "body_bytes": len(self.body)}


@dataclass(slots=True)
class CodeRun(Action):
    """Code the agent wants to execute in a sandbox."""

    kind: ClassVar[str] = "code_run"
    code: str = ""
    argv: tuple[str, ...] = ()
    language: str = "python"
    limits: dict[str, Any] = field(default_factory=dict)
    tool: str = "run_code"

    def target(self) -> str:
        return self.tool

    def payload(self) -> dict[str, Any]:
        return {"language": self.language, "argv": list(self.argv), "code_chars": len(self.code)}

    def approval_subject(self) -> tuple[str, dict[str, Any]] | None:
        # The person sees (and the approval covers) the exact code, argv and limits.
        return self.tool, {"language": self.language, "code": self.code,
                           "argv": list(self.argv), "limits": dict(self.limits)}


ACTION_KINDS: dict[str, type[Action]] = {
    c.kind: c for c in (ToolCall, ToolResult, ModelInput, ModelOutput, Egress, CodeRun)
}


# --------------------------------------------------------------------------- decisions


@dataclass(slots=True)
class Decision:
    """The gate's answer for one action.

    ``action`` is the action as it may proceed: for allow-with-changes it differs from the
    one submitted (stripped arguments, redacted text). ``approval`` is set for ``ask``.
    """

    verdict: Verdict
    action: Action
    findings: tuple[Finding, ...] = ()
    approval: Any = None  # approvals.ApprovalRequest when verdict is ASK
    audit_seq: int | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict <= Verdict.CHANGES

    def rules(self) -> list[str]:
        return [f.rule for f in self.findings]

    def deciding(self) -> list[Finding]:
        """The findings that carry the final verdict (the ones a person should read)."""
        return [f for f in self.findings if f.verdict == self.verdict] or list(self.findings)

    def reason(self) -> str:
        fs = self.deciding()
        if not fs:
            return self.verdict.label
        return "; ".join(f"[{f.rule}] {f.message}" for f in fs)


def merge(verdicts: list[Verdict]) -> Verdict:
    """Deny wins: deny > ask > allow-with-changes > allow."""
    return max(verdicts, default=Verdict.ALLOW)
