"""Fixtures for the sandbox tests: one Sandbox per available backend, small limits."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from shieldwall.sandbox import Limits, Sandbox, backends

MiB = 1 << 20
SMALL = Limits(wall_s=8.0, cpu_s=1.0, memory_bytes=96 * MiB, pids=32, disk_bytes=8 * MiB,
               tmp_bytes=4 * MiB, file_bytes=16 * MiB, stdout_bytes=64 * 1024,
               stderr_bytes=64 * 1024)

BACKENDS = ("bwrap", "gvisor", "wasm", "process")


def backend_or_skip(name: str):  # type: ignore[no-untyped-def]
    if name == "bwrap" and not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    if name == "gvisor" and not shutil.which("runsc"):
        pytest.skip("runsc is not installed (apt-get install runsc)")
    b = backends._make(name, None)
    ok, why = b.available()
    if not ok:
        pytest.skip(f"{name} backend not available here: {why}")
    return b


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    request.applymarker(pytest.mark.bwrap) if name == "bwrap" else None
    backend_or_skip(name)
    return name


def open_sandbox(name: str, limits: Limits = SMALL, **kw: object) -> Sandbox:
    """A sandbox whose runs are all set up on the run's clock, unless ``premake`` is
    given: tests that want a pre-made sandbox (``shieldwall.sandbox.premade``) ask for
    one and check that it was used, so each test takes one known path."""
    kw.setdefault("premake", False)
    return Sandbox(limits, backend=name, allow_weak=(name == "process"), **kw)  # type: ignore[arg-type]


def premade_ready(sb: Sandbox, spare: bool = False) -> None:
    """Wait until bwrap has pre-made the next run's sandbox for ``sb`` (or, ``spare``,
    a spare work directory with its sandbox for the next new Sandbox)."""
    b = sb.backend
    end = time.monotonic() + 20
    while time.monotonic() < end:
        if spare:
            if b.spare_ready():  # type: ignore[attr-defined]
                return
        elif b.premade_ready(sb.workdir):  # type: ignore[attr-defined]
            return
        time.sleep(0.01)
    pytest.fail("nothing was pre-made within 20 s")


@pytest.fixture
def bwrap_sb() -> Iterator[Sandbox]:
    backend_or_skip("bwrap")
    with open_sandbox("bwrap") as sb:
        yield sb


@pytest.fixture
def host_canary(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "host-canary-" + os.urandom(8).hex()
    monkeypatch.setenv("SHIELDWALL_HOST_CANARY", value)
    return value
