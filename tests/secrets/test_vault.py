"""Vault KV v2 against a real OpenBao dev server (Vault's API): read, rotate, fail closed."""

from __future__ import annotations

import hvac
import pytest
from secretkit import Clock

from shieldwall.policy.sections.secrets import SecretsSection
from shieldwall.secrets.backends import VaultBackend
from shieldwall.secrets.errors import SecretError
from shieldwall.secrets.manager import SecretManager
from shieldwall.secrets.placeholders import Ref


def _section(**kw: object) -> SecretsSection:
    return SecretsSection.model_validate({"env": None, "grants": {"pay": ["payments/stripe/*"]},
                                          "ttl": 10, **kw})


def test_reads_kv_v2_and_sees_a_new_version_after_the_ttl(vault_url: str, clock: Clock) -> None:
    admin = hvac.Client(url=vault_url, token="root")
    admin.secrets.kv.v2.create_or_update_secret(
        path="payments/stripe", secret={"api_key": "sk_live_vault_v1_abcdef"}, mount_point="secret")
    backend = VaultBackend(vault_url, token="root")
    value, version = backend.get(Ref("payments/stripe", "api_key"))
    assert value == "sk_live_vault_v1_abcdef" and version == "1"

    m = SecretManager(_section(), {"vault": backend}, clock=clock)
    args = {"key": "{{secret:payments/stripe/api_key}}"}
    assert m.resolve(args, "pay") == {"key": "sk_live_vault_v1_abcdef"}
    admin.secrets.kv.v2.create_or_update_secret(
        path="payments/stripe", secret={"api_key": "sk_live_vault_v2_ghijkl"}, mount_point="secret")
    assert m.resolve(args, "pay") == {"key": "sk_live_vault_v1_abcdef"}  # cached
    clock.advance(11)
    assert m.resolve(args, "pay") == {"key": "sk_live_vault_v2_ghijkl"}
    assert m.redactor.redact("sk_live_vault_v1_abcdef sk_live_vault_v2_ghijkl") == \
        "[REDACTED] [REDACTED]"


def test_wrong_token_or_missing_key_fails_without_values(vault_url: str) -> None:
    with pytest.raises(SecretError) as e:
        VaultBackend(vault_url, token="not-the-token").get(Ref("payments/stripe", "api_key"))
    assert "Forbidden" in str(e.value) or "cannot read" in str(e.value)
    with pytest.raises(SecretError):
        VaultBackend(vault_url, token="root").get(Ref("payments/stripe", "nope"))


def test_unreachable_vault_fails_closed() -> None:
    b = VaultBackend("http://127.0.0.1:1", token="root", timeout=0.5)
    with pytest.raises(SecretError):
        b.get(Ref("payments/stripe", "api_key"))
