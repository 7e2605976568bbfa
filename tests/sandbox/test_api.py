"""The E2B-style face: runs, files, results, secrets, environment, workspaces."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.sandbox import (
    ErrorKind,
    Limits,
    Sandbox,
    SandboxError,
    WeakSandboxRefused,
    backends,
)
from shieldwall.sandbox.runner import TRUNCATION_MARKER, _Stream, redact
from shieldwall.sandbox.workspace import PathEscape

from .conftest import SMALL, backend_or_skip, open_sandbox

pytestmark = pytest.mark.bwrap


def test_run_code_returns_stdout_stderr_and_exit_code(bwrap_sb: Sandbox) -> None:
    r = bwrap_sb.run_code("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    assert (r.stdout, r.stderr, r.exit_code, r.error) == ("out\n", "err\n", 3, None)
    assert r.backend == "bwrap" and not r.ok
    assert r.usage.wall_s > 0 and r.usage.max_rss_bytes > 0


def test_run_argv_and_shell(bwrap_sb: Sandbox) -> None:
    assert bwrap_sb.run(["echo", "a", "b"]).stdout == "a b\n"
    assert bwrap_sb.run_code("echo $((6*7))", language="sh").stdout == "42\n"


def test_stdin_reaches_the_program(bwrap_sb: Sandbox) -> None:
    r = bwrap_sb.run_code("import sys; print(sys.stdin.read().upper())", stdin=b"hello")
    assert r.stdout == "HELLO\n"


def test_large_program_goes_in_on_stdin(bwrap_sb: Sandbox) -> None:
    code = "x = 1\n" * 20000 + "print(x + 1)\n"
    assert bwrap_sb.run_code(code).stdout == "2\n"


def test_files_in_and_out_of_the_work_directory(bwrap_sb: Sandbox) -> None:
    bwrap_sb.write_file("data/in.txt", "3 4")
    r = bwrap_sb.run_code(
        "a, b = map(int, open('data/in.txt').read().split())\n"
        "open('out.txt', 'w').write(str(a * b))")
    assert r.ok, r.stderr
    assert bwrap_sb.read_file("out.txt") == b"12"
    assert bwrap_sb.list_files() == ["data/in.txt", "out.txt"]


def test_work_directory_is_private_per_sandbox() -> None:
    backend_or_skip("bwrap")
    with open_sandbox("bwrap") as a, open_sandbox("bwrap") as b:
        a.write_file("mine.txt", "a")
        r = b.run_code("import os; print(os.listdir('.'))")
        assert r.stdout == "[]\n"
        wd = a.workdir
    assert not os.path.exists(wd)  # ephemeral: gone with the sandbox


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "", "."])
def test_host_side_file_paths_stay_inside(bwrap_sb: Sandbox, path: str) -> None:
    with pytest.raises(PathEscape):
        bwrap_sb.read_file(path)
    with pytest.raises(PathEscape):
        bwrap_sb.write_file(path, "x")


def test_host_side_write_does_not_follow_a_planted_symlink(bwrap_sb: Sandbox,
                                                           tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("original")
    r = bwrap_sb.run_code(f"import os; os.symlink({str(target)!r}, 'link'); "
                          "os.mkdir('d'); os.symlink('/etc', 'd/etc')")
    assert r.ok, r.stderr
    with pytest.raises(PathEscape):
        bwrap_sb.write_file("link", "overwritten")
    with pytest.raises(PathEscape):
        bwrap_sb.read_file("d/etc/passwd")
    assert target.read_text() == "original"


def test_secrets_are_present_inside_and_redacted_outside() -> None:
    backend_or_skip("bwrap")
    secret = "sk-live-" + os.urandom(12).hex()
    with open_sandbox("bwrap", secrets={"API_KEY": secret}) as sb:
        r = sb.run_code("import os, sys\nk = os.environ['API_KEY']\nprint(k)\n"
                        "print('key=' + k, file=sys.stderr)\nprint(len(k))")
    assert secret not in r.stdout + r.stderr
    assert "[REDACTED:API_KEY]" in r.stdout and "[REDACTED:API_KEY]" in r.stderr
    assert r.stdout.splitlines()[-1] == str(len(secret))


def test_only_granted_environment_is_present(host_canary: str) -> None:
    backend_or_skip("bwrap")
    with open_sandbox("bwrap", env={"GRANTED": "yes"}) as sb:
        r = sb.run_code("import os, json; print(json.dumps(dict(os.environ)))")
    import json

    env = json.loads(r.stdout)
    assert env["GRANTED"] == "yes"
    assert host_canary not in r.stdout
    assert set(env) <= {"GRANTED", "PATH", "HOME", "LANG", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                        "PYTHONUNBUFFERED", "PWD"}


@given(secret=st.text(alphabet="abcdefghij0123456789-_", min_size=6, max_size=40),
       cap=st.integers(min_value=1, max_value=80), prefix=st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_a_secret_cut_by_truncation_does_not_leak(secret: str, cap: int, prefix: str) -> None:
    s = _Stream(cap)
    s.feed((prefix + secret + "tail").encode())
    out = s.text({"K": secret})
    assert secret not in out
    kept = out.split(TRUNCATION_MARKER.split("{")[0])[0]
    # no more than 3 characters of the secret survive at the cut
    for k in range(4, len(secret) + 1):
        assert not kept.endswith(secret[:k])


def test_redact_prefers_longest_secret_first() -> None:
    assert redact("abcdefgh", {"A": "abcd", "B": "abcdefgh"}) == "[REDACTED:B]"


def test_output_is_truncated_with_a_marker_and_the_run_stopped(bwrap_sb: Sandbox) -> None:
    r = bwrap_sb.run_code("print('x' * 200000)")
    assert r.error is ErrorKind.OUTPUT_LIMIT and r.truncated
    assert "[shieldwall: output truncated at" in r.stdout
    assert r.usage.stdout_bytes > SMALL.stdout_bytes


def test_limits_can_be_tightened_per_run(bwrap_sb: Sandbox) -> None:
    r = bwrap_sb.run_code("import time; time.sleep(5)", limits={"wall_s": 0.5})
    assert r.error is ErrorKind.TIMEOUT and r.exit_code is None
    with pytest.raises(ValueError, match="unknown sandbox limits"):
        bwrap_sb.run_code("pass", limits={"bogus": 1})


def test_memory_and_pids_usage_is_reported(bwrap_sb: Sandbox) -> None:
    r = bwrap_sb.run_code("x = bytearray(20 << 20); import os; os.system('true')")
    assert r.ok, r.stderr
    assert r.usage.memory_peak_bytes >= 20 << 20
    assert r.usage.pids_peak >= 2


def test_named_workspace_persists_with_its_quota(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    small = Limits(disk_bytes=2 << 20, wall_s=5)
    with Sandbox(small, backend="bwrap", workspace="proj", workspaces_dir=tmp_path) as sb:
        assert sb.run_code("open('notes.txt', 'w').write('kept')").ok
    with Sandbox(small, backend="bwrap", workspace="proj", workspaces_dir=tmp_path) as sb:
        assert sb.run_code("print(open('notes.txt').read())").stdout == "kept\n"
        r = sb.run_code("open('big', 'wb').write(b'x' * (4 << 20))")
        assert r.error is ErrorKind.DISK_LIMIT
    assert (tmp_path / "proj" / "notes.txt").read_text() == "kept"


def test_named_workspace_is_exclusive(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap", workspace="w1", workspaces_dir=tmp_path), \
            pytest.raises(RuntimeError, match="in use"):
        Sandbox(SMALL, backend="bwrap", workspace="w1", workspaces_dir=tmp_path)


def test_workspace_copy_back_drops_setuid_bits_and_devices(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap", workspace="w2", workspaces_dir=tmp_path) as sb:
        assert sb.run_code("import os, shutil; shutil.copy('/usr/bin/id', 'id'); "
                           "os.chmod('id', 0o6755); os.mkfifo('fifo')").ok
    st_mode = (tmp_path / "w2" / "id").stat().st_mode
    assert st_mode & 0o6000 == 0
    assert not (tmp_path / "w2" / "fifo").exists()


def test_invalid_workspace_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid workspace name"):
        Sandbox(SMALL, backend="bwrap", workspace="../etc", workspaces_dir=tmp_path)


def test_process_backend_is_refused_without_allow_weak() -> None:
    with pytest.raises(WeakSandboxRefused):
        Sandbox(SMALL, backend="process")


def test_process_backend_warns_loudly(capfd: pytest.CaptureFixture[str]) -> None:
    with Sandbox(SMALL, backend="process", allow_weak=True) as sb:
        r = sb.run_code("print('ran')")
    assert r.stdout == "ran\n"
    assert "NOT isolation" in capfd.readouterr().err


def test_auto_selects_the_strongest_available() -> None:
    b = backends.select()
    ranks = {n: i for i, n in enumerate(backends.NAMES)}
    for d in backends.doctor():
        if d.available and d.name != "process":
            assert ranks[b.name] <= ranks[d.name]
    assert b.name != "process"


def test_unknown_backend_and_relative_paths_are_refused() -> None:
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        Sandbox(SMALL, backend="docker")
    with pytest.raises(SandboxError, match="absolute"):
        Sandbox(SMALL, backend="bwrap", ro_paths=["relative/dir"])


def test_extra_path_unreachable_by_the_sandbox_uid_is_a_sandbox_error(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    if os.geteuid() != 0:
        pytest.skip("only as root does the sandbox run under another uid")
    private = tmp_path / "private"
    private.mkdir()
    os.chmod(tmp_path, 0o700)
    with open_sandbox("bwrap", ro_paths=[str(private)]) as sb:
        r = sb.run_code("print('ran')")
    assert r.error is ErrorKind.SANDBOX_ERROR and "ran" not in r.stdout
    assert "Permission denied" in r.message


def test_extra_read_only_and_read_write_paths() -> None:
    backend_or_skip("bwrap")
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sw-extra-", dir="/tmp"))
    os.chmod(base, 0o755)
    ro, rw = base / "ro", base / "rw"
    ro.mkdir(mode=0o755)
    rw.mkdir()
    (ro / "in.txt").write_text("data")
    os.chmod(ro / "in.txt", 0o644)
    if os.geteuid() == 0:  # the documented way to grant a path: group 65534, g+rwX
        os.chown(rw, 0, 65534)
        os.chmod(rw, 0o770)
    try:
        _extra_paths(ro, rw)
    finally:
        shutil.rmtree(base)


def _extra_paths(ro: Path, rw: Path) -> None:
    with open_sandbox("bwrap", ro_paths=[str(ro)], rw_paths=[str(rw)]) as sb:
        r = sb.run_code(f"print(open('{ro}/in.txt').read())\n"
                        f"open('{rw}/out.txt', 'w').write('ok')\n"
                        f"try:\n    open('{ro}/x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)")
    assert r.stdout == "data\nro 30\n", r.stderr
    assert (rw / "out.txt").read_text() == "ok"


def test_closed_sandbox_refuses_runs() -> None:
    backend_or_skip("bwrap")
    sb = open_sandbox("bwrap")
    sb.close()
    with pytest.raises(SandboxError, match="closed"):
        sb.run_code("pass")


@pytest.mark.parametrize("need", ["proxy_network", "subprocesses", "no_network"])
def test_auto_picks_a_backend_that_claims_what_is_needed(need: str) -> None:
    b = backends.select(needs=frozenset({need}))
    assert need in b.guarantees


def test_naming_a_backend_that_lacks_a_need_is_refused() -> None:
    backend_or_skip("wasm")
    with pytest.raises(SandboxError, match="does not provide"):
        Sandbox(SMALL, backend="wasm", needs=["subprocesses"])


def test_each_sandbox_runs_under_its_own_unprivileged_host_uid() -> None:
    backend_or_skip("bwrap")
    if os.geteuid() != 0:
        pytest.skip("only root can hand sandboxes their own host uid")
    from shieldwall.sandbox.bwrap import HOST_UID_MIN

    with open_sandbox("bwrap") as a, open_sandbox("bwrap") as b:
        assert a.run_code("open('made-inside', 'w').write('x')").ok
        owner = os.stat(Path(a.workdir) / "made-inside").st_uid
        assert owner >= HOST_UID_MIN and owner != 65534
        assert os.stat(b.workdir).st_uid not in (owner, 0, 65534)
        # inside, both still see themselves as uid 65534 ("sandbox")
        assert b.run(["id", "-un"]).stdout == "sandbox\n"


def test_a_program_killed_by_a_signal_is_reported_as_killed(backend_name: str) -> None:
    if backend_name == "wasm":
        pytest.skip("wasm has no signals")
    with open_sandbox(backend_name) as sb:
        r = sb.run_code("import ctypes; ctypes.string_at(0)")  # SIGSEGV, even as pid 1
    assert r.error is ErrorKind.KILLED, (r.error, r.message, r.stderr[-300:])
    assert r.signal == signal.SIGSEGV and r.exit_code is None
