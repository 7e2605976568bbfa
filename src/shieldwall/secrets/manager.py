"""The secret manager: resolves placeholders for one tool inside the executor, checks
the policy's grants, caches values for ``ttl`` seconds (rotation without restart), and
keeps the redactor's set of live values current.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..policy.sections.secrets import SecretsSection
from .backends import Backend, EnvBackend, FileBackend, VaultBackend
from .errors import SecretError
from .placeholders import Ref, parse_ref, refs_in, substitute
from .redact import Redactor

if TYPE_CHECKING:
    from .tokens import TokenBroker


def backends_from(section: SecretsSection, base_dir: Path) -> dict[str, Backend]:
    out: dict[str, Backend] = {}
    if section.env is not None:
        out["env"] = EnvBackend(section.env.prefix)
    if section.file is not None:
        f = section.file
        out["file"] = FileBackend(base_dir / f.path, key_file=base_dir / f.key_file,
                                  key_env=f.key_env)
    if section.vault is not None:
        v = section.vault
        out["vault"] = VaultBackend(v.url, token_env=v.token_env, mount=v.mount,
                                    namespace=v.namespace, timeout=v.timeout)
    return out


class SecretManager:
    def __init__(self, section: SecretsSection, backends: dict[str, Backend], *,
                 redactor: Redactor | None = None, clock: Callable[[], float] = time.time,
                 broker: TokenBroker | None = None) -> None:
        self.section = section
        self.backends = backends
        self.order = [b for b in section.order if b in backends]
        self.redactor = redactor or Redactor(encodings=section.redact_encodings,
                                             min_chars=section.min_redact_chars)
        self.clock = clock
        self.broker = broker
        self._lock = threading.Lock()
        self._cache: dict[Ref, tuple[str, str, float]] = {}  # value, version, read at
        self._grants: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        for tool, refs in section.grants.items():
            exact = frozenset(r for r in refs if not r.endswith("/*"))
            prefixes = frozenset(r[:-2] for r in refs if r.endswith("/*"))
            self._grants[tool] = (exact, prefixes)

    # ----------------------------------------------------------------- grants

    def granted(self, tool: str, ref: Ref) -> bool:
        g = self._grants.get(tool)
        if g is None:
            return False
        exact, names = g
        return str(ref) in exact or ref.name in names

    def check_args(self, tool: str, args: Any) -> list[str]:
        """Problems with the placeholders in ``args`` for ``tool`` (empty: fine)."""
        problems = []
        secret_refs, token_refs = refs_in(args)
        for text in secret_refs:
            try:
                ref = parse_ref(text)
            except ValueError as e:
                problems.append(str(e))
                continue
            if not self.granted(tool, ref):
                problems.append(f"secret {ref} is not granted to tool {tool!r} "
                                f"(add it to secrets.grants.{tool})")
        for scopes in token_refs:
            if self.broker is None or tool not in self.broker.grants:
                problems.append(f"tool {tool!r} has no token grant (secrets.tokens.grants)")
                continue
            asked = set((scopes or "").replace(",", " ").split())
            extra = asked - self.broker.grants[tool][1]
            if extra:
                problems.append(f"{tool}: token scopes {sorted(extra)} exceed the grant")
        return problems

    # ----------------------------------------------------------------- values

    def get(self, ref: Ref) -> str:
        now = self.clock()
        hit = self._cache.get(ref)
        if hit is not None and now - hit[2] < self.section.ttl:
            return hit[0]
        value, version = self._read(ref)
        with self._lock:
            old = self._cache.get(ref)
            self._cache[ref] = (value, version, now)
        if old is not None and old[0] != value:
            # rotated: the old value may still be in flight somewhere; keep hiding it
            self.redactor.retire(old[0], now + self.section.grace)
        self.redactor.add(value)
        self.redactor.expire(now)
        return value

    def _read(self, ref: Ref) -> tuple[str, str]:
        pinned = self.section.sources.get(ref.name)
        names = [pinned] if pinned else self.order
        misses = []
        for name in names:
            backend = self.backends.get(name)
            if backend is None:
                misses.append(f"{name}: not configured")
                continue
            try:
                return backend.get(ref)
            except SecretError as e:
                misses.append(str(e))
        raise SecretError(f"secret {ref} not found ({'; '.join(misses) or 'no backends'})")

    def preload(self, refs: list[str] | None = None) -> list[str]:
        """Read the granted secrets now, so the redactor knows them before any tool runs.
        Returns the references that could not be read (their errors name no values)."""
        failed = []
        wanted = refs if refs is not None else sorted(
            {r for rs in self.section.grants.values() for r in rs if not r.endswith("/*")})
        for text in wanted:
            try:
                self.get(parse_ref(text))
            except (SecretError, ValueError):
                failed.append(text)
        return failed

    # ----------------------------------------------------------------- the executor hook

    def resolve(self, args: dict[str, Any], tool: str, session_id: str = "",
                agent: str = "") -> dict[str, Any]:
        """``args`` with placeholders replaced, for ``tool`` only. Raises SecretError for a
        secret the tool is not granted (the gate refuses those earlier too)."""
        problems = self.check_args(tool, args)
        if problems:
            raise SecretError("; ".join(problems))

        def secret(text: str) -> str:
            return self.get(parse_ref(text))

        def token(scopes: str | None) -> str:
            assert self.broker is not None
            wanted = (scopes or "").replace(",", " ").split() or None
            tok = self.broker.issue(tool=tool, session=session_id, agent=agent, scopes=wanted)
            # a live credential: hide it like any other secret until it expires
            self.redactor.add(tok, self.clock() + self.broker.grants[tool][2] + 1.0)
            return tok

        out: dict[str, Any] = substitute(args, secret, token)
        return out
