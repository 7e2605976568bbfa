"""Fixtures for the secrets tests (helpers live in ``secretkit.py``)."""

from __future__ import annotations

from secretkit import clock, sqlite_audit, vault_url

__all__ = ["clock", "sqlite_audit", "vault_url"]
