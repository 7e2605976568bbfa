"""The policy file's model: roles, tasks, tools, approvals, and the layers' sections.

Validated once at load; the gate then works from the compiled form (``compile.py``).
Everything that is not named is denied.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .sections.audit import AuditSection
from .sections.detect import DetectSection
from .sections.egress import EgressSection
from .sections.flow import FlowSection
from .sections.mcp import McpSection
from .sections.sandbox import SandboxSection
from .sections.secrets import SecretsSection

DbScope = Literal["none", "read-only", "read-write", "admin"]
HttpMethod = Literal["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITY_ORDER: dict[str, int] = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"10m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '10m'")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError("a duration must be positive")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
            if seconds > 0:
                return seconds
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '10m', '2h'")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"}],
                    "description": "seconds, or a string like '30s', '10m', '2h'"}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Budget(_Strict):
    """Call budget and rate. ``calls`` is a hard cap for the session; ``per_minute`` is a
    token bucket with ``burst`` capacity (defaults to ``per_minute``)."""

    calls: int | None = Field(default=None, ge=0)
    per_minute: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)


class Role(_Strict):
    description: str = ""
    tools: list[str] = Field(default_factory=list, description="tools this role may call")
    http_methods: list[HttpMethod] = Field(default_factory=list)
    db_scope: DbScope = "none"
    budget: Budget | None = None
    code: bool = Field(default=False, description="may run code in the sandbox")

    @field_validator("tools")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"invalid tool name {name!r}")
        return v


class Task(_Strict):
    """Narrows a role for one job. Effective permission = role ∩ task."""

    description: str = ""
    role: str | None = Field(default=None, description="if set, the only role this task runs under")
    allow: list[str] | None = Field(default=None, description="tools the task may use (∩ role)")
    deny: list[str] = Field(default_factory=list)
    budget: Budget | None = None
    lifetime: Duration | None = None


class PathConstraint(_Strict):
    roots: list[str] = Field(min_length=1, description="directories the path must stay inside")
    allow_absolute: bool = False


class CommandConstraint(_Strict):
    allowed: list[str] = Field(min_length=1, description="executables the first argv item may be")


class SqlConstraint(_Strict):
    scope: DbScope | Literal["role"] = "role"
    dialect: str = "sqlite"


class UrlConstraint(_Strict):
    schemes: list[str] = Field(default_factory=lambda: ["https"])
    hosts: list[str] = Field(default_factory=list, description="exact host or '*.example.com'")


class ArgConstraint(_Strict):
    """Constraints on one argument's value. Several may be combined."""

    path: PathConstraint | None = None
    pattern: str | None = Field(default=None, description="the whole value must match (fullmatch)")
    enum: list[Any] | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    minimum: float | None = None
    maximum: float | None = None
    command: CommandConstraint | None = None
    sql: SqlConstraint | None = None
    url: UrlConstraint | None = None
    sensitive: bool = Field(default=False, description="redact this argument in the audit log")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"pattern does not compile: {e}") from e
        return v


class Approval(_Strict):
    required: bool = True
    reason: str = ""
    timeout: Duration | None = Field(default=None, description="no answer by then = deny")


class ResultLabels(_Strict):
    sensitivity: Sensitivity = "internal"
    trusted: bool = Field(default=True, description="false for third-party text (web, email)")


class Tool(_Strict):
    description: str = ""
    args: dict[str, ArgConstraint] = Field(default_factory=dict)
    result: ResultLabels = Field(default_factory=ResultLabels)
    sink: bool = Field(default=False, description="sends data outside (email, HTTP, chat)")
    approval: Approval | bool = False
    budget: Budget | None = None
    strict_args: bool = Field(default=True, description="strip arguments the tool does not declare")

    @property
    def approval_required(self) -> bool:
        if isinstance(self.approval, bool):
            return self.approval
        return self.approval.required


class Agent(_Strict):
    description: str = ""
    roles: list[str] = Field(min_length=1, description="roles this agent may take")
    public_key: str | None = Field(
        default=None, description="Ed25519 public key (PEM or base64 of 32 bytes); when set, "
        "sessions for this agent open only from an assertion it signed")
    may_delegate_to: list[str] = Field(
        default_factory=list, description="agents this one may sign assertions for (orchestrators)")


class Approvals(_Strict):
    timeout: Duration = Field(default=60.0, description="how long to wait for a person; then deny")
    store: Literal["memory", "sqlite", "redis"] = Field(
        default="memory", description="memory (this process), sqlite (other processes on this host "
        "can resolve with `shieldwall approvals`), redis (every gateway worker)")
    path: str = Field(default=".shieldwall/approvals.db", description="SQLite file (store: sqlite)")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="store: redis")


class MonitorSettings(_Strict):
    """Kill switch on repeated refusals (a probing, hijacked agent)."""

    enabled: bool = True
    max_denials: int = Field(default=20, ge=1, description="refusals tolerated within the window")
    window: Duration = Field(default=60.0, description="seconds over which refusals are counted")
    kill: Literal["session", "agent"] = "session"


class ServerToken(_Strict):
    name: str = Field(description="who holds it (shown in approvals and logs)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex of the bearer token")
    scopes: list[Literal["decide", "approve", "audit"]] = Field(min_length=1)


class ServerSettings(_Strict):
    """`shieldwall serve`: the HTTP API and dashboard."""

    listen: str = Field(default="127.0.0.1:8787", description="host:port (loopback by default)")
    tokens: list[ServerToken] = Field(default_factory=list)


class GateSettings(_Strict):
    layer_budget_ms: float = Field(default=250.0, gt=0, description="time budget of one layer")
    layer_budgets_ms: dict[str, float] = Field(default_factory=dict, description="per-layer overrides")


class StoreSettings(_Strict):
    """Where the gate keeps its counters: call budgets, rate buckets, the kill switch (and
    the monitor's refusal windows, assertion replay marks). ``memory`` lives in one
    process; ``redis`` is shared by every gateway worker and proxy worker, and by
    ``shieldwall kill``."""

    backend: Literal["memory", "redis"] = Field(
        default="memory", description="memory (this process only) or redis (shared by every "
        "worker; needed for `shieldwall proxy --workers N` and `shieldwall kill`)")
    url: str = Field(default="redis://127.0.0.1:6379/0", description="backend: redis")
    prefix: str = Field(default="shieldwall:", min_length=1,
                        description="key prefix (several deployments can share one Redis)")
    ttl: float = Field(default=86400.0, gt=0,
                       description="seconds a counter, bucket or revocation is kept")


class Policy(_Strict):
    """The whole ``shieldwall.yaml``."""

    version: Literal[1] = 1
    description: str = ""
    agents: dict[str, Agent] | None = Field(
        default=None, description="if present, only these agents may open sessions"
    )
    roles: dict[str, Role] = Field(default_factory=dict)
    tasks: dict[str, Task] = Field(default_factory=dict)
    tools: dict[str, Tool] = Field(default_factory=dict)
    approvals: Approvals = Field(default_factory=Approvals)
    gate: GateSettings = Field(default_factory=GateSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    audit: AuditSection = Field(default_factory=AuditSection)
    flow: FlowSection = Field(default_factory=FlowSection)
    egress: EgressSection = Field(default_factory=EgressSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)
    secrets: SecretsSection = Field(default_factory=SecretsSection)
    detect: DetectSection = Field(default_factory=DetectSection)
    mcp: McpSection = Field(default_factory=McpSection)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @model_validator(mode="after")
    def _references(self) -> Policy:
        for tname, task in self.tasks.items():
            if task.role is not None and task.role not in self.roles:
                raise ValueError(f"task {tname!r} names unknown role {task.role!r}")
        if self.agents:
            for aname, agent in self.agents.items():
                for r in agent.roles:
                    if r not in self.roles:
                        raise ValueError(f"agent {aname!r} names unknown role {r!r}")
        return self
