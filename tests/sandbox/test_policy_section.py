"""The ``sandbox:`` policy section and its resolution per role and tool."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shieldwall.policy.sections.sandbox import SandboxSection, parse_size
from shieldwall.sandbox.settings import resolve


@given(st.integers(min_value=1, max_value=1 << 40))
def test_parse_size_accepts_plain_bytes(n: int) -> None:
    assert parse_size(n) == n


@pytest.mark.parametrize(("text", "expected"), [("64M", 64 << 20), ("1G", 1 << 30),
                                                ("512k", 512 << 10), ("2MiB", 2 << 20),
                                                ("100", 100), ("1.5M", 3 << 19)])
def test_parse_size_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "-1", "0", "12X", "M", True, 0, None])
def test_parse_size_rejects_nonsense(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_resolution_order_section_role_tool() -> None:
    s = SandboxSection.model_validate({
        "limits": {"wall": "30s", "memory": "256M"},
        "env": {"A": "section", "B": "section"},
        "ro_paths": ["/opt/data"],
        "roles": {"analyst": {"limits": {"memory": "1G"}, "env": {"B": "role"},
                              "network": "proxy", "workspaces": True}},
        "tools": {"run_code": {"limits": {"wall": 5}, "languages": ["python"],
                               "ro_paths": ["/opt/models"]}},
    })
    eff = resolve(s, "analyst", "run_code")
    assert eff.limits.wall_s == 5 and eff.limits.memory_bytes == 1 << 30
    assert eff.env == {"A": "section", "B": "role"}
    assert eff.ro_paths == ("/opt/data", "/opt/models")
    assert eff.network == "proxy" and eff.workspaces
    assert eff.languages == frozenset({"python"})
    other = resolve(s, "intern", "run_shell")
    assert other.limits.memory_bytes == 256 << 20 and other.network == "none"
    assert not other.workspaces and other.languages == frozenset({"python", "sh"})


@pytest.mark.parametrize("paths", [["/"], ["relative"], ["/proc/1"], ["/sys"], ["/a/../etc"]])
def test_dangerous_ro_paths_are_refused(paths: list[str]) -> None:
    with pytest.raises(ValidationError):
        SandboxSection.model_validate({"ro_paths": paths})


@pytest.mark.parametrize("path", ["/etc", "/usr/lib", "/root/.ssh", "/home/me"])
def test_system_paths_cannot_be_bound_read_write(path: str) -> None:
    with pytest.raises(ValidationError):
        SandboxSection.model_validate({"rw_paths": [path]})
    SandboxSection.model_validate({"ro_paths": [path]})


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONPATH", "1BAD", "A-B"])
def test_dangerous_or_invalid_env_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        SandboxSection.model_validate({"env": {name: "x"}})


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        SandboxSection.model_validate({"backend": "docker"})
    with pytest.raises(ValidationError):
        SandboxSection.model_validate({"limits": {"gpu": 1}})
