"""network='proxy': the only way out is a Unix socket bridged into the sandbox. The egress
proxy itself belongs to the egress room; here a small HTTP server on a Unix socket plays
its part and records what reached it."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from shieldwall.sandbox import RunResult, Sandbox

from .conftest import SMALL, backend_or_skip, premade_ready

pytestmark = pytest.mark.bwrap


@pytest.fixture
def fake_proxy() -> Iterator[tuple[str, list[bytes]]]:
    d = tempfile.mkdtemp(prefix="sw-proxy-", dir="/tmp")
    os.chmod(d, 0o755)
    path = os.path.join(d, "egress.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o777)  # the sandbox uid must be able to connect
    srv.listen(4)
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            req = c.recv(65536)
            seen.append(req)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nproxied")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    yield path, seen
    srv.close()
    os.unlink(path)
    os.rmdir(d)


def _run(path: str, code: str, how: str) -> RunResult:
    """``code`` in proxy mode, in a sandbox set up on the run's clock or pre-made."""
    with Sandbox(SMALL, backend="bwrap", network="proxy", proxy_socket=path,
                 premake=how == "premade") as sb:
        if how == "premade":
            assert sb.run_code("pass").ok
            premade_ready(sb)
        served = sb.backend.premade_runs  # type: ignore[attr-defined]
        r = sb.run_code(code)
        assert sb.backend.premade_runs == served + (how == "premade")  # type: ignore[attr-defined]
        return r


@pytest.mark.parametrize("how", ["cold", "premade"])
def test_http_goes_through_the_bridged_proxy_socket(fake_proxy: tuple[str, list[bytes]],
                                                    how: str) -> None:
    backend_or_skip("bwrap")
    path, seen = fake_proxy
    r = _run(path, "import urllib.request, os\n"
                   "print(os.environ['HTTP_PROXY'])\n"
                   "print(urllib.request.urlopen('http://example.com/x', timeout=5).read().decode())",
             how)
    assert r.ok, r.stderr
    assert r.stdout == "http://127.0.0.1:3128\nproxied\n"
    assert seen and seen[-1].startswith(b"GET http://example.com/x HTTP/1.1")


@pytest.mark.parametrize("how", ["cold", "premade"])
def test_direct_connections_still_fail_in_proxy_mode(fake_proxy: tuple[str, list[bytes]],
                                                     how: str) -> None:
    backend_or_skip("bwrap")
    path, _ = fake_proxy
    r = _run(path, "import socket\n"
                   "try:\n    socket.create_connection(('1.1.1.1', 80), 2); print('LEAK')\n"
                   "except OSError as e:\n    print('BLOCKED')", how)
    assert r.stdout == "BLOCKED\n"


def test_proxy_mode_needs_a_socket() -> None:
    from shieldwall.sandbox import SandboxError

    with pytest.raises(SandboxError, match="Unix socket"):
        Sandbox(SMALL, backend="bwrap", network="proxy")
