"""Signed agent identity.

Each agent holds an Ed25519 key; the policy pins its public key (``agents.NAME.public_key``).
An agent proves who it is with a short-lived assertion — a JWT (RFC 7519) signed with
EdDSA (RFC 8037) — and the gate opens a session only for a valid one: right key, right
audience, not expired, not replayed (each ``jti`` is accepted once), and a role the policy
lets that agent take.

Agent-to-agent: an orchestrator may sign an assertion *for* a worker (``iss`` ≠ ``sub``).
It is verified with the orchestrator's key, and the role must be one both agents may
take — a delegation can only narrow, never widen.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ShieldwallError

ALGORITHM = "EdDSA"
DEFAULT_AUDIENCE = "shieldwall"
MAX_TTL_S = 3600.0


class InvalidAssertion(ShieldwallError):
    """The assertion was refused. ``reason`` is for the operator's log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"agent assertion refused: {reason}")


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM, or from the 32 raw bytes in base64."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as e:
        raise ShieldwallError(f"not an Ed25519 public key (PEM or base64 of 32 bytes): {e}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ShieldwallError("not an Ed25519 public key")
    return key


class AgentKey:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self.private = private

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | Path) -> AgentKey:
        p = Path(path)
        if p.exists():
            key = serialization.load_pem_private_key(p.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ShieldwallError(f"{p} does not hold an Ed25519 private key")
            return cls(key)
        k = cls.generate()
        p.parent.mkdir(parents=True, exist_ok=True)
        pem = k.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as f:
            f.write(pem)
        return k

    def public_b64(self) -> str:
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def assertion(self, *, issuer: str, agent: str | None = None, role: str, task: str | None = None,
                  audience: str = DEFAULT_AUDIENCE, ttl: float = 60.0,
                  now: float | None = None) -> str:
        """Sign an assertion that ``agent`` (default: the issuer itself) acts in ``role``."""
        t = time.time() if now is None else now
        claims = {"iss": issuer, "sub": agent or issuer, "aud": audience, "role": role,
                  "iat": int(t), "nbf": int(t), "exp": int(t + ttl), "jti": secrets.token_hex(12)}
        if task is not None:
            claims["task"] = task
        return jwt.encode(claims, self.private, algorithm=ALGORITHM)


@dataclass(frozen=True)
class Assertion:
    issuer: str
    agent: str
    role: str
    task: str | None
    jti: str
    expires: float

    @property
    def delegated(self) -> bool:
        return self.issuer != self.agent


def verify_assertion(
    token: str,
    *,
    public_keys: Mapping[str, Ed25519PublicKey],
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
    max_ttl: float = MAX_TTL_S,
    first_use: Callable[[str], bool] | None = None,
) -> Assertion:
    """Check signature, audience, time window and replay. Raises :class:`InvalidAssertion`."""
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise InvalidAssertion(f"malformed token ({type(e).__name__})") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidAssertion(f"algorithm {header.get('alg')!r} is not accepted (only {ALGORITHM})")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or issuer not in public_keys:
        raise InvalidAssertion(f"issuer {issuer!r} has no public key pinned in the policy")
    t = time.time() if now is None else now
    try:
        claims = jwt.decode(
            token, public_keys[issuer], algorithms=[ALGORITHM], audience=audience,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "role"],
                     "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.PyJWTError as e:
        raise InvalidAssertion(f"{type(e).__name__}: {e}") from None
    exp, iat = float(claims["exp"]), float(claims["iat"])
    nbf = float(claims.get("nbf", iat))
    if t >= exp:
        raise InvalidAssertion("expired")
    if t < nbf - 5:
        raise InvalidAssertion("not valid yet")
    if exp - iat > max_ttl:
        raise InvalidAssertion(f"lifetime {exp - iat:.0f}s exceeds the maximum of {max_ttl:.0f}s")
    jti = str(claims["jti"])
    if first_use is not None and not first_use(jti):
        raise InvalidAssertion("replayed (this jti was already used)")
    task = claims.get("task")
    return Assertion(issuer=issuer, agent=str(claims["sub"]), role=str(claims["role"]),
                     task=None if task is None else str(task), jti=jti, expires=exp)
