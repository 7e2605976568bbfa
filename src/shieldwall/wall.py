"""``Shieldwall``: owns one policy, its tools, stores, audit log and layers."""

from __future__ import annotations

import importlib
import re
import secrets as _secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

from .approvals import ApprovalQueue, Approver, DenyAllApprover, QueueBackend
from .audit import AuditLog, open_audit
from .errors import PolicyError, ShieldwallError
from .gate import Gate
from .layers import Layer
from .policy.compile import CompiledPolicy
from .policy.layer import BudgetLayer, IdentityLayer, PolicyLayer
from .policy.load import load_policy
from .policy.model import Policy
from .session import Session, SessionState
from .stores import CounterStore, open_counter_store
from .tools import ToolSpec, spec_from_function

F = TypeVar("F", bound=Callable[..., Any])

# Rooms that contribute layers, each through ``<room>.layer.build(wall)``.
LAYER_ROOMS: tuple[str, ...] = ("secrets", "flow", "egress", "detect", "sandbox")

_PLACEHOLDER = re.compile(r"\{\{\s*secret:[^}]*\}\}")
REDACTED = "[REDACTED]"


def open_approval_backend(policy: Policy, base_dir: Path) -> QueueBackend | None:
    cfg = policy.approvals
    if cfg.store == "sqlite":
        from .approvals.shared import SQLiteBackend

        return SQLiteBackend(base_dir / cfg.path)
    if cfg.store == "redis":
        from .approvals.shared import RedisBackend

        return RedisBackend(cfg.redis_url)
    return None


class Shieldwall:
    """The gate and everything it needs, built from one policy.

    ``clock`` and ``store`` are injectable so tests control time and shared state.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        base_dir: str | Path = ".",
        store: CounterStore | None = None,
        audit: AuditLog | bool | None = True,
        approver: Approver | None = None,
        clock: Callable[[], float] = time.time,
        extra_layers: list[Layer] | None = None,
        load_rooms: bool = True,
    ) -> None:
        self.policy = policy
        self.base_dir = Path(base_dir)
        self.clock = clock
        # Counters (budgets, rates, the kill switch): the policy's store section unless a
        # store is passed in.
        self.store: CounterStore = store or open_counter_store(policy.store)
        self.compiled = CompiledPolicy(policy, self.base_dir)
        self.tools: dict[str, ToolSpec] = {}
        self.approvals = ApprovalQueue(clock, backend=open_approval_backend(policy, self.base_dir))
        self.approver: Approver = approver or DenyAllApprover()
        self._redact_text: Callable[[str], str] = lambda s: s
        self._resolve_secrets: Callable[[dict[str, Any], str, SessionState], dict[str, Any]] | None = None
        self._spotlight: Callable[[SessionState, str, str], str] | None = None
        self.live_secrets: Callable[[], list[str]] = list
        self._sensitive_args = {
            tool: frozenset(a for a, c in t.args.items() if c.sensitive)
            for tool, t in policy.tools.items()
        }
        self._redact_keys = frozenset(k.lower() for k in policy.audit.redact_fields)
        self.sessions: dict[str, Session] = {}
        if audit is True:
            self.audit: AuditLog | None = (
                open_audit(policy.audit, self.base_dir, redact=self.redact_text)
                if policy.audit.enabled else None
            )
        elif audit is False:
            self.audit = None
        else:
            self.audit = audit
        budgets = policy.gate.layer_budgets_ms
        default_budget = policy.gate.layer_budget_ms
        layers: list[Layer] = [
            IdentityLayer(self.compiled, self.store),
            PolicyLayer(self.compiled, self.tools),
            BudgetLayer(self.compiled, self.store),
        ]
        self.gate = Gate(
            layers,
            audit=self.audit,
            approvals=self.approvals,
            budgets_ms=lambda name: budgets.get(name, default_budget),
            entry_redactor=self._redact_entry,
            approval_timeout=self.approval_timeout,
            clock=clock,
        )
        if load_rooms:
            for room in LAYER_ROOMS:
                for layer in self._room_layers(room):
                    self.gate.add(layer)
        for layer in extra_layers or []:
            self.gate.add(layer)
        from .monitor import Monitor

        self.monitor = Monitor(self, policy.monitor)
        self.gate.observers.append(self.monitor.observe)

    def _room_layers(self, room: str) -> list[Layer]:
        name = f"shieldwall.{room}.layer"
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name in (name, f"shieldwall.{room}"):
                return []
            raise
        built: list[Layer] = mod.build(self)
        return built

    @classmethod
    def from_policy(cls, path: str | Path, **kwargs: Any) -> Shieldwall:
        p = Path(path)
        policy = load_policy(p)
        kwargs.setdefault("base_dir", p.resolve().parent)
        return cls(policy, **kwargs)

    # ----------------------------------------------------------------- tools

    @overload
    def tool(self, fn: F) -> F: ...
    @overload
    def tool(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def tool(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Register a Python function as a tool; its schema comes from its type hints."""

        def register(f: F) -> F:
            self.register_tool(spec_from_function(f, name))
            return f

        return register(fn) if fn is not None else register

    def register_tool(self, spec: ToolSpec) -> None:
        self.tools[spec.name] = spec

    # ----------------------------------------------------------------- sessions

    def session(self, agent: str, role: str, task: str | None = None, *,
                session_id: str | None = None, _verified: bool = False) -> Session:
        if not agent:
            raise ShieldwallError("a session needs an agent name")
        spec = (self.policy.agents or {}).get(agent)
        if spec is not None and spec.public_key and not _verified:
            raise ShieldwallError(
                f"agent {agent!r} has a pinned public key: open its sessions with "
                "wall.session_from_assertion(token), not by name")
        try:
            eff = self.compiled.effective(role, task)
        except PolicyError as e:
            raise ShieldwallError(f"cannot open session for agent {agent!r}: {e}") from None
        sid = session_id or "ses_" + _secrets.token_hex(8)
        state = SessionState(
            id=sid, agent=agent, role=role, task=task, started=self.clock(),
            policy=self.policy, effective=eff, wall=self, clock=self.clock,
        )
        s = Session(self, state)
        self.sessions[sid] = s
        return s

    def session_from_assertion(self, token: str, *, audience: str = "shieldwall") -> Session:
        """Open a session from a signed agent assertion (see :mod:`shieldwall.identity`).

        The signer's public key must be pinned in ``agents.NAME.public_key``; the role must
        be one the acting agent may take and, for a delegation, the issuer too.
        """
        from .identity import InvalidAssertion, load_public_key, verify_assertion

        agents = self.policy.agents or {}
        keys = {name: load_public_key(a.public_key) for name, a in agents.items() if a.public_key}
        a = verify_assertion(token, public_keys=keys, audience=audience, now=self.clock(),
                             first_use=lambda jti: self.store.take("jti:" + jti, 1)[0])
        if a.delegated and a.agent not in agents[a.issuer].may_delegate_to:
            raise InvalidAssertion(f"agent {a.issuer!r} may not sign for {a.agent!r} "
                                   f"(add it to agents.{a.issuer}.may_delegate_to)")
        for who in {a.issuer, a.agent}:
            spec = agents.get(who)
            if spec is None or a.role not in spec.roles:
                raise InvalidAssertion(f"agent {who!r} may not take role {a.role!r}")
        return self.session(agent=a.agent, role=a.role, task=a.task, _verified=True)

    def bare_state(self, agent: str, session_id: str, role: str = "",
                   task: str | None = None) -> SessionState:
        """A session state with no permissions, for audit entries about an agent that has
        no open session here (an early proxy refusal, an operator's kill)."""
        from .policy.compile import Effective

        nobody = Effective(role=role, task=task, tools=frozenset(), role_tools=frozenset(),
                           task_allow=frozenset(), task_deny=frozenset(), http_methods=frozenset(),
                           db_scope="", code=False, session_calls=0, per_minute=0.0, burst=0,
                           lifetime=0.0)
        return SessionState(id=session_id, agent=agent, role=role, task=task,
                            started=self.clock(), policy=self.policy, effective=nobody,
                            wall=self, clock=self.clock)

    def _session_closed(self, s: Session) -> None:
        self.sessions.pop(s.id, None)

    def kill(self, *, session: str | None = None, agent: str | None = None) -> None:
        """Kill switch: every further action of that session or agent is denied."""
        if session:
            self.store.revoke("session:" + session)
        if agent:
            self.store.revoke("agent:" + agent)

    def lift_kill(self, *, session: str | None = None, agent: str | None = None) -> bool:
        """Lift the kill switch on a session or agent (after review); returns whether
        anything was revoked."""
        lifted = False
        if session:
            lifted = self.store.unrevoke("session:" + session) or lifted
        if agent:
            lifted = self.store.unrevoke("agent:" + agent) or lifted
        return lifted

    def approval_timeout(self, tool: str) -> float:
        t = self.policy.tools.get(tool)
        if t is not None and not isinstance(t.approval, bool) and t.approval.timeout:
            return t.approval.timeout
        return self.policy.approvals.timeout

    # ----------------------------------------------------------------- hooks set by rooms

    def set_redactor(self, fn: Callable[[str], str]) -> None:
        """Live-secret redaction of text (the secrets room installs it)."""
        self._redact_text = fn

    def set_secret_resolver(
        self, fn: Callable[[dict[str, Any], str, SessionState], dict[str, Any]]
    ) -> None:
        """Resolves ``{{secret:...}}`` placeholders inside the executor, after the gate."""
        self._resolve_secrets = fn

    def set_live_secrets(self, fn: Callable[[], list[str]]) -> None:
        """The current live secret values (egress inspection looks for them in requests)."""
        self.live_secrets = fn

    def set_spotlighter(self, fn: Callable[[SessionState, str, str], str]) -> None:
        self._spotlight = fn

    def redact_text(self, text: str) -> str:
        return self._redact_text(text)

    def resolve_secrets(self, args: dict[str, Any], tool: str, state: SessionState) -> dict[str, Any]:
        if self._resolve_secrets is not None:
            return self._resolve_secrets(args, tool, state)
        if _PLACEHOLDER.search(repr(args)):
            raise ShieldwallError(
                f"{tool}: arguments hold a secret placeholder but no secrets backend is "
                "configured (add a secrets: section to the policy)")
        return args

    def spotlight(self, state: SessionState, text: str, source: str) -> str:
        if self._spotlight is None:
            raise ShieldwallError("spotlighting is not available (the detect room is not installed)")
        return self._spotlight(state, text, source)

    def _redact_value(self, value: Any, depth: int = 0) -> Any:
        if depth > 20:
            return REDACTED
        if isinstance(value, str):
            return self._redact_text(value)
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and k.lower() in self._redact_keys
                    else self._redact_value(v, depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._redact_value(v, depth + 1) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._redact_text(repr(value))

    def _redact_entry(self, entry: dict[str, Any], state: SessionState) -> dict[str, Any]:
        args = entry.get("args")
        if isinstance(args, dict):
            sensitive = self._sensitive_args.get(str(entry.get("tool", "")), frozenset())
            if sensitive:
                args = {k: (REDACTED if k in sensitive else v) for k, v in args.items()}
            entry["args"] = self._redact_value(args)
        # Findings quote evidence (the offending value) and other layers' messages: the
        # live-secret redactor runs over them too before anything is written.
        # "tool" holds the action's target, which for an Egress is its URL.
        for key in ("error", "findings", "url", "tool"):
            if key in entry:
                entry[key] = self._redact_value(entry[key])
        return entry

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
