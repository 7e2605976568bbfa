"""Where secret values live. Each backend answers ``get(ref) -> (value, version)``.

* :class:`EnvBackend` — process environment (``SHIELDWALL_SECRET_<NAME>_<KEY>``).
* :class:`FileBackend` — a Fernet-encrypted JSON file under ``.shieldwall/`` (the embedded
  default); the key comes from an env var or a key file (mode 0600).
* :class:`VaultBackend` — HashiCorp Vault / OpenBao KV v2 through ``hvac``.

Versions let the manager notice rotation; backends never log or echo values.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretError
from .placeholders import Ref

_ENV_SAFE = re.compile(r"[^A-Za-z0-9]+")


class Backend(Protocol):
    name: str

    def get(self, ref: Ref) -> tuple[str, str]:
        """(value, version). Raises :class:`SecretError` when it is not there."""
        ...


class EnvBackend:
    name = "env"

    def __init__(self, prefix: str = "SHIELDWALL_SECRET_",
                 environ: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self._env = environ if environ is not None else os.environ

    def var(self, ref: Ref) -> str:
        return self.prefix + _ENV_SAFE.sub("_", f"{ref.name}_{ref.key}").upper()

    def get(self, ref: Ref) -> tuple[str, str]:
        v = self._env.get(self.var(ref))
        if v is None:
            raise SecretError(f"secret {ref} is not set (environment variable {self.var(ref)})")
        return v, "env"


class FileBackend:
    """``{name: {key: value}}`` as JSON, encrypted with Fernet (AES-128-CBC + HMAC-SHA256).

    The file is re-read when its modification time changes, so a rotated value is seen
    without a restart.
    """

    name = "file"

    def __init__(self, path: str | Path, *, key: bytes | None = None,
                 key_file: str | Path | None = None, key_env: str | None = None) -> None:
        self.path = Path(path)
        self._key = key
        self._key_file = Path(key_file) if key_file else None
        self._key_env = key_env
        self._lock = threading.Lock()
        self._cache: tuple[float, int, dict[str, dict[str, str]]] | None = None

    def _fernet(self) -> Fernet:
        key = self._key
        if key is None and self._key_env and os.environ.get(self._key_env):
            key = os.environ[self._key_env].encode()
        if key is None and self._key_file is not None:
            try:
                key = self._key_file.read_bytes().strip()
            except OSError as e:
                raise SecretError(f"secrets key file {self._key_file} unreadable: "
                                  f"{type(e).__name__}") from None
        if key is None:
            raise SecretError("no key for the encrypted secrets file (set the key env var "
                              "or create the key file)")
        try:
            return Fernet(key)
        except ValueError:
            raise SecretError("the secrets file key is not a valid Fernet key") from None

    @staticmethod
    def generate_key(key_file: str | Path) -> bytes:
        """Create a new key file readable by its owner only."""
        p = Path(key_file)
        p.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        return key

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime, st.st_size)
        with self._lock:
            if self._cache is not None and self._cache[:2] == stamp:
                return self._cache[2]
            try:
                data = json.loads(self._fernet().decrypt(self.path.read_bytes()))
            except InvalidToken:
                raise SecretError(f"{self.path}: cannot decrypt (wrong key or damaged "
                                  "file)") from None
            if not isinstance(data, dict):
                raise SecretError(f"{self.path}: not a mapping of secrets")
            self._cache = (stamp[0], stamp[1], data)
            return data

    def get(self, ref: Ref) -> tuple[str, str]:
        data = self._load()
        entry = data.get(ref.name)
        if not isinstance(entry, dict) or not isinstance(entry.get(ref.key), str):
            raise SecretError(f"secret {ref} is not in {self.path}")
        value: str = entry[ref.key]
        return value, str(self._cache[0] if self._cache else 0)

    def put(self, ref: Ref, value: str) -> None:
        """Set one value (atomic replace of the file)."""
        data = {k: dict(v) for k, v in self._load().items()}
        data.setdefault(ref.name, {})[ref.key] = value
        blob = self._fernet().encrypt(json.dumps(data).encode())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, self.path)
        with self._lock:
            self._cache = None


class VaultBackend:
    """KV version 2: ``{{secret:payments/stripe/api_key}}`` reads key ``api_key`` of the
    secret at path ``payments/stripe`` under the mount (``secret`` by default)."""

    name = "vault"

    def __init__(self, url: str, *, token: str | None = None,
                 token_env: str = "VAULT_TOKEN",  # noqa: S107 - the name of a variable
                 mount: str = "secret", namespace: str | None = None,
                 timeout: float = 5.0, client: Any = None) -> None:
        if client is None:
            import hvac

            client = hvac.Client(url=url, token=token or os.environ.get(token_env),
                                 namespace=namespace, timeout=timeout)
        self._client = client
        self.mount = mount

    def get(self, ref: Ref) -> tuple[str, str]:
        try:
            resp = self._client.secrets.kv.v2.read_secret_version(
                path=ref.name, mount_point=self.mount, raise_on_deleted_version=True)
        except Exception as e:  # hvac raises many types; none may carry a value
            raise SecretError(f"vault: cannot read secret {ref.name!r}: "
                              f"{type(e).__name__}") from None
        data = resp.get("data", {})
        values = data.get("data") or {}
        if not isinstance(values.get(ref.key), str):
            raise SecretError(f"vault: secret {ref.name!r} has no key {ref.key!r}")
        version = str((data.get("metadata") or {}).get("version", ""))
        return values[ref.key], version
