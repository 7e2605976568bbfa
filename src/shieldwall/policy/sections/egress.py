"""Policy section `egress:` — where agents may send requests, and what may leave.

The egress room (``shieldwall.egress``) compiles this into an ``EgressPolicy``. Default
deny: with an empty section no host is reachable. HTTP methods per role live on the
role (``roles.<name>.http_methods``), not here.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST_ENTRY = re.compile(r"^(\*\.)?[^\s/@?#\\*:\[\]%]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EgressLimits(_Strict):
    max_request_bytes: int = Field(default=1_048_576, ge=0, description="largest request body")
    max_response_bytes: int = Field(default=10_485_760, ge=0, description="largest response body")
    max_url_chars: int = Field(default=8192, ge=16)
    max_header_bytes: int = Field(default=65_536, ge=256, description="request head, all headers")
    max_redirects: int = Field(default=5, ge=0, description="redirect hops http_request follows")
    timeout: float = Field(default=30.0, gt=0, description="seconds for one upstream request")


class InspectionSettings(_Strict):
    """Content inspection of outbound requests (URL, headers, body)."""

    secrets: bool = Field(default=True, description="refuse live secrets and well-known key formats")
    blobs: bool = Field(default=True, description="refuse long base64/hex/high-entropy runs")
    blob_verdict: Literal["deny", "ask"] = "deny"
    blob_min_chars_url: int = Field(
        default=96, ge=16, description="shortest encoded run flagged in the URL and headers"
    )
    blob_min_chars_body: int = Field(
        default=512, ge=16, description="shortest encoded run flagged in the body"
    )
    min_entropy: float = Field(
        default=4.0, ge=0, le=8, description="bits per character a base64 run must reach"
    )
    ignore_headers: list[str] = Field(
        default_factory=list,
        description="request headers not inspected (e.g. an Authorization the proxy injects)",
    )
    max_inspect_bytes: int = Field(
        default=4_194_304, ge=0, description="bodies beyond this are refused, not inspected"
    )

    @field_validator("ignore_headers")
    @classmethod
    def _lower(cls, v: list[str]) -> list[str]:
        return [h.strip().lower() for h in v]


class ProxyCredential(_Strict):
    """One agent's credential for ``shieldwall proxy``. Only the hash is stored:
    ``sha256:<hex>`` of the token (tokens are random, 32 bytes; mint one with
    ``shieldwall proxy token``)."""

    agent: str
    role: str
    task: str | None = None
    token_sha256: str = Field(description="'sha256:' + hex SHA-256 of the token")

    @field_validator("token_sha256")
    @classmethod
    def _hash(cls, v: str) -> str:
        v = v.strip().lower()
        if not _HASH.match(v):
            raise ValueError("token_sha256 must be 'sha256:' followed by 64 hex digits")
        return v


class ProxySettings(_Strict):
    listen: str = Field(default="127.0.0.1:8899", description="host:port of the proxy")
    unix_socket: str | None = Field(default=None, description="also listen on this Unix socket")
    credentials: list[ProxyCredential] = Field(default_factory=list)
    header_timeout: float = Field(default=10.0, gt=0, description="seconds to send a request head")
    body_timeout: float = Field(default=30.0, gt=0)
    idle_timeout: float = Field(default=60.0, gt=0, description="keep-alive and tunnel idle time")
    max_connections: int = Field(default=512, ge=1)
    decide_in_threads: bool = Field(
        default=False,
        description="decide in worker threads instead of on the event loop: lower latency "
        "off, but turn it on when the gate's stores are remote (PostgreSQL, Redis) so a slow "
        "store never holds up other connections",
    )
    connect_tunnels: bool = Field(
        default=True, description="allow CONNECT to allowed host:port (content is not inspected)"
    )
    tunnel_recheck: float = Field(
        default=1.0, gt=0, le=60,
        description="seconds between kill-switch checks of an open CONNECT tunnel: a tunnel "
        "whose agent or session is revoked is cut within this time")
    drain_timeout: float = Field(
        default=10.0, ge=0,
        description="on SIGTERM: seconds requests in flight may take to finish (no new "
        "connections, idle ones closed) before the rest are cut; 0 cuts at once")
    workers: int = Field(
        default=1, ge=1, le=256,
        description="worker processes (one event loop, so one CPU, each); more than one "
        "needs store.backend: redis so every worker counts the same budgets")


Scheme = Literal["http", "https"]


def _https_only() -> list[Scheme]:
    return ["https"]


class EgressSection(_Strict):
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="'api.example.com' (exact), '*.example.com' (subdomains only), "
        "optionally ':port'; IP literals allowed",
    )
    schemes: list[Scheme] = Field(default_factory=_https_only)
    ports: list[int] = Field(default_factory=lambda: [443], description="ports for hosts without one")
    allow_private: list[str] = Field(
        default_factory=list,
        description="addresses/networks exempt from the private-address check "
        "(e.g. '127.0.0.1', '10.1.0.0/16'); cloud metadata stays blocked unless named exactly",
    )
    limits: EgressLimits = Field(default_factory=EgressLimits)
    inspect: InspectionSettings = Field(default_factory=InspectionSettings)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    output_urls: Literal["links", "images", "off"] = Field(
        default="links",
        description="model output: remove links and images ('links'), only images, or "
        "nothing that points to hosts not allowed here",
    )
    dns_cache_seconds: float = Field(
        default=30.0, ge=0, description="checked DNS answers are reused (pinned) this long"
    )

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            h2 = h.strip().lower()
            if not _HOST_ENTRY.match(h2) or h2.startswith("*.*") or "*" in h2[1:]:
                raise ValueError(
                    f"invalid host entry {h!r}: use 'api.example.com', '*.example.com' "
                    "or an IP address, optionally with ':port'"
                )
            out.append(h2)
        return out

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for p in v:
            if not 0 < p < 65536:
                raise ValueError(f"invalid port {p}")
        return v

    @field_validator("allow_private")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for n in v:
            try:
                ipaddress.ip_network(n.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"invalid private exception {n!r}: use an address or a network "
                    "like '127.0.0.1' or '10.0.0.0/8'"
                ) from None
        return [n.strip() for n in v]
