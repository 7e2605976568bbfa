"""The errors Shieldwall raises at its faces."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .actions import Decision, Finding


class ShieldwallError(Exception):
    """Base class of every error Shieldwall raises on purpose."""


class PolicyError(ShieldwallError):
    """The policy file is invalid. The message names the file, line and key."""


class Denied(ShieldwallError):
    """An action was refused. ``findings`` say which rules and why.

    The message is for the operator and the audit log. Frameworks that show errors to the
    model should use :meth:`for_model`, which names the rules but not the evidence.
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.findings: tuple[Finding, ...] = decision.findings
        super().__init__(f"{decision.verdict.label}: {decision.reason()}")

    @property
    def rules(self) -> list[str]:
        return self.decision.rules()

    def for_model(self) -> str:
        rules = ", ".join(sorted({f.rule for f in self.decision.deciding()}))
        return f"Action refused by Shieldwall policy ({rules})."
