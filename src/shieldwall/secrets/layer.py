"""The secrets room's wiring: installs the redactor and the placeholder resolver on the
wall, and adds two layers.

* ``secrets`` (tool calls): a placeholder for a secret the tool is not granted, a token
  the tool may not hold, or a *live secret value* in the arguments (the model should
  never have one) is refused before anything runs.
* ``secrets.result`` (tool results, model output): live values and their encoded forms
  are replaced by ``[REDACTED]`` — allow-with-changes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..actions import Action, Finding, ModelOutput, Severity, ToolCall, ToolResult, Verdict
from ..layers import ORDER_POLICY, ORDER_RESULT_SECRETS, Layer, Outcome
from ..stores import CounterStore, MemoryStore, RedisStore
from .manager import SecretManager, backends_from
from .tokens import TokenBroker, load_or_create_key

if TYPE_CHECKING:
    from ..session import SessionState
    from ..wall import Shieldwall

ORDER_SECRET_ARGS = ORDER_POLICY + 5


class SecretArgsLayer:
    name = "secrets"
    order = ORDER_SECRET_ARGS
    kinds = frozenset({ToolCall.kind})

    def __init__(self, manager: SecretManager) -> None:
        self.manager = manager

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        assert isinstance(action, ToolCall)
        findings = []
        text = repr(action.args)
        if "{{" in text:
            for problem in self.manager.check_args(action.tool, action.args):
                findings.append(Finding(self.name, "secrets.not_granted", problem, Verdict.DENY,
                                        evidence=action.tool, severity=Severity.HIGH))
        if self.manager.redactor.contains(text):
            findings.append(Finding(
                self.name, "secrets.live_value_in_args",
                f"{action.tool}: the arguments hold a live secret value; pass a "
                "{{secret:name/key}} placeholder instead (the value was not logged)",
                Verdict.DENY, evidence=action.tool, severity=Severity.CRITICAL))
        return Outcome(tuple(findings)) if findings else None


class SecretResultLayer:
    name = "secrets.result"
    order = ORDER_RESULT_SECRETS
    kinds = frozenset({ToolResult.kind, ModelOutput.kind})

    def __init__(self, manager: SecretManager) -> None:
        self.manager = manager

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        r = self.manager.redactor
        if not len(r):
            return None
        new: Action
        if isinstance(action, ToolResult):
            result = r.redact_value(action.result)
            error = r.redact(action.error) if action.error else action.error
            if result == action.result and error == action.error:
                return None
            new = replace(action, result=result, error=error)
            where = f"{action.tool} result"
        elif isinstance(action, ModelOutput):
            text = r.redact(action.text)
            if text == action.text:
                return None
            new = ModelOutput(text)
            where = "model output"
        else:
            return None
        return Outcome((Finding(self.name, "secrets.redacted",
                                f"{where} held a live secret value; it was redacted",
                                Verdict.CHANGES, evidence=where, severity=Severity.HIGH),), new)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts live secrets from every record it sees. Add it to
    the handlers that write your logs: ``handler.addFilter(RedactingFilter(manager))``."""

    def __init__(self, manager: SecretManager) -> None:
        super().__init__()
        self.manager = manager

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        record.msg = self.manager.redactor.redact(msg)
        record.args = None
        if record.exc_text:
            record.exc_text = self.manager.redactor.redact(record.exc_text)
        return True


def _token_store(wall: Shieldwall) -> CounterStore:
    t = wall.policy.secrets.tokens
    if t.store == "memory":
        return MemoryStore()
    if t.store == "redis":
        return RedisStore(t.redis_url, prefix="shieldwall:")
    return wall.store


def build_manager(wall: Shieldwall) -> SecretManager:
    section = wall.policy.secrets
    broker = None
    t = section.tokens
    if t.grants:
        broker = TokenBroker(
            load_or_create_key(wall.base_dir / t.key_file), store=_token_store(wall),
            grants={tool: (g.audience, frozenset(g.scopes), g.ttl, g.max_uses)
                    for tool, g in t.grants.items()},
            issuer=t.issuer, clock=wall.clock)
    return SecretManager(section, backends_from(section, wall.base_dir), clock=wall.clock,
                         broker=broker)


def manager_of(wall: Shieldwall) -> SecretManager | None:
    """The manager the wall's secrets layers use (for tests, tools and faces)."""
    for layer in wall.gate.layers:
        m = getattr(layer, "manager", None)
        if isinstance(m, SecretManager):
            return m
    return None


def install(wall: Shieldwall, manager: SecretManager) -> list[Layer]:
    def resolve(args: dict[str, Any], tool: str, state: SessionState) -> dict[str, Any]:
        return manager.resolve(args, tool, state.id, state.agent)

    wall.set_redactor(manager.redactor.redact)
    wall.set_secret_resolver(resolve)
    wall.set_live_secrets(manager.redactor.values)
    return [SecretArgsLayer(manager), SecretResultLayer(manager)]


def build(wall: Shieldwall) -> list[Layer]:
    manager = build_manager(wall)
    manager.preload()  # failures surface when a tool needs the secret (fail closed there)
    return install(wall, manager)
