"""Errors of the secrets room. Messages name secrets by reference, never by value."""

from __future__ import annotations

from ..errors import ShieldwallError


class SecretError(ShieldwallError):
    """A secret could not be resolved (unknown, not granted, backend unreachable)."""


class InvalidToken(ShieldwallError):
    """A token was refused. Every failed check raises this same type with the same
    message, so a caller learns nothing from which check failed; ``reason`` says which,
    for the service's own log."""

    def __init__(self, reason: str) -> None:
        super().__init__("token refused")
        self.reason = reason
