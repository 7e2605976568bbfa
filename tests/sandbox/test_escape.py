"""The escape and abuse suite: real programs trying to get out, each asserting containment.

Every attack names the guarantee it tests (``shieldwall.sandbox.protocol.GUARANTEES``);
each backend runs the attacks whose guarantee it claims. Shell attacks run only where
the backend claims ``subprocesses``.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shieldwall.sandbox import ErrorKind, RunResult, Sandbox
from shieldwall.sandbox.workspace import PathEscape

from .conftest import SMALL, backend_or_skip, open_sandbox, premade_ready

X86 = platform.machine() == "x86_64"

SYSCALL = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()
"""


@dataclass
class Host:
    """Things on the host that a sandboxed program must not reach."""

    port: int
    tcp_hits: list[str]
    unix_path: str
    abstract_name: str
    unix_hits: list[str]
    victim: subprocess.Popen[bytes]
    marker: str
    root_secret: Path
    root_secret_value: str


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    tcp_hits: list[str] = []
    marker = "shieldwall-victim-" + os.urandom(6).hex()
    unix_path = f"/tmp/{marker}.sock"
    us = socket.socket(socket.AF_UNIX)
    us.bind(unix_path)
    os.chmod(unix_path, 0o777)
    us.listen(8)
    abstract = "\0" + marker
    ab = socket.socket(socket.AF_UNIX)
    ab.bind(abstract)
    ab.listen(8)
    unix_hits: list[str] = []

    def accept(s: socket.socket, hits: list[str], tag: str) -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            hits.append(tag)
            c.close()

    for s, hits, tag in ((tcp, tcp_hits, "tcp"), (us, unix_hits, "unix"), (ab, unix_hits, "abstract")):
        threading.Thread(target=accept, args=(s, hits, tag), daemon=True).start()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    root_secret = Path("/root") / f"{marker}.txt" if os.access("/root", os.W_OK) else Path.home() / f"{marker}.txt"
    value = "planted-" + os.urandom(8).hex()
    root_secret.write_text(value)
    yield Host(tcp.getsockname()[1], tcp_hits, unix_path, abstract, unix_hits, victim, marker,
               root_secret, value)
    victim.kill()
    victim.wait()
    for s in (tcp, us, ab):
        s.close()
    os.unlink(unix_path)
    root_secret.unlink()


Check = Callable[[RunResult, Host, Sandbox], None]


@dataclass(frozen=True)
class Attack:
    name: str
    guarantee: str
    lang: str  # "python" or "sh"
    src: str  # formatted with the Host's fields and {workdir_parent}
    check: Check
    x86_only: bool = False
    limits: dict[str, Any] | None = None


def no_leak(r: RunResult, h: Host, sb: Sandbox) -> None:
    assert "LEAK" not in r.stdout, r.stdout
    assert h.root_secret_value not in r.stdout + r.stderr


def blocked(r: RunResult, h: Host, sb: Sandbox) -> None:
    no_leak(r, h, sb)
    assert "BLOCKED" in r.stdout, (r.stdout, r.stderr, r.error, r.message)


def no_tcp(r: RunResult, h: Host, sb: Sandbox) -> None:
    blocked(r, h, sb)
    time.sleep(0.05)
    assert h.tcp_hits == []


def no_unix(r: RunResult, h: Host, sb: Sandbox) -> None:
    blocked(r, h, sb)
    time.sleep(0.05)
    assert h.unix_hits == []


def eperm(r: RunResult, h: Host, sb: Sandbox) -> None:
    assert r.exit_code == 0, (r.stdout, r.stderr, r.error)
    assert "r=-1 errno=1" in r.stdout or "errno=38" in r.stdout, r.stdout


def victim_alive(r: RunResult, h: Host, sb: Sandbox) -> None:
    no_leak(r, h, sb)
    time.sleep(0.05)
    assert h.victim.poll() is None, "the host process was killed from the sandbox"


def error_is(*kinds: ErrorKind) -> Check:
    def check(r: RunResult, h: Host, sb: Sandbox) -> None:
        assert r.error in kinds, (r.error, r.message, r.stdout[-200:], r.stderr[-300:])
    return check


def nothing_left(tag: str) -> Check:
    def check(r: RunResult, h: Host, sb: Sandbox) -> None:
        time.sleep(0.2)
        out = subprocess.run(["pgrep", "-f", tag], capture_output=True, text=True).stdout
        assert out.strip() == "", f"processes outlived the run: {out}"
    return check


def both(*checks: Check) -> Check:
    def check(r: RunResult, h: Host, sb: Sandbox) -> None:
        for c in checks:
            c(r, h, sb)
    return check


ATTACKS: list[Attack] = [
    # --- network
    Attack("tcp_to_host_loopback", "no_network", "python", """
import socket
try:
    s = socket.socket(); s.settimeout(2)
    s.connect(("127.0.0.1", {port})); print("LEAK connected")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", no_tcp),
    Attack("tcp_to_host_loopback_bash", "no_network", "sh",
           "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo LEAK || echo BLOCKED",
           no_tcp),
    Attack("dns_lookup", "no_network", "python", """
import socket
try:
    print("LEAK", socket.getaddrinfo("pypi.org", 443))
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", blocked),
    Attack("udp_to_public_resolver", "no_network", "python", """
import socket
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.sendto(b"x", ("1.1.1.1", 53)); s.recv(10); print("LEAK")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", blocked),
    Attack("host_unix_socket_path", "no_network", "python", """
import socket
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect("{unix_path}"); print("LEAK")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", no_unix),
    Attack("host_abstract_unix_socket", "no_network", "python", """
import socket
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect("\\0{marker}"); print("LEAK")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", no_unix),
    # --- host files
    Attack("read_etc_shadow", "no_host_files", "python", """
try:
    data = open("/etc/shadow").read()
    print("LEAK" if data.startswith("root:") else "BLOCKED other", data[:20])
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", blocked),
    Attack("read_planted_file_under_root", "no_host_files", "python", """
import os
try:
    print("LEAK", open("{root_secret}").read())
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
try:
    print("LEAK", os.listdir("/root"))
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", blocked),
    Attack("read_secret_next_to_workdir", "no_host_files", "python", """
import os
for p in ("../neighbour-secret.txt", "{workdir_parent}/neighbour-secret.txt"):
    try:
        print("LEAK", open(p).read())
    except OSError as e:
        print("BLOCKED", e)
""", blocked),
    Attack("write_outside_workdir", "no_host_files", "python", """
for p in ("/usr/bin/shieldwall-evil", "/etc/shieldwall-evil", "/shieldwall-evil",
          "{workdir_parent}/shieldwall-evil"):
    try:
        open(p, "w").write("x"); print("LEAK wrote", p)
    except OSError as e:
        print("BLOCKED", e)
""", both(blocked, lambda r, h, sb: [
        _assert_absent(p) for p in ("/usr/bin/shieldwall-evil", "/etc/shieldwall-evil",
                                    "/shieldwall-evil", str(Path(sb.workdir).parent / "shieldwall-evil"))])),
    Attack("symlink_escape_from_workdir", "no_host_files", "sh",
           "ln -s {root_secret} link && ln -s /etc/shadow shadow && cat link shadow 2>/dev/null "
           "| grep -q '{root_secret_value}' && echo LEAK || echo BLOCKED",
           both(blocked, lambda r, h, sb: _host_read_refused(sb, "link"))),
    Attack("hardlink_escape_from_workdir", "no_host_files", "python", """
import os
for src in ("/etc/passwd", "{root_secret}", "/usr/bin/sh"):
    try:
        os.link(src, "hl"); print("linked", src); break
    except OSError as e:
        print("BLOCKED", e)
""", lambda r, h, sb: (no_leak(r, h, sb), _host_read_refused(sb, "hl", missing_ok=True))),
    Attack("sys_abuse", "no_host_files", "python", """
import os
for p in ("/sys/kernel/uevent_helper", "/sys/fs/cgroup/memory", "/sys/class/dmi/id"):
    try:
        os.listdir(p) if not p.endswith("helper") else open(p, "w").write("/tmp/x")
        print("LEAK", p)
    except OSError as e:
        print("BLOCKED", e)
""", blocked),
    # --- host processes and environment
    Attack("host_environment", "no_host_env", "python", """
import os
print("LEAK" if any("canary" in v for v in os.environ.values()) else "BLOCKED", sorted(os.environ))
""", blocked),
    Attack("proc_1_environ", "no_host_env", "python", """
try:
    data = open("/proc/1/environ", "rb").read()
    print("LEAK" if b"canary" in data else "BLOCKED", len(data))
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", blocked),
    Attack("other_processes_cmdline", "no_host_processes", "python", """
import os
seen = []
for pid in (os.listdir("/proc") if os.path.isdir("/proc") else []):
    if pid.isdigit():
        try:
            seen.append(open(f"/proc/{{pid}}/cmdline", "rb").read())
        except OSError:
            pass
needle = "{marker_a}".encode() + "{marker_b}".encode()  # never whole in this source
print("LEAK" if any(needle in c for c in seen) else "BLOCKED", len(seen))
""", blocked),
    Attack("signal_host_process", "no_host_processes", "python", """
import os, signal
try:
    os.kill({victim_pid}, signal.SIGKILL); print("sent")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
""", victim_alive),
    Attack("signal_all_processes", "no_host_processes", "sh", "kill -9 -1; echo done", victim_alive),
    # --- privileges
    Attack("runs_unprivileged", "unprivileged", "python", """
import os
status = open("/proc/self/status").read()
cap = [l for l in status.splitlines() if l.startswith("CapEff")][0].split()[1]
print("BLOCKED" if os.getuid() != 0 and int(cap, 16) == 0 else "LEAK", os.getuid(), cap)
""", blocked),
    Attack("setuid_binary", "unprivileged", "sh",
           "for b in /usr/bin/su /usr/bin/passwd /usr/bin/mount /usr/bin/newgrp; do "
           "[ -x $b ] && $b --help >/dev/null 2>&1; done; "
           "su -c id root </dev/null 2>/dev/null | grep -q 'uid=0' && echo LEAK; "
           "[ \"$(id -u)\" = 0 ] && echo LEAK || echo BLOCKED", blocked),
    Attack("setuid_self", "unprivileged", "python", """
import os, shutil, subprocess
try:
    os.setuid(0); print("LEAK")
except Exception as e:  # OSError, or no socket support at all (wasm)
    print("BLOCKED", e)
shutil.copy("/usr/bin/id", "myid"); os.chmod("myid", 0o4755)
out = subprocess.run(["./myid", "-u"], capture_output=True, text=True).stdout.strip()
print("LEAK" if out == "0" else "BLOCKED", out)
""", blocked),
    Attack("mount_tmpfs", "unprivileged", "python", SYSCALL + """
import ctypes
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
print("BLOCKED" if r != 0 else "LEAK", ctypes.get_errno())
""", blocked),
    # --- system calls
    Attack("ptrace_traceme", "syscall_filter", "python", SYSCALL + """
r, e = sc(101, 0, 0, 0, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("mount_syscall", "syscall_filter", "python", SYSCALL + """
r, e = sc(165, 0, 0, 0, 0, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("unshare_user_namespace", "syscall_filter", "python", SYSCALL + """
r, e = sc(272, 0x10000000); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("clone_new_namespace", "syscall_filter", "python", SYSCALL + """
r, e = sc(56, 0x10000000 | 0x20000000 | 17, 0, 0, 0, 0)
if r == 0:
    os._exit(0)
print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("clone3_refused", "syscall_filter", "python", SYSCALL + """
r, e = sc(435, 0, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("keyctl_and_add_key", "syscall_filter", "python", SYSCALL + """
r, e = sc(248, 0, 0, 0, 0, 0); r2, e2 = sc(250, 0, 0, 0, 0, 0)
print(f"r={{r}} errno={{e}}" if (r, e) == (r2, e2) else f"mismatch {{r}} {{e}} {{r2}} {{e2}}")
""", eperm, x86_only=True),
    Attack("bpf_syscall", "syscall_filter", "python", SYSCALL + """
r, e = sc(321, 0, 0, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("perf_event_open", "syscall_filter", "python", SYSCALL + """
r, e = sc(298, 0, 0, -1, -1, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("io_uring_setup", "syscall_filter", "python", SYSCALL + """
r, e = sc(425, 8, 0); print(f"r={{r}} errno={{e}}")
""", eperm, x86_only=True),
    Attack("kexec_and_module_loading", "syscall_filter", "python", SYSCALL + """
# kexec_load, kexec_file_load, init_module, finit_module, delete_module: the filter
# answers EPERM before the kernel's own capability checks are reached
seen = {{sc(nr, 0, 0, 0, 0) for nr in (246, 320, 175, 313, 176)}}
print(" ".join(f"r={{r}} errno={{e}}" for r, e in sorted(seen)))
""", lambda r, h, sb: (eperm(r, h, sb), _assert(r.stdout.split() == ["r=-1", "errno=1"])),
        x86_only=True),
    Attack("tiocsti_injection", "syscall_filter", "python", SYSCALL + """
r = libc.ioctl(1, 0x5412, ctypes.c_char_p(b"x")); e = ctypes.get_errno()
print(f"r={{r}} errno={{e}}")  # unfiltered, a pipe would answer ENOTTY (25)
""", eperm, x86_only=True),
    Attack("wasm_has_no_syscalls", "no_syscalls", "python", """
import os
for what, fn in (("fork", lambda: os.fork()), ("socket", lambda: __import__("socket").socket()),
                 ("ctypes", lambda: __import__("ctypes").CDLL(None))):
    try:
        fn(); print("LEAK", what)
    except Exception as e:
        print("BLOCKED", what, type(e).__name__)
""", blocked),
    # --- resources
    Attack("fork_bomb_python", "pids_limit", "python", """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""", error_is(ErrorKind.PIDS_LIMIT, ErrorKind.TIMEOUT, ErrorKind.MEMORY_LIMIT),
        limits={"wall_s": 2.0}),
    Attack("fork_bomb_shell", "pids_limit", "sh", "bash -c ':(){{ :|:& }};:'; sleep 5",
           error_is(ErrorKind.PIDS_LIMIT, ErrorKind.TIMEOUT, ErrorKind.MEMORY_LIMIT),
           limits={"wall_s": 2.0}),
    Attack("memory_bomb", "memory_limit", "python", """
chunks = []
while True:
    chunks.append(bytearray(8 << 20))
""", error_is(ErrorKind.MEMORY_LIMIT)),
    Attack("cpu_spin", "cpu_limit", "python", "while True:\n    pass\n",
           error_is(ErrorKind.CPU_LIMIT)),
    Attack("sleep_forever", "wall_timeout", "python", "import time\ntime.sleep(3600)\n",
           error_is(ErrorKind.TIMEOUT), limits={"wall_s": 1.0}),
    Attack("background_process_outlives_run", "kills_all", "sh",
           "bash -c 'exec -a {marker}-bg sleep 600' & (sleep 600 &) ; echo started",
           nothing_left("{marker}-bg")),
    Attack("sleep_forever_then_nothing_left", "kills_all", "sh",
           "bash -c 'exec -a {marker}-fg sleep 600'", both(error_is(ErrorKind.TIMEOUT),
                                                   nothing_left("{marker}-fg")),
           limits={"wall_s": 1.0}),
    Attack("fill_workdir", "disk_limit", "python", """
with open("fill", "wb") as f:
    while True:
        f.write(b"x" * (1 << 20)); f.flush()
""", error_is(ErrorKind.DISK_LIMIT)),
    Attack("fill_dev_shm", "tmp_limit", "python", """
n = 0
try:
    with open("/dev/shm/fill", "wb") as f:
        while n < (64 << 20):
            f.write(b"x" * (1 << 20)); f.flush(); n += 1 << 20
    print("LEAK wrote", n)
except OSError as e:
    print("BLOCKED", n, e)
""", blocked),
    Attack("fill_tmp", "tmp_limit", "python", """
n = 0
try:
    with open("/tmp/fill", "wb") as f:
        while n < (64 << 20):
            f.write(b"x" * (1 << 20)); f.flush(); n += 1 << 20
    print("LEAK wrote", n)
except OSError as e:
    print("BLOCKED", n, e)
""", blocked),
    Attack("flood_stdout", "output_limit", "python", """
import sys
while True:
    sys.stdout.write("A" * 65536)
""", both(error_is(ErrorKind.OUTPUT_LIMIT),
          lambda r, h, sb: _assert(len(r.stdout) < SMALL.stdout_bytes + 200 and "truncated" in r.stdout))),
]


def _assert(cond: bool) -> None:
    assert cond


def _assert_absent(p: str) -> None:
    assert not os.path.exists(p), f"{p} was written from the sandbox"


def _host_read_refused(sb: Sandbox, name: str, missing_ok: bool = False) -> None:
    try:
        data = sb.read_file(name)
    except PathEscape:
        return
    except FileNotFoundError:
        assert missing_ok
        return
    pytest.fail(f"host-side read_file followed {name!r}: {data[:40]!r}")


def _format(src: str, h: Host, sb: Sandbox) -> str:
    return src.format(port=h.port, unix_path=h.unix_path, marker=h.marker,
                      marker_a=h.marker[:9], marker_b=h.marker[9:],
                      root_secret=h.root_secret, root_secret_value=h.root_secret_value,
                      victim_pid=h.victim.pid, workdir_parent=Path(sb.workdir).parent)


def _claimed_or_skip(backend_name: str, attack: Attack) -> Any:
    b = backend_or_skip(backend_name)
    if attack.guarantee not in b.guarantees:
        pytest.skip(f"{backend_name} does not claim {attack.guarantee}")
    if attack.lang == "sh" and "subprocesses" not in b.guarantees:
        pytest.skip(f"{backend_name} runs Python only")
    if attack.x86_only and not X86:
        pytest.skip("syscall numbers are x86-64")
    return b


def _attack(sb: Sandbox, attack: Attack, host: Host, host_canary: str) -> RunResult:
    neighbour = Path(sb.workdir).parent / "neighbour-secret.txt"
    neighbour.write_text("LEAK-neighbour")  # printed by an attack only if it got out
    os.chmod(neighbour, 0o644)
    r = sb.run_code(_format(attack.src, host, sb), language=attack.lang, limits=attack.limits)
    assert r.error is not ErrorKind.SANDBOX_ERROR, r.message
    attack.check(r, host, sb)
    assert host_canary not in r.stdout + r.stderr
    return r


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(backend_name: str, attack: Attack, host: Host,
                             host_canary: str) -> None:
    _claimed_or_skip(backend_name, attack)
    with open_sandbox(backend_name) as sb:
        _attack(sb, attack, host, host_canary)


@pytest.mark.bwrap
@pytest.mark.parametrize("how", ["next_run", "spare"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained_in_a_premade_sandbox(attack: Attack, how: str, host: Host,
                                                  host_canary: str) -> None:
    """The same attacks, run by a sandbox that bwrap set up ahead of the run (see
    ``shieldwall.sandbox.premade``): the program is exec'd by the parked waiter. next_run:
    the second run of one Sandbox; spare: the first run of a new Sandbox that adopted a
    spare work directory (the gate's one-run sandboxes)."""
    b = _claimed_or_skip("bwrap", attack)
    with open_sandbox("bwrap", premake=True if how == "next_run" else None) as first:
        assert first.run_code("pass", limits=attack.limits).ok  # sets up the next one
        if how == "next_run":
            premade_ready(first)
            served = b.premade_runs
            _attack(first, attack, host, host_canary)
            assert b.premade_runs == served + 1, "the attack ran cold"
            return
    premade_ready(first, spare=True)  # made once the first sandbox closed
    spare = b._spare[0].path
    with open_sandbox("bwrap", premake=None) as sb:
        assert sb.workdir == spare
        served = b.premade_runs
        _attack(sb, attack, host, host_canary)
        assert b.premade_runs == served + 1, "the attack ran cold"


def test_suite_has_at_least_thirty_attacks() -> None:
    assert len(ATTACKS) >= 30
    assert sum(a.lang == "sh" for a in ATTACKS) >= 5


def test_host_survives_the_suite(host: Host) -> None:
    assert host.victim.poll() is None
    assert os.kill(os.getpid(), 0) is None
    assert signal.SIGKILL  # the suite ran in this process and it is still here
