"""A session: one agent, in one role, on one task — and the face agents call through."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .actions import (
    Action,
    Decision,
    Finding,
    ModelInput,
    ModelOutput,
    Severity,
    ToolCall,
    ToolResult,
    Verdict,
)
from .approvals import canonical_json
from .errors import Denied, ShieldwallError

if TYPE_CHECKING:
    from .policy.compile import Effective
    from .policy.model import Policy
    from .wall import Shieldwall


class ToolError(ShieldwallError):
    """The tool itself failed. The message has live secrets redacted."""


@dataclass(slots=True)
class SessionState:
    """What layers may know about the session. ``extras`` holds per-layer state, each
    layer under its own key (``extras["flow"]`` ...)."""

    id: str
    agent: str
    role: str
    task: str | None
    started: float
    policy: Policy
    effective: Effective
    wall: Shieldwall
    clock: Callable[[], float] = time.time
    extras: dict[str, Any] = field(default_factory=dict)

    def now(self) -> float:
        return self.clock()


def result_digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


class Session:
    """``with wall.session(agent=..., role=..., task=...) as s: s.call(tool, args)``."""

    def __init__(self, wall: Shieldwall, state: SessionState) -> None:
        self.wall = wall
        self.state = state
        self.last: Decision | None = None  # the decision of the latest call()

    @property
    def id(self) -> str:
        return self.state.id

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.wall._session_closed(self)

    # ----------------------------------------------------------------- deciding

    def decide(self, action: Action, *, approval_id: str | None = None) -> Decision:
        """Decide an action without performing it (for frameworks that run tools)."""
        return self.wall.gate.decide(action, self.state, approval_id=approval_id)

    def check_input(self, text: str, *, source: str = "user", trusted: bool = True) -> Decision:
        return self.decide(ModelInput(text, source=source, trusted=trusted))

    def check_output(self, text: str) -> Decision:
        return self.decide(ModelOutput(text))

    def system_prompt(self, text: str) -> str:
        """The system prompt to send: the session's canary token and the spotlighting
        convention are added, and the prompt is registered for leak detection."""
        from .detect.layer import prepare_system_prompt

        return prepare_system_prompt(self.state, text)

    def untrusted(self, text: str, *, source: str = "tool") -> str:
        """Wrap third-party text in this session's random delimiters (spotlighting)."""
        return self.wall.spotlight(self.state, text, source)

    # ----------------------------------------------------------------- calling

    def run_code(self, code: str = "", **kwargs: Any) -> Any:
        """Run code in the sandbox the policy grants this role (a ``CodeRun`` action).

        Keyword arguments: ``argv``, ``language``, ``tool``, ``limits``, ``workspace``,
        ``files``, ``stdin``. Returns the sandbox's ``RunResult``; raises ``Denied``.
        """
        from .sandbox.execute import run_code

        return run_code(self, code, **kwargs)

    def call(self, tool: str, args: dict[str, Any] | None = None, *,
             approval: str | None = None) -> Any:
        """Run ``tool`` if the gate allows it and return its (sanitised) result.

        Raises :class:`Denied` when refused (including approvals refused or timed out)
        and :class:`ToolError` when the tool itself fails.
        """
        args = dict(args or {})
        action = ToolCall(tool, args)
        decision = self.decide(action, approval_id=approval)
        if decision.verdict == Verdict.ASK:
            decision = self._ask(action, decision)
        self.last = decision
        if not decision.allowed:
            raise Denied(decision)
        call = decision.action
        assert isinstance(call, ToolCall)
        return self._execute(call)

    def ask(self, decision: Decision) -> Decision:
        """Put an ``ask`` decision (a tool call or a code run) before the approver; return
        the final decision (allowed only if a person approved exactly this action)."""
        if decision.verdict != Verdict.ASK or decision.approval is None:
            return decision
        return self._ask(decision.action, decision)

    def _ask(self, action: Action, decision: Decision) -> Decision:
        req = decision.approval
        subject = action.approval_subject()
        if req is None or subject is None:  # nothing a person can approve: stays refused
            return decision
        tool = subject[0]
        wall = self.wall
        timeout = wall.approval_timeout(tool)
        try:
            answer = wall.approver(req, timeout)
        except Exception:
            answer = False
        if answer is True:
            try:
                wall.approvals.resolve(req.id, True, approver=type(wall.approver).__name__)
            except ValueError:
                pass
            return self.decide(action, approval_id=req.id)
        status = "denied" if answer is False else "timeout"
        try:
            wall.approvals.resolve(req.id, False, approver=type(wall.approver).__name__,
                                   note=status)
        except ValueError:
            pass
        f = Finding("approval", f"approval.{status}",
                    f"{tool}: approval request {req.id} was "
                    + ("refused by the approver" if answer is False
                       else "not answered in time (no answer = deny)"),
                    Verdict.DENY, severity=Severity.MEDIUM)
        final = Decision(Verdict.DENY, decision.action, (*decision.findings, f), req)
        wall.gate.record(final, self.state, event="approval")
        return final

    def _execute(self, call: ToolCall) -> Any:
        wall = self.wall
        spec = wall.tools.get(call.tool)
        if spec is None or spec.fn is None:
            raise ShieldwallError(
                f"tool {call.tool!r} is allowed but has no executor here; register it with "
                "@wall.tool or run it yourself after session.decide()"
            )
        t0 = time.perf_counter()
        try:
            real_args = wall.resolve_secrets(call.args, call.tool, self.state)
            result = spec.fn(**real_args)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except Denied:
            raise
        except Exception as e:
            msg = wall.redact_text(f"{type(e).__name__}: {e}")
            wall.gate.record_outcome(self.state, call, error=msg,
                                     duration_ms=(time.perf_counter() - t0) * 1000)
            raise ToolError(f"{call.tool} failed: {msg}") from None
        duration = (time.perf_counter() - t0) * 1000
        rdecision = self.decide(ToolResult(call.tool, call.args, result))
        out = rdecision.action.result if isinstance(rdecision.action, ToolResult) else None
        wall.gate.record_outcome(self.state, call, result=out, duration_ms=duration,
                                 verdict=rdecision.verdict)
        if rdecision.verdict >= Verdict.ASK:
            raise Denied(rdecision)
        return out


async def _await(x: Any) -> Any:
    return await x
