"""Sandboxed code reaches the network only through the egress proxy: a real bubblewrap
sandbox in network='proxy' mode, the real proxy on a per-agent Unix socket (the socket is
the credential: no token inside the sandbox), a real upstream on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest
from egress_kit import Upstream, make_policy

from shieldwall.egress.proxy import CredentialStore, EgressProxy, ProxyIdentity, policy_decider
from shieldwall.policy.sections.egress import ProxySettings

pytestmark = pytest.mark.bwrap


@pytest.fixture
def sandbox_proxy(upstream: Upstream) -> Iterator[str]:
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed")
    d = tempfile.mkdtemp(prefix="sw-egress-", dir="/tmp")
    os.chmod(d, 0o755)  # the sandbox's uid must reach the socket
    path = os.path.join(d, "egress.sock")
    p = make_policy(upstream.port)
    proxy = EgressProxy(p, policy_decider(p), CredentialStore([]), ProxySettings(header_timeout=2.0))
    # Run with a Unix listener bound to one identity (the sandbox's agent).
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def start() -> None:
        await proxy.start(unix_path=path, unix_identity=ProxyIdentity("sandboxed", "reader"))
        ready.set()

    t = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    t.start()
    assert ready.wait(10)
    yield path
    asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    shutil.rmtree(d, ignore_errors=True)


def test_sandboxed_code_goes_through_the_egress_policy(sandbox_proxy: str, upstream: Upstream) -> None:
    from shieldwall.sandbox import Sandbox
    from shieldwall.sandbox.types import Limits

    code = f"""
import urllib.request, urllib.error
def get(url, method="GET"):
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10)
        return str(r.status)
    except urllib.error.HTTPError as e:
        return f"{{e.code}} {{e.headers.get('X-Shieldwall-Reason')}}"
print(get("http://allowed.test:{upstream.port}/from-sandbox"))
print(get("http://evil.test/"))
print(get("http://169.254.169.254/latest/meta-data/"))
print(get("http://allowed.test:{upstream.port}/x", "DELETE"))
print(get("http://allowed.test:{upstream.port}/?k=AKIAQYLPMN5HHHFPZAM2"))
"""
    with Sandbox(Limits(wall_s=30, cpu_s=10), backend="bwrap", network="proxy", proxy_socket=sandbox_proxy) as sb:
        r = sb.run_code(code)
    assert r.ok, r.stderr
    assert r.stdout.splitlines() == [
        "200",
        "403 egress.host_not_allowed",
        "403 egress.private_address",
        "403 egress.method_not_allowed",
        "403 egress.secret_in_request",
    ]
    assert [s["path"] for s in upstream.seen] == ["/from-sandbox"]
