"""The sandbox layer: decides ``CodeRun`` actions against the policy's ``sandbox:``
section. Whether a role may run code at all is the policy layer's question
(``roles.<role>.code``); this one checks language, size, limits and backend.

Rules: ``sandbox.language_not_allowed``, ``sandbox.code_too_large``, ``sandbox.empty``,
``sandbox.limits_invalid``, ``sandbox.limits_capped`` (allow-with-changes: a request for
more than the policy grants is cut down to the grant), ``sandbox.weak_backend_refused``,
``sandbox.backend_unavailable``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ..actions import Action, CodeRun, Finding, Severity, Verdict
from ..layers import ORDER_SANDBOX, Outcome
from .settings import Settings, resolve
from .types import Limits

if TYPE_CHECKING:
    from ..layers import Layer
    from ..session import SessionState
    from ..wall import Shieldwall

NAME = "sandbox"


def _deny(rule: str, message: str, evidence: str = "") -> Finding:
    return Finding(NAME, rule, message, Verdict.DENY, evidence=evidence[:200],
                   severity=Severity.HIGH)


class SandboxLayer:
    name = NAME
    order = ORDER_SANDBOX
    kinds = frozenset({CodeRun.kind})

    def __init__(self, wall: Shieldwall | None = None) -> None:
        self._wall = wall
        self._backend_ok: dict[tuple[str, frozenset[str]], tuple[bool, str]] = {}

    def settings(self, session: SessionState, tool: str) -> Settings:
        return resolve(session.policy.sandbox, session.role, tool)

    def _backend(self, s: Settings, needs: frozenset[str]) -> tuple[bool, str]:
        key = (s.backend, needs)
        if key not in self._backend_ok:
            from . import backends
            from .types import SandboxError

            try:
                backends.get(s.backend, allow_weak=s.allow_weak, cgroup_root=s.cgroup_root,
                             needs=needs)
                self._backend_ok[key] = (True, "")
            except SandboxError as e:
                self._backend_ok[key] = (False, str(e))
        return self._backend_ok[key]

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if not isinstance(action, CodeRun):
            return None
        s = self.settings(session, action.tool)
        if s.backend == "process" and not s.allow_weak:
            return Outcome((_deny("sandbox.weak_backend_refused",
                                  "sandbox.backend is 'process', which is no isolation; set "
                                  "sandbox.allow_weak: true to accept it"),))
        lang = action.language if not action.argv else "sh"
        if lang not in s.languages:
            return Outcome((_deny("sandbox.language_not_allowed",
                                  f"{action.tool}: language {lang!r} is not granted (allowed: "
                                  f"{', '.join(sorted(s.languages)) or 'none'})", lang),))
        if not action.code and not action.argv:
            return Outcome((_deny("sandbox.empty", f"{action.tool}: no code and no command"),))
        size = len(action.code.encode()) + sum(len(a) for a in action.argv)
        if size > s.max_code_bytes:
            return Outcome((_deny("sandbox.code_too_large",
                                  f"{action.tool}: {size} bytes of code exceed "
                                  f"sandbox.max_code_bytes ({s.max_code_bytes})"),))
        needs = {"subprocesses"} if lang == "sh" else set()
        if s.network == "proxy":
            needs.add("proxy_network")
        ok, why = self._backend(s, frozenset(needs))
        if not ok:
            return Outcome((_deny("sandbox.backend_unavailable", why),))
        return self._limits(action, s.limits)

    def _limits(self, action: CodeRun, granted: Limits) -> Outcome | None:
        if not action.limits:
            return None
        try:
            asked = granted.merged(action.limits)
        except (ValueError, TypeError) as e:
            return Outcome((_deny("sandbox.limits_invalid", str(e)),))
        bad = [k for k, v in action.limits.items()
               if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0]
        if bad:
            return Outcome((_deny("sandbox.limits_invalid",
                                  f"limits must be positive numbers: {sorted(bad)}"),))
        capped = asked.capped_by(granted)
        if capped == asked:
            return None
        over = sorted(k for k in action.limits if getattr(asked, k) > getattr(granted, k))
        new_limits: dict[str, Any] = {k: getattr(capped, k) for k in action.limits}
        replacement = dataclasses.replace(action, limits=new_limits)
        f = Finding(NAME, "sandbox.limits_capped",
                    f"{action.tool}: requested limits above the policy's grant were lowered: "
                    + ", ".join(over), Verdict.CHANGES, evidence=",".join(over),
                    severity=Severity.LOW)
        return Outcome((f,), replacement)


def build(wall: Shieldwall) -> list[Layer]:
    return [SandboxLayer(wall)]
