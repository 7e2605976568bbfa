"""bwrap one-shot runs: namespaces made ahead by the parked launcher are fresh per run."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from shieldwall.sandbox import Sandbox
from shieldwall.sandbox.pool import WarmPool

from .conftest import SMALL, backend_or_skip, premade_ready

pytestmark = pytest.mark.bwrap

PROBE = (
    "import os, socket\n"
    "ns = [os.readlink(f'/proc/self/ns/{n}') for n in ('net', 'ipc', 'uts', 'pid', 'user')]\n"
    "ifs = sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:])\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
    "socket.create_connection(s.getsockname(), timeout=2).close()\n"
    "print(' '.join(ns), ','.join(ifs), socket.gethostname(), os.getpid(), 'lo-ok')\n"
)


def _check(out: str, host: dict[str, str]) -> tuple[str, ...]:
    *ns, ifs, hostname, pid, lo = out.split()
    assert ifs == "lo" and hostname == "sandbox" and lo == "lo-ok"
    assert pid == "1"  # the program is pid 1 of its pid namespace
    assert not set(ns) & set(host.values())
    return tuple(ns)


def test_each_run_gets_its_own_namespaces() -> None:
    backend_or_skip("bwrap")
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in ("net", "ipc", "uts", "pid", "user")}
    with Sandbox(SMALL, backend="bwrap") as sb:
        r = sb.run_code(PROBE)
        assert r.ok, r
        _check(r.stdout, host)
    # two sandboxes alive at once (a warm pool's workers, each made by its own launcher):
    # namespace ids cannot have been recycled between them, so equal ids would be sharing
    with WarmPool(size=2, limits=SMALL) as pool:
        end = time.monotonic() + 30
        while pool.ready() < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert pool.ready() == 2
        a, b = pool.run_code(PROBE), pool.run_code(PROBE)
        assert a.ok and b.ok, (a, b)
        na, nb = _check(a.stdout, host), _check(b.stdout, host)
        assert all(x != y for x, y in zip(na, nb, strict=True)), (na, nb)


# ----------------------------------------------------------------- pre-made sandboxes

def _premade_pids(sb: Sandbox) -> list[int]:
    """Host pids of the pre-made sandbox waiting for ``sb``: bwrap and its waiter."""
    cache = sb.backend._premades  # type: ignore[attr-defined]
    (pm,) = [p for p in cache._ready.values() if p.workdir == sb.workdir]
    pid = pm.parked.proc.pid
    kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    return [pid, *map(int, kids)]


def test_premade_sandboxes_have_namespaces_of_their_own() -> None:
    backend_or_skip("bwrap")
    host = {n: os.readlink(f"/proc/self/ns/{n}")
            for n in ("net", "ipc", "uts", "pid", "user", "mnt", "cgroup")}
    with Sandbox(SMALL, backend="bwrap", premake=True) as a, \
            Sandbox(SMALL, backend="bwrap", premake=True) as b:
        assert a.run_code("pass").ok and b.run_code("pass").ok
        premade_ready(a)
        premade_ready(b)
        # both are alive at once, so equal namespace ids would mean shared namespaces
        wa, wb = _premade_pids(a)[-1], _premade_pids(b)[-1]
        na = {n: os.readlink(f"/proc/{wa}/ns/{n}") for n in host}
        nb = {n: os.readlink(f"/proc/{wb}/ns/{n}") for n in host}
        for n in host:
            assert len({host[n], na[n], nb[n]}) == 3, n
        served = a.backend.premade_runs  # type: ignore[attr-defined]
        r = a.run_code(PROBE)
        assert r.ok, r
        assert a.backend.premade_runs == served + 1  # type: ignore[attr-defined]
        assert _check(r.stdout, host)[0] == na["net"]  # the run got the one we saw


def test_premade_sandbox_starts_from_nothing_left_by_the_last_run() -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap", premake=True) as sb:
        first = sb.run_code("open('/tmp/left', 'w').write('x'); open('/dev/shm/left', 'w')"
                            ".write('x'); open('kept', 'w').write('x'); import os; "
                            "os.environ['LEFT'] = '1'")
        assert first.ok, first
        premade_ready(sb)
        served = sb.backend.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code("import os; print(os.path.exists('/tmp/left'), "
                        "os.path.exists('/dev/shm/left'), os.path.exists('kept'), "
                        "'LEFT' in os.environ, os.getpid())")
        assert sb.backend.premade_runs == served + 1  # type: ignore[attr-defined]
        # fresh /tmp and /dev/shm; the work directory is the sandbox's, as for any run
        assert r.stdout.split() == ["False", "False", "True", "False", "1"], r


def test_secrets_reach_a_premade_sandbox_only_at_dispatch() -> None:
    backend_or_skip("bwrap")
    value = "premade-secret-" + os.urandom(8).hex()
    with Sandbox(SMALL, backend="bwrap", premake=True, secrets={"TOKEN": value},
                 env={"PLAIN": "visible"}) as sb:
        assert sb.run_code("pass").ok
        premade_ready(sb)
        for pid in _premade_pids(sb):
            for f in ("cmdline", "environ"):
                assert value.encode() not in open(f"/proc/{pid}/{f}", "rb").read()
                assert b"visible" not in open(f"/proc/{pid}/{f}", "rb").read()
        served = sb.backend.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code("import os; print(os.environ['PLAIN'], os.environ['TOKEN'])")
        assert sb.backend.premade_runs == served + 1  # type: ignore[attr-defined]
        assert r.stdout.split() == ["visible", "[REDACTED:TOKEN]"], r
        assert value not in r.stdout + r.stderr


def test_a_run_with_other_options_does_not_use_the_premade_sandbox() -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap", premake=True) as sb:
        assert sb.run_code("pass").ok
        premade_ready(sb)
        served = sb.backend.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code("import os; s = os.statvfs('/tmp'); print(s.f_blocks * s.f_frsize)",
                        limits={"tmp_bytes": 1 << 20})
        assert r.ok, r
        assert int(r.stdout) == 1 << 20  # the run's own /tmp size, not the pre-made one's
        assert sb.backend.premade_runs == served  # type: ignore[attr-defined]


def test_closing_a_sandbox_ends_its_premade_sandbox() -> None:
    backend_or_skip("bwrap")
    sb = Sandbox(SMALL, backend="bwrap", premake=True)
    assert sb.run_code("pass").ok
    premade_ready(sb)
    pids = _premade_pids(sb)
    sb.close()
    assert not sb.backend.premade_ready(sb.workdir)  # type: ignore[attr-defined]
    end = time.monotonic() + 10
    while time.monotonic() < end and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.02)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)


def test_a_new_sandbox_adopts_a_fresh_spare_work_directory() -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap") as first:
        assert first.run_code("open('mine', 'w').write('x')").ok
        b = first.backend
        first_uid = os.stat(first.workdir).st_uid
    premade_ready(first, spare=True)  # made once the first sandbox closed
    spare_wd, spare_uid = b._spare  # type: ignore[attr-defined]
    with Sandbox(SMALL, backend="bwrap") as sb:
        assert sb.workdir == spare_wd.path and b._spare is None  # type: ignore[attr-defined]
        assert sb.list_files() == []  # nothing of the first sandbox's files
        if os.geteuid() == 0:  # its own fresh host uid, as any new sandbox gets
            assert os.stat(sb.workdir).st_uid == spare_uid != first_uid
        served = b.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code("import os; print(os.listdir('.'), os.getpid())")
        assert r.stdout.split() == ["[]", "1"], r
        assert b.premade_runs == served + 1  # type: ignore[attr-defined]


def test_a_spare_is_not_adopted_for_another_quota_nor_with_premake_off() -> None:
    backend_or_skip("bwrap")
    with Sandbox(SMALL, backend="bwrap") as first:
        assert first.run_code("pass").ok
        b = first.backend
    premade_ready(first, spare=True)
    spare = b._spare[0].path  # type: ignore[attr-defined]
    with Sandbox(SMALL, backend="bwrap", premake=False) as sb:
        assert sb.workdir != spare and b._spare is not None  # type: ignore[attr-defined]
    bigger = Sandbox(SMALL.merged({"disk_bytes": SMALL.disk_bytes * 2}), backend="bwrap")
    with bigger as sb:
        assert sb.workdir != spare
        assert not os.path.exists(spare)  # the unfit spare was removed
        if os.geteuid() == 0:  # the quota is a tmpfs of exactly that size
            r = sb.run_code("import os; s = os.statvfs('.'); print(s.f_blocks * s.f_frsize)")
            assert int(r.stdout) == SMALL.disk_bytes * 2


def test_a_bind_source_replaced_since_premaking_is_not_served_stale() -> None:
    backend_or_skip("bwrap")
    base = Path(tempfile.mkdtemp(prefix="shieldwall-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        data = base / "data"
        for text in ("old", "new"):
            if data.exists():
                data.rename(base / "data.old")  # replaced: a new inode under the same name
            data.mkdir(mode=0o755)
            (data / "f").write_text(text)
            (data / "f").chmod(0o644)
            if text == "old":
                sb = Sandbox(SMALL, backend="bwrap", premake=True, ro_paths=[str(data)])
                assert sb.run_code(f"print(open('{data}/f').read())").stdout == "old\n"
                premade_ready(sb)
        served = sb.backend.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code(f"print(open('{data}/f').read())")
        assert r.stdout == "new\n", r
        assert sb.backend.premade_runs == served  # type: ignore[attr-defined]
        sb.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
