"""`mcp.sandbox: true`: the gateway runs the real MCP server inside the bwrap sandbox.

A real SDK server (tests/mcp/servers/prober.py, run by the project venv's interpreter) is
driven through `shieldwall mcp wrap` by the SDK's client; its tools try to read host
files, reach a listener on the host's loopback and see the host's environment.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp_helpers import gateway, server_cmd, stdio_session, text_of, write_policy

pytestmark = [
    pytest.mark.bwrap,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
]

POLICY = """
roles:
  prober:
    tools: [echo, whoami, read_file, write_file, connect]
mcp:
  pin: "off"
  sandbox: true
"""


@pytest.fixture
def planted() -> Iterator[Path]:
    """A world-readable host file the server was never given."""
    d = Path(tempfile.mkdtemp(prefix="sw-planted-", dir="/var/tmp"))
    d.chmod(0o755)
    f = d / "host-secret.txt"
    f.write_text("PLANTED-HOST-SECRET")
    f.chmod(0o644)
    yield f
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP listener on the host's loopback that greets whoever connects."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.sendall(b"HOST-LOOPBACK")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield int(srv.getsockname()[1])
    stop.set()
    t.join(2)
    srv.close()


def _procs_with(tag: str, but: bytes = b"\0shieldwall.mcp\0") -> list[int]:
    """Processes whose command line carries ``tag`` (the gateway's own excepted)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmd and but not in cmd:
                out.append(int(p.name))
    return out


def test_sandboxed_server_serves_calls_and_is_contained(tmp_path: Path, planted: Path,
                                                          listener: int) -> None:
    pol = write_policy(tmp_path, POLICY)
    tag = f"sw-tag-{uuid.uuid4().hex}"
    server = [*server_cmd("prober"), "--tag", tag]
    argv = gateway("wrap", "--policy", str(pol), "--agent", "tester", "--role", "prober",
                   "--", *server)
    # the host side: the server can be reached, and the host listener works from here
    with socket.create_connection(("127.0.0.1", listener), timeout=2) as c:
        assert c.recv(64) == b"HOST-LOOPBACK"
    out: dict[str, str] = {}

    async def main() -> None:
        with anyio.fail_after(60):
            env = {"SW_HOST_ONLY_SECRET": "host-env-secret-value"}
            async with stdio_session(argv, env=env) as s:
                ok = await s.call_tool("echo", {"text": "through the sandbox"})
                assert not ok.is_error
                out["echo"] = text_of(ok)
                for name, args in {
                    "whoami": {},
                    "shadow": {"path": "/etc/shadow"},
                    "passwd": {"path": "/etc/passwd"},
                    "planted": {"path": str(planted)},
                    "root": {"path": "/root/.bashrc"},
                    "environ1": {"path": "/proc/1/environ"},
                }.items():
                    tool = "whoami" if name == "whoami" else "read_file"
                    out[name] = text_of(await s.call_tool(tool, args))
                out["connect"] = text_of(await s.call_tool("connect", {"port": listener}))
                out["write_script_dir"] = text_of(await s.call_tool(
                    "write_file", {"path": str(Path(server[1]).parent / "x.txt"), "text": "x"}))
                out["write_workdir"] = text_of(await s.call_tool(
                    "write_file", {"path": "note.txt", "text": "ok"}))
                # while it runs, the server is a process of a fresh unprivileged host uid
                pids = _procs_with(tag)
                assert pids
                uids = {os.stat(f"/proc/{p}").st_uid for p in pids}
                assert 0 not in uids, uids

    anyio.run(main)
    assert out["echo"] == "through the sandbox"
    who = out["whoami"]
    assert "uid=65534" in who and "host=sandbox" in who and "cwd=/workspace" in who
    assert "SW_HOST_ONLY_SECRET" not in who
    assert out["shadow"].startswith("DENIED:FileNotFoundError")
    assert out["passwd"].startswith("CONTENT:") and "sandbox:x:65534" in out["passwd"]
    assert "root:x:0:0::/:/usr/sbin/nologin" in out["passwd"]  # the generated one
    assert out["planted"].startswith("DENIED:") and "PLANTED" not in out["planted"]
    assert out["root"].startswith("DENIED:")
    assert "host-env-secret-value" not in out["environ1"]
    assert out["connect"].startswith("DENIED:") and "HOST-LOOPBACK" not in out["connect"]
    assert out["write_script_dir"].startswith("DENIED:")
    assert not (Path(server[1]).parent / "x.txt").exists()
    assert out["write_workdir"] == "WROTE"
    # the gateway is gone: so is every process of the sandboxed server
    end = time.monotonic() + 10
    while _procs_with(tag) and time.monotonic() < end:
        time.sleep(0.1)
    assert _procs_with(tag) == []


def test_sandbox_unavailable_refuses_to_start_unsandboxed(tmp_path: Path) -> None:
    """A sandbox that cannot be set up is an error, never a silent unsandboxed start."""
    pol = write_policy(tmp_path, POLICY.replace(
        "sandbox: true", "sandbox: true\n  sandbox_ro_paths: [/nonexistent/shieldwall-x]"))
    import subprocess

    r = subprocess.run([*gateway("wrap", "--policy", str(pol), "--agent", "t", "--role",
                                 "prober", "--", *server_cmd("prober"))],
                       input=b"", capture_output=True, timeout=60)
    assert r.returncode != 0
    assert b"sandbox" in r.stderr and b"does not exist" in r.stderr
