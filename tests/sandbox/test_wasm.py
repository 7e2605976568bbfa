"""The wasm backend's trusted runtime: pinned, verified, and refused when it differs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shieldwall.sandbox import ErrorKind, Sandbox, SandboxError
from shieldwall.sandbox import wasm as wasm_mod

from .conftest import SMALL, backend_or_skip


def test_runtime_hash_is_pinned_and_verified() -> None:
    backend_or_skip("wasm")
    p = wasm_mod.runtime_path()
    assert p is not None and p.stat().st_size == wasm_mod.RUNTIME_SIZE
    assert wasm_mod._sha256(p) == wasm_mod.RUNTIME_SHA256
    ok, why = wasm_mod.WasmBackend().available()
    assert ok and "verified" in why


def test_a_tampered_runtime_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend_or_skip("wasm")
    src = wasm_mod.runtime_path()
    assert src is not None
    bad = tmp_path / wasm_mod.RUNTIME_FILE
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    monkeypatch.setattr(wasm_mod, "runtime_path", lambda: bad)
    ok, why = wasm_mod.WasmBackend().available()
    assert not ok and "refusing" in why


def test_python_code_runs_and_sees_only_its_workdir() -> None:
    backend_or_skip("wasm")
    with Sandbox(SMALL, backend="wasm", secrets={"K": "wasm-secret-xyz"}) as sb:
        sb.write_file("in.txt", "41")
        r = sb.run_code("import os\nprint(int(open('in.txt').read()) + 1, os.environ['K'])\n"
                        "for p in ('/', '/etc', '/usr/bin', '/root', '/proc'):\n"
                        "    try:\n        os.listdir(p); print('LEAK', p)\n"
                        "    except OSError:\n        pass\n"
                        "print(os.listdir('/usr'))  # the stdlib embedded in the binary, not the host's\n"
                        "open('out.txt', 'w').write('w')")
        assert r.ok, r.stderr
        assert r.stdout == "42 [REDACTED:K]\n['local']\n"
        assert sb.read_file("out.txt") == b"w"


def test_fuel_bounds_cpu() -> None:
    backend_or_skip("wasm")
    with Sandbox(SMALL, backend="wasm") as sb:
        r = sb.run_code("while True: pass")
    assert r.error is ErrorKind.CPU_LIMIT


def test_commands_are_refused() -> None:
    backend_or_skip("wasm")
    with Sandbox(SMALL, backend="wasm") as sb, pytest.raises(SandboxError, match="Python"):
        sb.run(["ls"])
