"""Policy section `mcp:` — what the MCP gateway (``shieldwall mcp ...``) reads.

Bearer tokens are stored as SHA-256 hex digests, never in the clear: tokens are
random 256-bit strings made by ``shieldwall mcp token``, so a fast hash is the right one.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ServerRequestKind = Literal["sampling", "elicitation", "roots"]
_SERVER_REQUESTS: tuple[ServerRequestKind, ...] = ("sampling", "elicitation", "roots")


class McpToken(BaseModel):
    """One agent's bearer token for ``shieldwall mcp serve``: hash → identity."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(description="hex SHA-256 of the token (shieldwall mcp token prints it)")
    agent: str = Field(min_length=1)
    role: str = Field(min_length=1)
    task: str | None = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.strip().lower()
        if not _HEX64.match(v):
            raise ValueError("sha256 must be 64 lower-case hex digits (the token's SHA-256)")
        return v


class McpSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[McpToken] = Field(default_factory=list,
                                   description="bearer tokens of the HTTP face (hashed)")
    tokens_file: str | None = Field(
        default=None, description="JSON/YAML file with more tokens ({tokens: [...]}), "
        "relative to the policy file")
    lock: str = Field(default="shieldwall.lock",
                      description="manifest lock file, relative to the policy file")
    pin: Literal["enforce", "tofu", "warn", "off"] = Field(
        default="enforce",
        description="enforce: tools must match the lock; tofu: pin on first start, then "
        "enforce; warn: report drift but allow; off: no pinning")
    server_requests: list[ServerRequestKind] = Field(
        default_factory=lambda: list(_SERVER_REQUESTS),
        description="requests an MCP server may send to the client through the gateway "
        "(sampling/createMessage, elicitation/create, roots/list); others are refused with "
        "an error to the server and audited. Sampling and elicitation text is scanned as "
        "untrusted input either way")
    max_result_bytes: int = Field(default=256 * 1024, ge=1024,
                                  description="tool results larger than this are truncated")
    sandbox: bool = Field(default=False,
                          description="run stdio MCP servers inside the bwrap sandbox "
                          "(shieldwall.sandbox.wrap_command); the gateway refuses to start "
                          "the server when the sandbox is unavailable")
    sandbox_ro_paths: list[str] = Field(
        default_factory=list, description="extra absolute paths bound read-only into the "
        "server's sandbox (its interpreter, venv and script directory are found already)")
    sandbox_rw_paths: list[str] = Field(
        default_factory=list, description="extra absolute paths bound read-write (must be "
        "writable by group 65534)")
    sandbox_network: Literal["none", "proxy"] = Field(
        default="none", description="none: loopback only; proxy: the egress proxy's Unix "
        "socket bridged in as HTTP(S)_PROXY")
    sandbox_proxy_socket: str | None = Field(
        default=None, description="the egress proxy's Unix socket (sandbox_network: proxy)")
    sandbox_limits: dict[str, float] = Field(
        default_factory=dict, description="overrides of the server sandbox's limits "
        "(keys of shieldwall.sandbox.Limits: memory_bytes, pids, cpu_s, disk_bytes, ...)")
    @field_validator("pin", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        # YAML 1.1 reads a bare `off` as false
        return "off" if v is False else v

    restarts: int = Field(default=3, ge=0, description="restarts of a crashed upstream server")
    call_timeout: float = Field(default=60.0, gt=0, description="seconds per upstream request")
