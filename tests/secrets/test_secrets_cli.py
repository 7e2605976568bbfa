"""``shieldwall secrets``: values go in through stdin and never come out."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from shieldwall.secrets.backends import FileBackend
from shieldwall.secrets.cli import app
from shieldwall.secrets.placeholders import Ref

POLICY = """
version: 1
secrets:
  file: {path: .shieldwall/secrets.enc, key_file: .shieldwall/secrets.key}
"""


def test_init_set_list_round_trip_without_printing_values(tmp_path: Path) -> None:
    pol = tmp_path / "shieldwall.yaml"
    pol.write_text(POLICY)
    r = CliRunner()
    assert r.invoke(app, ["init", "-p", str(pol)]).exit_code == 0
    key = tmp_path / ".shieldwall/secrets.key"
    assert key.stat().st_mode & 0o077 == 0  # owner only
    res = r.invoke(app, ["set", "stripe/api_key", "-p", str(pol)], input="sk_live_cli_123456\n")
    assert res.exit_code == 0 and "sk_live_cli_123456" not in res.output
    listed = r.invoke(app, ["list", "-p", str(pol)])
    assert listed.output.strip() == "stripe/api_key"
    assert b"sk_live_cli_123456" not in (tmp_path / ".shieldwall/secrets.enc").read_bytes()
    fb = FileBackend(tmp_path / ".shieldwall/secrets.enc", key_file=key)
    assert fb.get(Ref("stripe", "api_key"))[0] == "sk_live_cli_123456"
    pk = r.invoke(app, ["public-key", "-p", str(pol)])
    assert pk.output.startswith("-----BEGIN PUBLIC KEY-----")
