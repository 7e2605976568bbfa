"""A token broker: short-lived, scoped, signed credentials minted per tool invocation.

Tokens are JWTs (RFC 7519) signed with Ed25519 (``EdDSA``, RFC 8037) through PyJWT.
Claims: ``iss``, ``sub`` (agent), ``sid`` (session), ``tool``, ``aud``, ``scope``
(space-separated, ⊆ what the policy grants the tool), ``iat``/``nbf``/``exp``, ``jti`` and
``max_uses``. Revocation (by token, session or agent) and use counts live in a
:class:`~shieldwall.stores.CounterStore` — memory or Redis — so a revocation takes effect
at the next verification, in every process that shares the store. The wall's kill switch
(``wall.kill(session=..., agent=...)``) writes the same keys, so it revokes tokens too.

A downstream service checks a token with :func:`verify_token`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..stores import CounterStore, StoreError
from .errors import InvalidToken, SecretError

ALGORITHM = "EdDSA"


def load_or_create_key(path: str | Path) -> Ed25519PrivateKey:
    """The broker's signing key from a PEM file; a new one (mode 0600) if missing."""
    p = Path(path)
    if p.exists():
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SecretError(f"{p} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    p.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class TokenBroker:
    def __init__(self, key: Ed25519PrivateKey, *, store: CounterStore,
                 grants: dict[str, tuple[str, frozenset[str], float, int]],
                 issuer: str = "shieldwall", clock: Callable[[], float] = time.time) -> None:
        """``grants``: tool → (audience, scopes, ttl seconds, max uses)."""
        self._key = key
        self.public_key = key.public_key()
        self.store = store
        self.grants = grants
        self.issuer = issuer
        self.clock = clock

    def issue(self, *, tool: str, session: str, agent: str,
              scopes: Iterable[str] | None = None, ttl: float | None = None,
              max_uses: int | None = None) -> str:
        """A token for one invocation of ``tool``. Scopes, lifetime and uses can only be
        narrowed from the tool's grant, never widened."""
        grant = self.grants.get(tool)
        if grant is None:
            raise SecretError(f"tool {tool!r} has no token grant (secrets.tokens.grants)")
        audience, allowed, g_ttl, g_uses = grant
        want = frozenset(allowed if scopes is None else scopes)
        extra = want - allowed
        if extra:
            raise SecretError(f"{tool}: scopes {sorted(extra)} exceed the grant "
                              f"({sorted(allowed)})")
        if self._revoked(session=session, agent=agent):
            raise SecretError(f"session {session} / agent {agent!r} is revoked; no tokens")
        now = self.clock()
        life = g_ttl if ttl is None else min(ttl, g_ttl)
        uses = g_uses if max_uses is None else min(max_uses, g_uses)
        claims = {
            "iss": self.issuer, "sub": agent, "sid": session, "tool": tool, "aud": audience,
            "scope": " ".join(sorted(want)), "iat": int(now), "nbf": int(now),
            "exp": now + life, "jti": secrets.token_urlsafe(16), "max_uses": uses,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def _revoked(self, *, session: str, agent: str, jti: str | None = None) -> bool:
        keys = ["session:" + session, "agent:" + agent] + ([f"token:{jti}"] if jti else [])
        return self.store.any_revoked(*keys)

    def revoke_token(self, token_or_jti: str) -> None:
        jti = token_or_jti
        if token_or_jti.count(".") == 2:
            jti = jwt.decode(token_or_jti, options={"verify_signature": False})["jti"]
        self.store.revoke("token:" + jti)

    def revoke_session(self, session: str) -> None:
        self.store.revoke("session:" + session)

    def revoke_agent(self, agent: str) -> None:
        self.store.revoke("agent:" + agent)

    def verify(self, token: str, *, audience: str,
               required_scopes: Iterable[str] = ()) -> dict[str, Any]:
        return verify_token(token, public_key=self.public_key, audience=audience,
                            store=self.store, issuer=self.issuer, clock=self.clock,
                            required_scopes=required_scopes)


def verify_token(token: str, *, public_key: Ed25519PublicKey | bytes, audience: str,
                 store: CounterStore, issuer: str | None = "shieldwall",
                 clock: Callable[[], float] = time.time,
                 required_scopes: Iterable[str] = (), leeway: float = 0.0) -> dict[str, Any]:
    """What a downstream service calls before honouring a token.

    Checks, in order: signature (Ed25519 only — ``none`` and HMAC are refused), issuer,
    audience, not-before and expiry (by ``clock``), revocation of the token, its session
    and its agent, the required scopes, and finally consumes one use (atomic in the
    store). Every failure raises :class:`InvalidToken`; ``.reason`` says which check.
    Returns the claims.
    """
    key: Any = public_key
    if isinstance(public_key, bytes):
        key = serialization.load_pem_public_key(public_key)
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[ALGORITHM], audience=audience, issuer=issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "require": ["exp", "nbf", "jti", "sid", "sub", "aud", "max_uses"]})
    except jwt.InvalidAudienceError:
        raise InvalidToken("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise InvalidToken("wrong issuer") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("bad signature") from None
    except jwt.PyJWTError as e:
        raise InvalidToken(f"malformed: {type(e).__name__}") from None
    now = clock()
    if now + leeway < float(claims["nbf"]):
        raise InvalidToken("not yet valid")
    if now - leeway >= float(claims["exp"]):
        raise InvalidToken("expired")
    try:
        for key_name in (f"token:{claims['jti']}", f"session:{claims['sid']}",
                         f"agent:{claims['sub']}"):
            if store.is_revoked(key_name):
                raise InvalidToken(f"revoked ({key_name.split(':', 1)[0]})")
        have = set(str(claims.get("scope", "")).split())
        missing = set(required_scopes) - have
        if missing:
            raise InvalidToken(f"missing scopes {sorted(missing)}")
        ok, _ = store.take(f"tokuse:{claims['jti']}", int(claims["max_uses"]))
    except StoreError as e:
        raise InvalidToken(f"store unavailable: {e}") from None
    if not ok:
        raise InvalidToken("used up")
    return claims
