"""Labels a tool result carries: sensitivity (public < internal < confidential <
restricted) and provenance (trusted or not), read from the policy."""

from __future__ import annotations

from dataclasses import dataclass

from ..policy.model import SENSITIVITY_ORDER, Policy

LABELS: tuple[str, ...] = tuple(sorted(SENSITIVITY_ORDER, key=SENSITIVITY_ORDER.__getitem__))


@dataclass(frozen=True, slots=True)
class Label:
    sensitivity: str
    trusted: bool

    @property
    def rank(self) -> int:
        return SENSITIVITY_ORDER[self.sensitivity]


def rank(sensitivity: str) -> int:
    return SENSITIVITY_ORDER[sensitivity]


def label_name(r: int) -> str:
    return LABELS[r]


def label_for(policy: Policy, tool: str) -> Label:
    """The label of ``tool``'s results. A tool the policy does not describe gets the
    default result labels, untrusted when ``flow.untrusted_default`` (the safe side)."""
    t = policy.tools.get(tool)
    if t is None:
        return Label("internal", not policy.flow.untrusted_default)
    return Label(t.result.sensitivity, t.result.trusted)
