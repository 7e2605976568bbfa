"""The layer contract: what every check the gate runs must look like.

A layer is a small object with one method. It inspects an action in the context of a
session and returns ``None`` (nothing to say: the fast path) or an :class:`Outcome` with
findings and, for allow-with-changes, a replacement action. A layer never performs the
action and never raises on purpose: the gate turns any exception into a deny.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .actions import Action, Finding

if TYPE_CHECKING:
    from .session import SessionState

# Order in which the gate runs layers (lower first). Stable numbers so that layers built
# in other rooms slot in without knowing each other.
ORDER_IDENTITY = 10
ORDER_POLICY = 20
ORDER_BUDGET = 75  # last before execution: a refused call spends no budget
ORDER_EGRESS = 40
ORDER_FLOW = 50
ORDER_DETECT = 60
ORDER_SANDBOX = 70
ORDER_RESULT_SECRETS = 80  # results: redact live secrets first
ORDER_RESULT_DETECT = 90  # then scan for injection
ORDER_RESULT_LABEL = 100  # then label/taint and spotlight

# session.extras key: texts a result layer withheld from the result it let through (detect's
# `on_injection: remove`); the flow room records them as untrusted content, then clears it.
WITHHELD_KEY = "withheld"


@dataclass(slots=True)
class Outcome:
    findings: tuple[Finding, ...] = ()
    action: Action | None = None  # replacement action (allow-with-changes)


@runtime_checkable
class Layer(Protocol):
    """One check. ``kinds`` lists the action kinds it inspects (``ToolCall.kind`` ...)."""

    name: str
    order: int
    kinds: frozenset[str]

    def check(self, action: Action, session: SessionState) -> Outcome | None: ...


class Committing(Protocol):
    """Optional: a layer that records state once an action is finally allowed
    (budgets consume a call, flow remembers what a result contained)."""

    def commit(self, action: Action, session: SessionState) -> None: ...


class Remembering(Protocol):
    """Optional: a layer told of every refused (deny or ask) action of its kinds, whether or
    not it ran (flow keeps untrusted text the detect room refused as taint, so a later
    echo of it by a trusted tool is still recognised)."""

    def refused(self, action: Action, session: SessionState) -> None: ...
