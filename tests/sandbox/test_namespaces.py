"""bwrap one-shot runs: namespaces made ahead by the parked launcher are fresh per run."""

from __future__ import annotations

import os
import time

import pytest

from shieldwall.sandbox import Sandbox
from shieldwall.sandbox.pool import WarmPool

from .conftest import SMALL, backend_or_skip

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
