"""Secrets the model never sees: placeholders resolved inside the executor, backends
(environment, encrypted file, Vault KV v2), redaction of live values in every form, and
short-lived scoped tokens."""

from .errors import InvalidToken, SecretError

__all__ = ["InvalidToken", "SecretError"]
