"""``shieldwall sandbox doctor | run``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from shieldwall.sandbox.cli import app

from .conftest import backend_or_skip

runner = CliRunner()


def test_doctor_lists_every_backend_with_a_reason() -> None:
    r = runner.invoke(app, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = {d["backend"]: d for d in json.loads(r.output)}
    assert set(rows) == {"bwrap", "gvisor", "wasm", "process"}
    for d in rows.values():
        assert d["detail"], d  # available or not, it says why
    assert rows["process"]["available"] and "weak" in rows["process"]["detail"]


def test_doctor_table_names_the_auto_choice() -> None:
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0
    assert "auto selects:" in r.output


@pytest.mark.bwrap
def test_run_code_exits_with_the_program_status() -> None:
    backend_or_skip("bwrap")
    r = runner.invoke(app, ["run", "--backend", "bwrap", "--code",
                            "import sys; print('hi'); sys.exit(5)"])
    assert r.exit_code == 5 and "hi" in r.output


@pytest.mark.bwrap
def test_run_command_as_json() -> None:
    backend_or_skip("bwrap")
    r = runner.invoke(app, ["run", "--backend", "bwrap", "--json", "--", "sh", "-c", "id -u"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["stdout"] == "65534\n"


def test_run_refuses_the_weak_backend_without_the_flag() -> None:
    r = runner.invoke(app, ["run", "--backend", "process", "--code", "pass"])
    assert r.exit_code == 2 and "allow_weak" in r.output
