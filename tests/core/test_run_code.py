"""Session.run_code: a CodeRun through the gate into the real bubblewrap sandbox."""

from __future__ import annotations

import shutil

import pytest

from shieldwall import Denied, Shieldwall
from shieldwall.audit import MemoryAuditLog
from shieldwall.policy.load import parse_policy

pytestmark = pytest.mark.bwrap

POLICY = """
roles:
  coder: {tools: [run_code], code: true}
  reader: {tools: [read_document]}
sandbox:
  backend: bwrap
"""


@pytest.fixture
def wall(tmp_path):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    return Shieldwall(parse_policy(POLICY), base_dir=tmp_path, audit=MemoryAuditLog())


def test_coder_runs_code_without_network(wall):
    with wall.session(agent="a", role="coder") as s:
        r = s.run_code("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), 1)\n"
                       "    print('reached')\nexcept OSError:\n    print('no network')\n")
    assert r.stdout.strip() == "no network"
    runs = [e for e in wall.audit.entries if e.get("kind") == "code_run"]
    assert runs and runs[0]["verdict"] == "allow"


def test_role_without_code_grant_is_refused(wall):
    with wall.session(agent="a", role="reader") as s, pytest.raises(Denied) as e:
        s.run_code("print(1)")
    assert e.value.rules == ["policy.code_not_allowed"]
