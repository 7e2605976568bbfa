"""Policy section `audit:`: where the audit log lives and what is redacted before writing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AuditSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    store: str = Field(
        default="sqlite",
        description="sqlite (embedded default), postgres (shared) or memory (tests)",
    )
    path: str = Field(default=".shieldwall/audit.db", description="SQLite file, relative to the policy file")
    dsn: str | None = Field(default=None, description="PostgreSQL DSN when store is postgres")
    redact_fields: list[str] = Field(
        default_factory=lambda: ["password", "passwd", "secret", "token", "api_key", "apikey",
                                 "authorization", "cookie", "private_key", "ssn", "card_number"],
        description="argument and result keys whose values are replaced before writing",
    )
    pg_schema: str = Field(
        default="shieldwall_audit",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema that holds the log's tables",
    )
    key_path: str = Field(
        default=".shieldwall/audit-signing-key.pem",
        description="Ed25519 private key that signs tree heads (created on first use, mode 0600)",
    )
    head_every_entries: int = Field(
        default=1000, ge=1, description="sign a tree head after this many new entries"
    )
    head_every_seconds: float = Field(
        default=10.0, gt=0,
        description="sign a tree head at the first commit this long after the last head",
    )
    batch_max_entries: int = Field(
        default=1024, ge=1, description="commit a batch once it holds this many entries"
    )
    batch_max_delay_ms: float = Field(
        default=20.0, ge=0,
        description="longest time an appended entry waits before its batch commits",
    )
    sequence: Literal["append", "commit"] = Field(
        default="append",
        description="when entries get their sequence numbers. append: at once (decisions "
        "carry audit_seq; while a batch is open this process holds the log's writer lock, "
        "so other processes writing the log wait up to a batch delay). commit: appends only "
        "queue and never wait for the lock; the flusher numbers and commits them "
        "(decisions carry no audit_seq). `shieldwall proxy` always uses commit",
    )
    durable_each: bool = Field(
        default=False,
        description="commit every append before it returns (slow); otherwise entries are "
        "durable at batch commit, flush() or append(durable=True)",
    )
    sqlite_synchronous: Literal["full", "normal"] = Field(
        default="full",
        description="full: a commit survives power loss; normal (WAL): survives a process "
        "crash, the last commits may be lost on power loss",
    )
    busy_timeout_ms: int = Field(
        default=30000, ge=0, description="how long a writer waits for another writer's lock"
    )
