"""open_beneath confines at open time: a symlink swapped in after the check cannot escape."""

from __future__ import annotations

import os

import pytest

from shieldwall import confine
from shieldwall.confine import ConfinementError, open_beneath, read_text_beneath
from shieldwall.policy.load import parse_policy

from .conftest import make_wall


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("fine")
    (root / "sub" / "deep.txt").write_text("deep")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return root


@pytest.fixture(params=["openat2", "walk"])
def mode(request, monkeypatch):
    if request.param == "openat2" and not confine.HAS_OPENAT2:
        pytest.skip("openat2 not available on this kernel")
    monkeypatch.setattr(confine, "HAS_OPENAT2", request.param == "openat2")
    return request.param


def test_reads_inside(tree, mode):
    assert read_text_beneath(tree, "ok.txt") == "fine"
    assert read_text_beneath(tree, "sub/deep.txt") == "deep"


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", "ok.txt\x00"])
def test_escapes_refused(tree, mode, path):
    with pytest.raises(ConfinementError):
        open_beneath(tree, path)


def test_symlink_out_refused(tree, mode):
    os.symlink(tree.parent / "secret.txt", tree / "link.txt")
    os.symlink("/proc/self/root/etc/passwd", tree / "magic.txt")
    for name in ("link.txt", "magic.txt"):
        with pytest.raises(ConfinementError):
            open_beneath(tree, name)


def test_symlink_swap_after_policy_check_cannot_escape(tree, mode, tmp_path):
    """The race a path check alone loses: check passes on a file, then it becomes a link."""
    policy = parse_policy("roles:\n  r: {tools: [read]}\ntools:\n  read:\n    args:\n"
                          "      path: {path: {roots: [root]}}\n")
    w = make_wall(policy, tmp_path)
    opened: list[str] = []

    @w.tool
    def read(path: str) -> str:
        # attacker wins the race between the gate's check and the open
        (tree / "victim.txt").unlink()
        os.symlink(tmp_path / "secret.txt", tree / "victim.txt")
        text = read_text_beneath(tree, path)
        opened.append(text)
        return text

    (tree / "victim.txt").write_text("harmless")
    from shieldwall import ToolError

    with w.session(agent="a", role="r") as s, pytest.raises(ToolError, match="ConfinementError"):
        s.call("read", {"path": "victim.txt"})
    assert opened == []
