"""The gate: runs the layers in order, merges verdicts, fails closed, and audits.

Hot path: layers are pre-sorted per action kind; a layer with nothing to say returns
``None``; a deny stops the run (deny wins, nothing after it can change that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .actions import ACTION_KINDS, Action, Decision, Finding, Severity, ToolCall, Verdict
from .approvals import ApprovalQueue
from .layers import Layer, Outcome

if TYPE_CHECKING:
    from .audit import AuditLog
    from .session import SessionState

_perf = time.perf_counter


def _layer_error(layer: str, message: str) -> Finding:
    return Finding("gate", "gate.layer_error", f"layer {layer!r} {message}; denied (fail closed)",
                   Verdict.DENY, evidence=layer, severity=Severity.HIGH)


class Gate:
    def __init__(
        self,
        layers: Sequence[Layer],
        *,
        audit: AuditLog | None,
        approvals: ApprovalQueue,
        budgets_ms: Callable[[str], float],
        entry_redactor: Callable[[dict[str, Any], SessionState], dict[str, Any]],
        approval_timeout: Callable[[str], float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.audit = audit
        self.approvals = approvals
        self._redact_entry = entry_redactor
        self._approval_timeout = approval_timeout
        self._clock = clock
        self.layers: list[Layer] = []
        self._by_kind: dict[str, list[tuple[Layer, float, Any]]] = {}
        self._budgets_ms = budgets_ms
        # called with every final decision (the monitor); an observer that raises is
        # ignored: it cannot change a decision already made, only fail to watch it
        self.observers: list[Callable[[Decision, SessionState], None]] = []
        for layer in layers:
            self.add(layer)

    def add(self, layer: Layer) -> None:
        if not isinstance(layer, Layer):
            raise TypeError(f"{layer!r} does not implement the Layer protocol")
        self.layers.append(layer)
        self.layers.sort(key=lambda la: la.order)
        self._by_kind = {
            kind: [
                (la, self._budgets_ms(la.name) / 1000.0, getattr(la, "commit", None))
                for la in self.layers if kind in la.kinds
            ]
            for kind in ACTION_KINDS
        }
        # layers told of refused actions (see layers.Remembering), per kind, found once here
        self._refused_hooks = {
            kind: [(la.name, hook) for la in self.layers if kind in la.kinds
                   if (hook := getattr(la, "refused", None)) is not None]
            for kind in ACTION_KINDS
        }

    # ----------------------------------------------------------------- decide

    def decide(self, action: Action, session: SessionState, *,
               approval_id: str | None = None) -> Decision:
        t0 = _perf()
        findings: list[Finding] = []
        verdict = Verdict.ALLOW
        current = action
        chain = self._by_kind.get(action.kind)
        if chain is None:
            findings.append(Finding("gate", "gate.unknown_action",
                                    f"unknown action kind {action.kind!r}", Verdict.DENY))
            verdict = Verdict.DENY
            chain = []
        deferred: list[tuple[Layer, float, Any]] = []
        for link in chain:
            if verdict == Verdict.ASK and getattr(link[0], "defer_on_ask", False):
                deferred.append(link)  # e.g. budgets: spend only once a person said yes
                continue
            verdict, current = self._run(link, current, session, verdict, findings)
            if verdict == Verdict.DENY:
                break
        decision = Decision(verdict, current, tuple(findings))
        subject = current.approval_subject() if verdict == Verdict.ASK else None
        if subject is not None:
            self._approval(decision, subject, session, approval_id)
            if decision.verdict <= Verdict.CHANGES and deferred:
                more: list[Finding] = []
                v = decision.verdict
                cur: Action = current
                for link in deferred:
                    v, cur = self._run(link, cur, session, v, more)
                    if v == Verdict.DENY:
                        break
                decision = Decision(v, cur, (*decision.findings, *more), decision.approval)
        if decision.verdict <= Verdict.CHANGES:
            for layer, _, commit in chain:
                if commit is not None:
                    try:
                        commit(decision.action, session)
                    except Exception as e:
                        decision = Decision(Verdict.DENY, current, (
                            *decision.findings, _layer_error(layer.name, f"commit raised {type(e).__name__}: {e}")))
                        break
        else:
            # Layers that remember what the session was exposed to also hear of refused
            # actions (flow: untrusted text refused by the detect room is still taint).
            # One that fails to remember makes the refusal final (an ask becomes a deny).
            for name, refused in self._refused_hooks.get(action.kind, ()):
                try:
                    refused(decision.action, session)
                except Exception as e:
                    decision = Decision(Verdict.DENY, decision.action, (
                        *decision.findings,
                        _layer_error(name, f"refused() raised {type(e).__name__}: {e}")))
        for observe in self.observers:
            try:
                observe(decision, session)
            except Exception:  # noqa: S110 - see __init__
                pass
        if self.audit is not None:
            try:
                self.record(decision, session, duration_ms=(_perf() - t0) * 1000)
            except Exception as e:
                # An action that cannot be recorded does not happen.
                return Decision(Verdict.DENY, current, (*decision.findings, Finding(
                    "gate", "gate.audit_error",
                    f"the audit log could not record this decision ({type(e).__name__}); "
                    "denied (fail closed) — check the audit store", Verdict.DENY,
                    severity=Severity.CRITICAL)))
        return decision

    @staticmethod
    def _run(link: tuple[Layer, float, Any], current: Action, session: SessionState,
             verdict: Verdict, findings: list[Finding]) -> tuple[Verdict, Action]:
        """Run one layer; append its findings; return the merged verdict and action."""
        layer, budget, _ = link
        s = _perf()
        try:
            out: Outcome | None = layer.check(current, session)
        except Exception as e:
            findings.append(_layer_error(layer.name, f"raised {type(e).__name__}: {e}"))
            return Verdict.DENY, current
        elapsed = _perf() - s
        if elapsed > budget:
            findings.append(_layer_error(
                layer.name, f"exceeded its time budget ({elapsed * 1000:.1f} ms > "
                f"{budget * 1000:.1f} ms)"))
            return Verdict.DENY, current
        if out is None:
            return verdict, current
        for f in out.findings:
            if f.verdict > verdict:
                verdict = f.verdict
        findings.extend(out.findings)
        if out.action is not None:
            current = out.action
            if verdict < Verdict.CHANGES:
                verdict = Verdict.CHANGES
        return verdict, current

    def _approval(self, decision: Decision, subject: tuple[str, dict[str, Any]],
                  session: SessionState, approval_id: str | None) -> None:
        tool, args = subject
        if approval_id is not None and self.approvals.consume(approval_id, tool, args):
            decision.verdict = max(
                (f.verdict for f in decision.findings if f.verdict != Verdict.ASK),
                default=Verdict.ALLOW)
            decision.findings = (*decision.findings, Finding(
                "approval", "approval.granted", f"approved by request {approval_id}",
                Verdict.ALLOW, severity=Severity.INFO))
            return
        preview = self._redact_entry({"args": args}, session).get("args", {})
        reasons = "; ".join(f.message for f in decision.findings if f.verdict == Verdict.ASK)
        decision.approval = self.approvals.submit(
            session=session.id, agent=session.agent, role=session.role, tool=tool,
            args=args, preview=preview, reason=reasons,
            timeout=self._approval_timeout(tool),
        )
        if approval_id is not None:
            decision.findings = (*decision.findings, Finding(
                "approval", "approval.args_mismatch",
                f"approval {approval_id} does not cover these exact arguments (or was not "
                "granted); a new request was created", Verdict.ASK, severity=Severity.HIGH))

    # ----------------------------------------------------------------- audit

    def _base(self, session: SessionState, event: str) -> dict[str, Any]:
        return {
            "time": self._clock(), "event": event, "session": session.id,
            "agent": session.agent, "role": session.role, "task": session.task,
        }

    def record(self, decision: Decision, session: SessionState, *, event: str = "decision",
               duration_ms: float = 0.0) -> int | None:
        """Write one audit entry for a decision. A failed write is a gate failure."""
        if self.audit is None:
            return None
        a = decision.action
        entry = self._base(session, event)
        entry.update({
            "kind": a.kind, "tool": a.target(), "verdict": decision.verdict.label,
            "findings": [f.to_dict() for f in decision.findings],
            "duration_ms": round(duration_ms, 4),
        })
        entry.update(a.payload())
        if decision.approval is not None:
            entry["approval"] = decision.approval.id
        entry = self._redact_entry(entry, session)
        seq = self.audit.append(entry)
        decision.audit_seq = seq
        return seq

    def record_event(self, session: SessionState, rule: str, message: str,
                     layer: str = "monitor") -> int | None:
        """An audit entry for something done outside a decision (the monitor's kill, an
        operator's ``shieldwall kill``)."""
        if self.audit is None:
            return None
        entry = self._base(session, "event")
        entry.update({"kind": "event", "tool": "", "verdict": "deny",
                      "findings": [{"layer": layer, "rule": rule, "message": message,
                                    "verdict": "deny", "severity": "critical"}]})
        return self.audit.append(self._redact_entry(entry, session))

    def record_outcome(self, session: SessionState, call: ToolCall, *, result: Any = None,
                       error: str | None = None, duration_ms: float = 0.0,
                       verdict: Verdict | None = None) -> int | None:
        if self.audit is None:
            return None
        from .session import result_digest

        entry = self._base(session, "outcome")
        entry.update({
            "kind": "tool_result", "tool": call.tool, "args": call.args,
            "result_digest": None if error else result_digest(result),
            "error": error, "duration_ms": round(duration_ms, 4),
            "verdict": (verdict or Verdict.ALLOW).label if error is None else "error",
            "findings": [],
        })
        return self.audit.append(self._redact_entry(entry, session))
