"""Compile a validated policy into what the hot path needs: frozensets and checkers.

``effective(role, task)`` is role ∩ task: a task can only narrow a role, never widen it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PolicyError
from .constraints import ArgRule, compile_arg
from .model import Budget, Policy


@dataclass(frozen=True, slots=True)
class Effective:
    role: str
    task: str | None
    tools: frozenset[str]
    role_tools: frozenset[str]
    task_allow: frozenset[str] | None
    task_deny: frozenset[str]
    http_methods: frozenset[str]
    db_scope: str
    code: bool
    session_calls: int | None
    per_minute: float | None
    burst: int | None
    lifetime: float | None


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class CompiledPolicy:
    def __init__(self, policy: Policy, base_dir: Path) -> None:
        self.policy = policy
        self.base_dir = base_dir
        self._effective: dict[tuple[str, str | None], Effective] = {}
        self._args: dict[tuple[str, str], tuple[ArgRule, ...]] = {}
        self.approval_tools = frozenset(
            n for n, t in policy.tools.items() if t.approval_required
        )
        self.sinks = frozenset(n for n, t in policy.tools.items() if t.sink)
        # compile every constraint once now, so a bad pattern fails at load, not mid-run
        for role in policy.roles.values():
            for tool in policy.tools:
                self.arg_rules(tool, role.db_scope)

    def effective(self, role: str, task: str | None) -> Effective:
        key = (role, task)
        hit = self._effective.get(key)
        if hit is not None:
            return hit
        r = self.policy.roles.get(role)
        if r is None:
            raise PolicyError(f"unknown role {role!r} (roles: {', '.join(sorted(self.policy.roles))})")
        role_tools = frozenset(r.tools)
        tools = role_tools
        allow: frozenset[str] | None = None
        deny: frozenset[str] = frozenset()
        budget: Budget | None = r.budget
        calls = budget.calls if budget else None
        per_minute = budget.per_minute if budget else None
        burst = budget.burst if budget else None
        lifetime = None
        if task is not None:
            t = self.policy.tasks.get(task)
            if t is None:
                raise PolicyError(f"unknown task {task!r} (tasks: {', '.join(sorted(self.policy.tasks))})")
            if t.role is not None and t.role != role:
                raise PolicyError(f"task {task!r} runs only under role {t.role!r}, not {role!r}")
            if t.allow is not None:
                allow = frozenset(t.allow)
                tools = tools & allow
            deny = frozenset(t.deny)
            tools = tools - deny
            if t.budget:
                c = _min(calls, t.budget.calls)
                calls = int(c) if c is not None else None
                per_minute = _min(per_minute, t.budget.per_minute)
                b = _min(burst, t.budget.burst)
                burst = int(b) if b is not None else None
            lifetime = t.lifetime
        eff = Effective(
            role=role, task=task, tools=tools, role_tools=role_tools, task_allow=allow,
            task_deny=deny, http_methods=frozenset(r.http_methods), db_scope=r.db_scope,
            code=r.code, session_calls=calls, per_minute=per_minute, burst=burst,
            lifetime=lifetime,
        )
        self._effective[key] = eff
        return eff

    def arg_rules(self, tool: str, db_scope: str) -> tuple[ArgRule, ...]:
        key = (tool, db_scope)
        hit = self._args.get(key)
        if hit is not None:
            return hit
        t = self.policy.tools.get(tool)
        rules: tuple[ArgRule, ...] = ()
        if t is not None:
            rules = tuple(
                r for r in (
                    compile_arg(tool, name, c, base_dir=self.base_dir, role_scope=db_scope)
                    for name, c in t.args.items()
                ) if r.checks
            )
        self._args[key] = rules
        return rules
