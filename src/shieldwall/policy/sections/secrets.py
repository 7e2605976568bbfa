"""Policy section `secrets:` — where secret values live, which tool may use which, and
the short-lived tokens the broker mints.

Drives the secrets room (``shieldwall.secrets``). Placeholders ``{{secret:name/key}}`` in
tool arguments are resolved only inside the executor, and only for secrets granted to
that tool here. ``{{token}}`` asks the broker for a per-invocation token.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"10m"`` (policy.model has the same parser; a
    section cannot import it without a cycle)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and float(m.group(1)) > 0:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '10m'")

BackendName = Literal["env", "file", "vault"]
_ORDER: tuple[BackendName, ...] = ("env", "file", "vault")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvBackend(_Strict):
    """``{{secret:stripe/api_key}}`` → ``$SHIELDWALL_SECRET_STRIPE_API_KEY``."""

    prefix: str = "SHIELDWALL_SECRET_"


class FileBackend(_Strict):
    """A Fernet-encrypted JSON file ``{name: {key: value}}``."""

    path: str = ".shieldwall/secrets.enc"
    key_file: str = Field(default=".shieldwall/secrets.key",
                          description="Fernet key; used when key_env is unset")
    key_env: str = Field(default="SHIELDWALL_SECRETS_KEY", description="env var holding the key")


class VaultBackend(_Strict):
    """HashiCorp Vault / OpenBao KV v2."""

    url: str = "http://127.0.0.1:8200"
    token_env: str = Field(default="VAULT_TOKEN", description="env var holding the token")
    mount: str = "secret"
    namespace: str | None = None
    timeout: float = Field(default=5.0, gt=0)


class TokenGrant(_Strict):
    audience: str
    scopes: list[str] = Field(default_factory=list)
    ttl: float = Field(default=60.0, description="seconds")
    max_uses: int = Field(default=1, ge=1)

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, v: object) -> float:
        return parse_duration(v)


class TokenSettings(_Strict):
    issuer: str = "shieldwall"
    key_file: str = Field(default=".shieldwall/tokens.ed25519",
                          description="Ed25519 private key (PEM); created when missing")
    store: Literal["wall", "memory", "redis"] = Field(
        default="wall", description="revocations/uses: the wall's store, memory or Redis")
    redis_url: str = "redis://127.0.0.1:6379/0"
    grants: dict[str, TokenGrant] = Field(
        default_factory=dict, description="per tool: audience and the scopes it may hold")


class SecretsSection(_Strict):
    env: EnvBackend | None = Field(default_factory=EnvBackend)
    file: FileBackend | None = None
    vault: VaultBackend | None = None
    order: list[BackendName] = Field(
        default_factory=lambda: list(_ORDER),
        description="backends tried in turn (only configured ones)")
    sources: dict[str, BackendName] = Field(
        default_factory=dict, description="pin a secret name to one backend")
    grants: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per tool: secrets it may use, 'name/key' or 'name/*'")
    ttl: float = Field(default=60.0, description="seconds before a value is re-read (rotation)")
    grace: float = Field(
        default=300.0, description="seconds an old value stays redacted after rotation")
    redact_encodings: bool = Field(default=True, description="also redact base64/hex/URL forms")
    min_redact_chars: int = Field(default=4, ge=1)
    tokens: TokenSettings = Field(default_factory=TokenSettings)

    @field_validator("ttl", "grace", mode="before")
    @classmethod
    def _dur(cls, v: object) -> float:
        return parse_duration(v)
