"""Warm pool: pre-started one-shot sandboxes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from shieldwall.sandbox import ErrorKind
from shieldwall.sandbox.pool import WarmPool

from .conftest import SMALL, backend_or_skip

pytestmark = pytest.mark.bwrap


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    backend_or_skip("bwrap")
    with WarmPool(size=2, limits=replace(SMALL, wall_s=2.0), secrets={"TOKEN": "pool-secret-value-123"}) as p:
        yield p


def _wait_ready(p: WarmPool, n: int = 1) -> None:
    end = time.monotonic() + 20
    while p.ready() < n and time.monotonic() < end:
        time.sleep(0.01)


def test_dispatches_python_and_argv(pool: WarmPool) -> None:
    _wait_ready(pool)
    assert pool.run_code("print(6 * 7)").stdout == "42\n"
    r = pool.run(["sh", "-c", "id -u; echo $TOKEN"])
    assert r.stdout == "65534\n[REDACTED:TOKEN]\n"


def test_each_run_gets_a_fresh_sandbox(pool: WarmPool) -> None:
    first = pool.run_code("import os; open('left-behind', 'w').write('x'); "
                          "open('/tmp/t', 'w').write('x'); print(os.listdir('.'))")
    second = pool.run_code("import os; print(os.listdir('.'), os.path.exists('/tmp/t'))")
    assert first.stdout == "['left-behind']\n"
    assert second.stdout == "[] False\n"


def test_zygote_globals_are_not_in_the_program_namespace(pool: WarmPool) -> None:
    r = pool.run_code("print(sorted(k for k in globals() if not k.startswith('__')))")
    assert r.stdout == "[]\n"


def test_exit_codes_and_exceptions(pool: WarmPool) -> None:
    assert pool.run_code("raise SystemExit(4)").exit_code == 4
    r = pool.run_code("1/0")
    assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr


def test_limits_hold_in_pooled_workers(pool: WarmPool) -> None:
    assert pool.run_code("import time; time.sleep(30)").error is ErrorKind.TIMEOUT
    assert pool.run_code("b = []\nwhile True: b.append(bytearray(8 << 20))").error \
        is ErrorKind.MEMORY_LIMIT
    assert pool.run_code("import socket; socket.create_connection(('127.0.0.1', 22), 1)")\
        .exit_code == 1


def test_atexit_hooks_run_and_output_is_flushed(pool: WarmPool) -> None:
    r = pool.run_code("import atexit, sys\natexit.register(lambda: print('bye'))\n"
                      "sys.stdout.write('no newline')")
    assert r.stdout == "no newlinebye\n"


def test_closed_pool_refuses() -> None:
    backend_or_skip("bwrap")
    p = WarmPool(size=1, limits=SMALL)
    p.close()
    with pytest.raises(Exception, match="closed"):
        p.run_code("pass")


def test_argv_exit_status_and_missing_command(pool: WarmPool) -> None:
    assert pool.run(["sh", "-c", "exit 7"]).exit_code == 7
    r = pool.run(["no-such-command-here"])
    assert r.exit_code == 127 and "no-such-command-here" in r.stderr
