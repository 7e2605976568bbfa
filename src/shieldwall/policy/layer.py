"""The identity, policy and budget layers: who is asking, may they, and is there budget."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..actions import (
    Action,
    CodeRun,
    Egress,
    Finding,
    Severity,
    ToolCall,
    Verdict,
)
from ..layers import ORDER_BUDGET, ORDER_IDENTITY, ORDER_POLICY, Outcome
from ..stores import CounterStore

if TYPE_CHECKING:
    from ..session import SessionState
    from ..tools import ToolSpec
    from .compile import CompiledPolicy

_CALL_KINDS = frozenset({ToolCall.kind, Egress.kind, CodeRun.kind})


def _deny(layer: str, rule: str, message: str, evidence: str = "") -> Finding:
    return Finding(layer, rule, message, Verdict.DENY, evidence=evidence, severity=Severity.HIGH)


class IdentityLayer:
    """Refuses revoked sessions/agents (the kill switch) and agents outside the roster."""

    name = "identity"
    order = ORDER_IDENTITY
    kinds = frozenset({ToolCall.kind, Egress.kind, CodeRun.kind, "tool_result",
                       "model_input", "model_output"})

    def __init__(self, compiled: CompiledPolicy, store: CounterStore) -> None:
        self.agents = compiled.policy.agents
        self.store = store

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if self.store.any_revoked("session:" + session.id, "agent:" + session.agent):
            return Outcome((_deny(self.name, "identity.revoked",
                                  f"session {session.id} / agent {session.agent!r} was revoked "
                                  "(kill switch); start a new session after review"),))
        if self.agents is not None:
            a = self.agents.get(session.agent)
            if a is None:
                return Outcome((_deny(self.name, "identity.unknown_agent",
                                      f"agent {session.agent!r} is not in the policy's agents list"),))
            if session.role not in a.roles:
                return Outcome((_deny(self.name, "identity.role_not_assigned",
                                      f"agent {session.agent!r} may not take role {session.role!r} "
                                      f"(its roles: {', '.join(a.roles)})"),))
        return None


class PolicyLayer:
    """Role ∩ task grants, argument schema and constraints, approval marking."""

    name = "policy"
    order = ORDER_POLICY
    kinds = _CALL_KINDS

    def __init__(self, compiled: CompiledPolicy, registry: dict[str, ToolSpec]) -> None:
        self.compiled = compiled
        self.registry = registry
        self.policy = compiled.policy

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        eff = session.effective
        if eff.lifetime is not None and session.now() - session.started > eff.lifetime:
            return Outcome((_deny(self.name, "policy.task_expired",
                                  f"task {eff.task!r} lifetime of {eff.lifetime:.0f}s is over; "
                                  "open a new session for a new task"),))
        if isinstance(action, ToolCall):
            return self._tool_call(action, session)
        if isinstance(action, Egress):
            method = action.method.upper()
            # CONNECT opens a tunnel, not a request: the egress layer decides it by host/port.
            if method != "CONNECT" and method not in eff.http_methods:
                allowed = ", ".join(sorted(eff.http_methods)) or "none"
                return Outcome((_deny(self.name, "policy.method_not_allowed",
                                      f"role {eff.role!r} may not send HTTP {method} (allowed: {allowed}); "
                                      f"add it to roles.{eff.role}.http_methods to allow",
                                      evidence=method),))
            return None
        if isinstance(action, CodeRun):
            if not eff.code:
                return Outcome((_deny(self.name, "policy.code_not_allowed",
                                      f"role {eff.role!r} may not run code; set roles.{eff.role}.code: true"),))
            refused = self._grant(action.tool, session)
            if refused is not None:
                return refused
            ask = self._approval(action.tool)
            return Outcome((ask,)) if ask is not None else None
        return None

    def _approval(self, tool: str) -> Finding | None:
        tool_policy = self.policy.tools.get(tool)
        if tool_policy is None or not tool_policy.approval_required:
            return None
        reason = (tool_policy.approval.reason if not isinstance(tool_policy.approval, bool)
                  else "") or f"{tool} is marked as needing human approval"
        return Finding(self.name, "approval.required", reason, Verdict.ASK, severity=Severity.MEDIUM)

    def _grant(self, tool: str, session: SessionState) -> Outcome | None:
        eff = session.effective
        if tool in eff.tools:
            return None
        if tool not in eff.role_tools:
            grants = ", ".join(sorted(eff.role_tools)) or "nothing"
            return Outcome((_deny(self.name, "policy.tool_not_in_role",
                                  f"role {eff.role!r} does not grant tool {tool!r} (grants: {grants}); "
                                  f"add it to roles.{eff.role}.tools to allow", evidence=tool),))
        if tool in eff.task_deny:
            return Outcome((_deny(self.name, "policy.tool_denied_by_task",
                                  f"task {eff.task!r} denies tool {tool!r}", evidence=tool),))
        allowed = ", ".join(sorted(eff.tools)) or "nothing"
        return Outcome((_deny(self.name, "policy.tool_not_in_task",
                              f"task {eff.task!r} does not include tool {tool!r} (task allows: "
                              f"{allowed}); add it to tasks.{eff.task}.allow to allow", evidence=tool),))

    def _tool_call(self, action: ToolCall, session: SessionState) -> Outcome | None:
        refused = self._grant(action.tool, session)
        if refused is not None:
            return refused
        findings: list[Finding] = []
        args = action.args
        changed = False
        tool_policy = self.policy.tools.get(action.tool)
        spec = self.registry.get(action.tool)
        if spec is not None:
            clean, stripped, error = spec.validator.validate(args)
            if error is not None:
                return Outcome((_deny(self.name, "args.invalid",
                                      f"{action.tool}: invalid arguments: {error}"),))
            if stripped and (tool_policy is None or tool_policy.strict_args):
                findings.append(Finding(
                    self.name, "args.undeclared_stripped",
                    f"{action.tool}: undeclared arguments removed: {', '.join(sorted(stripped))}",
                    Verdict.CHANGES, evidence=", ".join(sorted(stripped)), severity=Severity.LOW))
                changed = True
            args = clean if (changed or clean.keys() != args.keys()) else args
            changed = changed or args is not action.args
        for rule in self.compiled.arg_rules(action.tool, session.effective.db_scope):
            if rule.arg not in args:
                continue
            value = args[rule.arg]
            for chk in rule.checks:
                f = chk(value)
                if f is not None:
                    return Outcome((f,))
        ask = self._approval(action.tool)
        if ask is not None:
            findings.append(ask)
        if not findings and not changed:
            return None
        return Outcome(tuple(findings), ToolCall(action.tool, args) if changed else None)


class BudgetLayer:
    """Per-session and per-tool call caps and rates (token bucket). Spends on check, as
    the last layer before execution, so refused calls cost nothing."""

    name = "budget"
    order = ORDER_BUDGET
    kinds = _CALL_KINDS
    defer_on_ask = True  # a call waiting for a person spends nothing until approved

    def __init__(self, compiled: CompiledPolicy, store: CounterStore) -> None:
        self.compiled = compiled
        self.store = store

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        # Rates before caps, and the session cap last: a call refused by one limit
        # spends as little as possible of the others.
        eff = session.effective
        tool = action.target() if not isinstance(action, Egress) else "egress"
        now = session.now()
        if eff.per_minute is not None:
            burst = eff.burst or max(1, int(eff.per_minute))
            ok, tokens = self.store.bucket(f"r:{session.id}", eff.per_minute / 60.0, burst, now)
            if not ok:
                return Outcome((_deny(self.name, "budget.rate_limited",
                                      f"rate limit of {eff.per_minute:g}/min reached "
                                      f"({tokens:.2f} tokens left); retry later"),))
        tp = self.compiled.policy.tools.get(tool)
        if tp is not None and tp.budget is not None:
            if tp.budget.per_minute is not None:
                burst = tp.budget.burst or max(1, int(tp.budget.per_minute))
                ok, tokens = self.store.bucket(f"tr:{session.id}:{tool}",
                                               tp.budget.per_minute / 60.0, burst, now)
                if not ok:
                    return Outcome((_deny(self.name, "budget.rate_limited",
                                          f"{tool}: rate limit of {tp.budget.per_minute:g}/min "
                                          f"reached ({tokens:.2f} tokens left); retry later"),))
            if tp.budget.calls is not None:
                ok, _ = self.store.take(f"t:{session.id}:{tool}", tp.budget.calls)
                if not ok:
                    return Outcome((_deny(self.name, "budget.tool_exhausted",
                                          f"{tool}: budget of {tp.budget.calls} calls per session "
                                          "is used up (0 left)"),))
        if eff.session_calls is not None:
            ok, _ = self.store.take(f"s:{session.id}", eff.session_calls)
            if not ok:
                return Outcome((_deny(self.name, "budget.session_exhausted",
                                      f"session call budget of {eff.session_calls} is used up "
                                      f"(0 left); raise the role or task budget.calls"),))
        return None
