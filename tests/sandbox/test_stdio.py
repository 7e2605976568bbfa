"""wrap_command: a long-lived command with stdio pipes inside the bwrap sandbox."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shieldwall.sandbox import SandboxError, wrap_command

from .conftest import backend_or_skip

pytestmark = [pytest.mark.bwrap, pytest.mark.timeout(60)]

PROBE = r"""
import os, socket, sys
for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    if cmd == "id":
        out = f"{os.getuid()} {socket.gethostname()} {os.getcwd()} {sorted(os.environ)}"
    elif cmd == "read":
        try:
            out = "CONTENT " + open(arg).read(100)
        except OSError as e:
            out = f"DENIED {e.errno}"
    elif cmd == "connect":
        try:
            socket.create_connection(("127.0.0.1", int(arg)), timeout=2).close()
            out = "CONNECTED"
        except OSError as e:
            out = f"DENIED {e.errno}"
    elif cmd == "spawn":
        import subprocess
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", arg],
                         start_new_session=True)
        out = "SPAWNED"
    elif cmd == "seccomp":
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        out = f"unshare={libc.unshare(0x20000)} errno={ctypes.get_errno()}"
    else:
        out = "?"
    print(out, flush=True)
"""


def _ask(p: subprocess.Popen[str], line: str) -> str:
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def _alive(tag: str) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "cmdline").read_bytes():
                    return True
            except OSError:
                pass
    return False


def test_stdio_command_is_isolated_and_killed_on_exit(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    secret = tmp_path / "host.txt"
    secret.write_text("HOST-FILE")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    tag = f"sw-{uuid.uuid4().hex}"
    with wrap_command([sys.executable, "-c", PROBE], env={"GRANTED": "1"}) as argv:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env={"HOST_ONLY": "x", "PATH": "/usr/bin:/bin"})
        try:
            who = _ask(p, "id")
            assert who.startswith("65534 sandbox /workspace")
            assert "GRANTED" in who and "HOST_ONLY" not in who
            assert _ask(p, "read /etc/shadow").startswith("DENIED")
            assert _ask(p, f"read {secret}").startswith("DENIED")
            assert _ask(p, f"connect {port}").startswith("DENIED")
            assert _ask(p, "seccomp") == "unshare=-1 errno=1"
            assert _ask(p, f"spawn {tag}") == "SPAWNED"
            time.sleep(0.2)
            assert _alive(tag)
        finally:
            assert p.stdin is not None
            p.stdin.close()
            p.wait(10)
    srv.close()
    # leaving the context killed the detached child too (cgroup)
    end = time.monotonic() + 5
    while _alive(tag) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(tag)


def test_argv_is_one_shot_and_bad_paths_refused(tmp_path: Path) -> None:
    backend_or_skip("bwrap")
    with pytest.raises(SandboxError):
        with wrap_command(["true"], ro_paths=["/nonexistent/x"]):
            pass
    with wrap_command(["/bin/echo", "hi"]) as argv:
        assert subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout == "hi\n"
        again = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        assert again.returncode != 0 and again.stdout == ""
