"""The forward proxy against real loopback servers and real clients (httpx, raw sockets):
allowed requests pass unchanged; refusals are 403 with X-Shieldwall-Reason; malformed,
slow and oversized clients do not stall anyone else."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from egress_kit import Upstream, make_policy

from shieldwall.actions import Decision, Egress, Verdict
from shieldwall.egress.layer import egress_policy
from shieldwall.egress.proxy import (
    CredentialStore,
    EgressProxy,
    ProxyIdentity,
    hash_token,
    mint_token,
    policy_decider,
    session_decider,
)
from shieldwall.egress.ssrf import StaticResolver
from shieldwall.policy.load import parse_policy
from shieldwall.policy.sections.egress import ProxyCredential, ProxySettings
from shieldwall.wall import Shieldwall

LIVE = "db-pass-Zq8rT2vLw9Xk"
READER_TOKEN = "swp_reader-token-0123456789abcdefghijklmnop"
OPER_TOKEN = "swp_operator-token-0123456789abcdefghijklmn"


class ProxyThread:
    """Runs an EgressProxy on its own event loop in a thread."""

    def __init__(self, proxy: EgressProxy, unix_path: str | None = None) -> None:
        self.proxy = proxy
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.bound: list[str] = []
        self.unix_path = unix_path
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        _host, _, port = self.bound[0].rpartition(":")
        self.port = int(port)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.bound = await self.proxy.start("127.0.0.1", 0, self.unix_path)
            self.ready.set()

        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def creds() -> CredentialStore:
    return CredentialStore([
        ProxyCredential(agent="reader-bot", role="reader", token_sha256=hash_token(READER_TOKEN)),
        ProxyCredential(agent="oper-bot", role="operator", token_sha256=hash_token(OPER_TOKEN)),
    ])


def start_proxy(upstream: Upstream, decide=None, settings: ProxySettings | None = None,
                unix_path: str | None = None, **pol) -> ProxyThread:
    p = make_policy(upstream.port, **pol)
    d = decide or policy_decider(p, lambda: [LIVE])
    return ProxyThread(EgressProxy(p, d, creds(), settings or ProxySettings(header_timeout=1.0)),
                       unix_path)


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[ProxyThread]:
    t = start_proxy(upstream, hosts=["allowed.test", "*.allowed.test", "169.254.169.254"])
    yield t
    t.stop()


def client(pt: ProxyThread, token: str = OPER_TOKEN, agent: str = "oper-bot") -> httpx.Client:
    return httpx.Client(proxy=f"http://{agent}:{token}@127.0.0.1:{pt.port}", timeout=10, trust_env=False)


def raw(port: int, data: bytes, read: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if b"\r\n\r\n" in out and b"Connection: close" not in out.split(b"\r\n\r\n")[0]:
                    head, _, rest = out.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:") and len(rest) >= int(line.split(b":")[1]):
                            return out
        except TimeoutError:
            pass
        return out


def auth(token: str = OPER_TOKEN) -> bytes:
    return b"Proxy-Authorization: Bearer " + token.encode() + b"\r\n"


# --------------------------------------------------------------------------- allowed


def test_allowed_request_passes_unchanged(proxy: ProxyThread, upstream: Upstream) -> None:
    body = json.dumps({"q": "hello", "n": [1, 2, 3]}).encode()
    with client(proxy) as c:
        r = c.post(f"http://allowed.test:{upstream.port}/v1/things?a=1&b=%2F",
                   content=body, headers={"Content-Type": "application/json", "X-Trace": "t-1"})
    assert r.status_code == 200 and "x-shieldwall-reason" not in r.headers
    seen = upstream.seen[-1]
    assert (seen["method"], seen["path"], seen["body"]) == ("POST", "/v1/things?a=1&b=%2F", body)
    assert seen["headers"]["Host"] == f"allowed.test:{upstream.port}"
    assert seen["headers"]["X-Trace"] == "t-1"
    assert "Proxy-Authorization" not in seen["headers"]
    assert json.loads(r.content)["body"] == body.decode()


def test_keep_alive_serves_many_requests_on_one_connection(proxy: ProxyThread, upstream: Upstream) -> None:
    with client(proxy) as c:
        for i in range(20):
            assert c.get(f"http://allowed.test:{upstream.port}/n/{i}").status_code == 200
    assert [s["path"] for s in upstream.seen] == [f"/n/{i}" for i in range(20)]


def test_large_response_streams_through(proxy: ProxyThread, upstream: Upstream) -> None:
    with client(proxy) as c:
        r = c.get(f"http://allowed.test:{upstream.port}/big/1048576")
    assert r.status_code == 200 and r.content == b"a" * 1048576


def test_chunked_request_body_is_forwarded_with_a_length(proxy: ProxyThread, upstream: Upstream) -> None:
    req = (f"POST http://allowed.test:{upstream.port}/c HTTP/1.1\r\nHost: allowed.test\r\n"
           "Transfer-Encoding: chunked\r\n").encode() + auth() + b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    out = raw(proxy.port, req)
    assert out.startswith(b"HTTP/1.1 200")
    assert upstream.seen[-1]["body"] == b"hello world"


# --------------------------------------------------------------------------- refused


def _refused(pt: ProxyThread, method: str, url: str, token: str = OPER_TOKEN, agent: str = "oper-bot",
             **kw) -> httpx.Response:
    with client(pt, token, agent) as c:
        r = c.request(method, url, **kw)
    assert r.status_code == 403, r.text
    return r


@pytest.mark.parametrize(("url", "rule"), [
    ("http://evil.test/", "egress.host_not_allowed"),
    ("http://allowed.test.evil.test/", "egress.host_not_allowed"),
    ("http://internal.allowed.test/", "egress.private_address"),
    ("http://meta.allowed.test/", "egress.private_address"),
    ("http://169.254.169.254/latest/meta-data/", "egress.private_address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "egress.private_address"),
])
def test_refused_destinations(proxy: ProxyThread, upstream: Upstream, url: str, rule: str) -> None:
    url = url.replace("allowed.test/", f"allowed.test:{upstream.port}/")
    r = _refused(proxy, "GET", url)
    assert r.headers["x-shieldwall-reason"] == rule
    assert upstream.seen == []


def test_userinfo_trick_in_the_request_line_is_refused(proxy: ProxyThread, upstream: Upstream) -> None:
    for target in (f"http://allowed.test:{upstream.port}@evil.test/",
                   f"http://evil.test#@allowed.test:{upstream.port}/",
                   f"http://evil.test\\@allowed.test:{upstream.port}/"):
        out = raw(proxy.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
        assert out.startswith(b"HTTP/1.1 403"), (target, out[:200])
        assert b"X-Shieldwall-Reason: egress." in out
    assert upstream.seen == []


def test_delete_from_reader_is_refused(proxy: ProxyThread, upstream: Upstream) -> None:
    r = _refused(proxy, "DELETE", f"http://allowed.test:{upstream.port}/items/1", READER_TOKEN, "reader-bot")
    assert r.headers["x-shieldwall-reason"] == "egress.method_not_allowed"
    with client(proxy, READER_TOKEN, "reader-bot") as c:
        assert c.get(f"http://allowed.test:{upstream.port}/items/1").status_code == 200


def test_secrets_in_body_encodings_and_query_are_refused(proxy: ProxyThread, upstream: Upstream) -> None:
    url = f"http://allowed.test:{upstream.port}/upload"
    for body in (LIVE.encode(), base64.b64encode(LIVE.encode()), LIVE.encode().hex().encode(),
                 b"key=AKIAQYLPMN5HHHFPZAM2"):
        r = _refused(proxy, "POST", url, content=b"data=" + body)
        assert r.headers["x-shieldwall-reason"] == "egress.secret_in_request"
    r = _refused(proxy, "GET", url + "?t=" + LIVE)
    assert r.headers["x-shieldwall-reason"] == "egress.secret_in_request"
    assert LIVE not in r.text
    assert upstream.seen == []


def test_missing_or_wrong_credential_gets_407(proxy: ProxyThread, upstream: Upstream) -> None:
    url = f"http://allowed.test:{upstream.port}/"
    out = raw(proxy.port, f"GET {url} HTTP/1.1\r\nHost: allowed.test\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 407") and b"Proxy-Authenticate: Basic" in out
    with client(proxy, "swp_wrong", "oper-bot") as c:
        assert c.get(url).status_code == 407
    with client(proxy, OPER_TOKEN, "reader-bot") as c:  # token of another agent
        assert c.get(url).status_code == 407
    assert upstream.seen == []


def test_response_over_limit_is_refused(upstream: Upstream) -> None:
    pt = start_proxy(upstream, limits={"max_response_bytes": 1000})
    try:
        with client(pt) as c:
            r = c.get(f"http://allowed.test:{upstream.port}/big/5000")
        assert r.status_code == 502 and r.headers["x-shieldwall-reason"] == "egress.response_too_large"
    finally:
        pt.stop()


# --------------------------------------------------------------------------- CONNECT


def test_connect_tunnel_to_allowed_host_and_port(upstream: Upstream) -> None:
    pt = start_proxy(upstream)
    try:
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(f"CONNECT allowed.test:{upstream.port} HTTP/1.1\r\n".encode() + auth() + b"\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /through-tunnel HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and upstream.seen[-1]["path"] == "/through-tunnel"
        for target, rule in ((f"evil.test:{upstream.port}", b"egress.host_not_allowed"),
                             ("allowed.test:22", b"egress.port_not_allowed"),
                             (f"internal.allowed.test:{upstream.port}", b"egress.private_address"),
                             (f"169.254.169.254:{upstream.port}", b"egress.private_address")):
            out = raw(pt.port, f"CONNECT {target} HTTP/1.1\r\n".encode() + auth() + b"\r\n")
            assert out.startswith(b"HTTP/1.1 403") and rule in out, (target, out)
    finally:
        pt.stop()


def test_connect_needs_a_role_with_http_methods(upstream: Upstream) -> None:
    pt = start_proxy(upstream)
    try:
        pt.proxy.policy.role_methods["reader"] = frozenset()
        out = raw(pt.port, f"CONNECT allowed.test:{upstream.port} HTTP/1.1\r\n".encode() + auth(READER_TOKEN) + b"\r\n")
        assert out.startswith(b"HTTP/1.1 403") and b"egress.method_not_allowed" in out
    finally:
        pt.stop()


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("junk", [
    b"\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET http://allowed.test/ HTTP/9.9\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
    b"GET http://allowed.test/ HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    b"G\x00T http://allowed.test/ HTTP/1.1\r\n\r\n",
    b"GET /relative HTTP/1.1\r\nHost: allowed.test\r\nProxy-Authorization: Bearer " + OPER_TOKEN.encode() + b"\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
    b"Proxy-Authorization: Bearer " + OPER_TOKEN.encode() + b"\r\n\r\n0\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
    b"Proxy-Authorization: Bearer " + OPER_TOKEN.encode() + b"\r\n\r\nhello",
    b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: -1\r\n"
    b"Proxy-Authorization: Bearer " + OPER_TOKEN.encode() + b"\r\n\r\n",
    b"POST http://allowed.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
    b"Proxy-Authorization: Bearer " + OPER_TOKEN.encode() + b"\r\n\r\nzz\r\n",
])
def test_malformed_requests_get_4xx_and_the_proxy_keeps_serving(proxy: ProxyThread, upstream: Upstream,
                                                               junk: bytes) -> None:
    out = raw(proxy.port, junk)
    assert out.startswith((b"HTTP/1.1 400", b"HTTP/1.1 407", b"HTTP/1.1 501", b"HTTP/1.1 505")), out[:100]
    with client(proxy) as c:
        assert c.get(f"http://allowed.test:{upstream.port}/after").status_code == 200
    assert [s["path"] for s in upstream.seen] == ["/after"]


def test_oversized_headers_get_431(proxy: ProxyThread, upstream: Upstream) -> None:
    big = b"X-Big: " + b"a" * 70_000 + b"\r\n"
    out = raw(proxy.port, f"GET http://allowed.test:{upstream.port}/ HTTP/1.1\r\n".encode() + big + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    many = b"".join(f"X-H{i}: v\r\n".encode() for i in range(200))
    out = raw(proxy.port, f"GET http://allowed.test:{upstream.port}/ HTTP/1.1\r\n".encode() + many + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    assert upstream.seen == []


def test_oversized_body_gets_413(upstream: Upstream) -> None:
    pt = start_proxy(upstream, limits={"max_request_bytes": 1000})
    try:
        out = raw(pt.port, f"POST http://allowed.test:{upstream.port}/ HTTP/1.1\r\nContent-Length: 5000\r\n".encode()
                  + auth() + b"\r\n")
        assert out.startswith(b"HTTP/1.1 413") and b"egress.too_large" in out
    finally:
        pt.stop()


def test_slowloris_clients_do_not_stall_others(proxy: ProxyThread, upstream: Upstream) -> None:
    # Ten clients trickle a request head a byte at a time; meanwhile others are served,
    # and each slow client is cut off with 408 once the head deadline (1 s) passes.
    slow: list[socket.socket] = []
    for _ in range(10):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s.sendall(b"GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ")
        slow.append(s)
    stop = time.monotonic() + 1.5
    served = 0
    with client(proxy) as c:
        while time.monotonic() < stop:
            for s in slow:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            t0 = time.monotonic()
            assert c.get(f"http://allowed.test:{upstream.port}/fast").status_code == 200
            assert time.monotonic() - t0 < 0.9  # never waits behind a slow client
            served += 1
    assert served >= 5
    for s in slow:
        s.settimeout(3)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            pass
        s.close()
        assert data.startswith(b"HTTP/1.1 408")


def test_idle_connections_beyond_the_limit_get_503(upstream: Upstream) -> None:
    pt = start_proxy(upstream, settings=ProxySettings(header_timeout=2.0, max_connections=3))
    try:
        held = [socket.create_connection(("127.0.0.1", pt.port), timeout=5) for _ in range(3)]
        time.sleep(0.2)
        out = raw(pt.port, b"GET http://allowed.test/ HTTP/1.1\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503")
        for s in held:
            s.close()
    finally:
        pt.stop()


def test_unix_socket_listener(tmp_path: Path, upstream: Upstream) -> None:
    path = str(tmp_path / "egress.sock")
    pt = start_proxy(upstream, unix_path=path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(f"GET http://allowed.test:{upstream.port}/via-unix HTTP/1.1\r\nConnection: close\r\n".encode()
                      + auth() + b"\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200") and upstream.seen[-1]["path"] == "/via-unix"
    finally:
        pt.stop()


def test_a_failing_decide_fails_closed(upstream: Upstream) -> None:
    def broken(ident: ProxyIdentity, action: Egress) -> Decision:
        raise RuntimeError("store down")

    pt = start_proxy(upstream, decide=broken)
    try:
        with client(pt) as c:
            r = c.get(f"http://allowed.test:{upstream.port}/")
        assert r.status_code == 403 and r.headers["x-shieldwall-reason"] == "egress.decide_error"
        assert upstream.seen == []
    finally:
        pt.stop()


def test_decide_receives_the_credentials_identity(upstream: Upstream) -> None:
    seen: list[tuple[ProxyIdentity, str, str]] = []

    def record(ident: ProxyIdentity, action: Egress) -> Decision:
        seen.append((ident, action.method, action.url))
        return Decision(Verdict.ALLOW, action)

    pt = start_proxy(upstream, decide=record)
    try:
        with client(pt, READER_TOKEN, "reader-bot") as c:
            c.get(f"http://allowed.test:{upstream.port}/who")
        assert seen == [(ProxyIdentity("reader-bot", "reader"), "GET", f"http://allowed.test:{upstream.port}/who")]
    finally:
        pt.stop()


def test_credentials_are_stored_hashed_and_minted_random() -> None:
    token, digest = mint_token()
    assert digest == hash_token(token) and token not in digest and len(token) > 40
    store = CredentialStore([ProxyCredential(agent="a", role="reader", token_sha256=digest)])
    assert store.authenticate(f"Bearer {token}") == ProxyIdentity("a", "reader")
    basic = base64.b64encode(f"a:{token}".encode()).decode()
    assert store.authenticate(f"Basic {basic}") == ProxyIdentity("a", "reader")
    for bad in (None, "", "Bearer x", f"Basic {base64.b64encode(f'b:{token}'.encode()).decode()}",
                "Basic !!!", f"Digest {token}"):
        assert store.authenticate(bad) is None


# --------------------------------------------------------------------------- with the gate


def test_proxy_decides_through_a_session_and_audits(tmp_path: Path, upstream: Upstream) -> None:
    policy = parse_policy(f"""
version: 1
roles:
  reader: {{http_methods: [GET]}}
egress:
  allow_hosts: ["allowed.test"]
  schemes: [http]
  ports: [{upstream.port}]
  allow_private: ["127.0.0.1"]
  proxy:
    credentials:
      - {{agent: reader-bot, role: reader, token_sha256: "{hash_token(READER_TOKEN)}"}}
audit: {{path: audit.db}}
gate: {{layer_budget_ms: 10000}}  # a loaded CI machine must not turn into a timing test
""")
    wall = Shieldwall(policy, base_dir=tmp_path)
    pol = egress_policy(wall)
    pol.resolver.inner = StaticResolver({"allowed.test": ["127.0.0.1"]})
    pt = ProxyThread(EgressProxy(pol, session_decider(wall),
                                 settings=pol.section.proxy.model_copy(update={"header_timeout": 1.0})))
    try:
        with client(pt, READER_TOKEN, "reader-bot") as c:
            assert c.get(f"http://allowed.test:{upstream.port}/ok").status_code == 200
            r = c.delete(f"http://allowed.test:{upstream.port}/x")
            assert r.status_code == 403 and "method_not_allowed" in r.headers["x-shieldwall-reason"]
            r = c.get("http://evil.test/")
            assert r.headers["x-shieldwall-reason"] == "egress.host_not_allowed"
    finally:
        pt.stop()
    assert [s["path"] for s in upstream.seen] == ["/ok"]
    wall.close()
    import sqlite3

    rows = sqlite3.connect(tmp_path / "audit.db").execute("select * from sqlite_master").fetchall()
    assert rows  # the audit store exists; entries are checked below through the text
    text = (tmp_path / "audit.db").read_bytes()
    assert b"egress.host_not_allowed" in text and b"reader-bot" in text


def test_shieldwall_proxy_command_serves_on_a_unix_socket(tmp_path: Path, upstream: Upstream) -> None:
    import subprocess
    import sys

    sock = tmp_path / "p.sock"
    (tmp_path / "shieldwall.yaml").write_text(f"""
version: 1
roles:
  reader: {{http_methods: [GET]}}
egress:
  allow_hosts: ["127.0.0.1"]
  schemes: [http]
  ports: [{upstream.port}]
  allow_private: ["127.0.0.1"]
  proxy:
    credentials:
      - {{agent: reader-bot, role: reader, token_sha256: "{hash_token(READER_TOKEN)}"}}
audit: {{path: audit.db}}
""")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from shieldwall.cli import main; main()", "proxy",
         "--policy", str(tmp_path / "shieldwall.yaml"), "--unix", str(sock), "--no-tcp"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stdout.read() if proc.poll() is not None else "no socket"

        def ask(method: str, path: str) -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                s.connect(str(sock))
                s.sendall(f"{method} http://127.0.0.1:{upstream.port}{path} HTTP/1.1\r\n"
                          "Connection: close\r\n".encode() + auth(READER_TOKEN) + b"\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data

        assert ask("GET", "/cli").startswith(b"HTTP/1.1 200")
        denied = ask("DELETE", "/cli")
        assert denied.startswith(b"HTTP/1.1 403") and b"method_not_allowed" in denied
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # no credential at all
            s.settimeout(10)
            s.connect(str(sock))
            s.sendall(f"GET http://127.0.0.1:{upstream.port}/nocred HTTP/1.1\r\n\r\n".encode())
            assert s.recv(1000).startswith(b"HTTP/1.1 407")
        # The command audits refusals made before any session: the entry is committed
        # by the audit writer within its batch delay.
        import sqlite3

        rules: list[str] = []
        deadline = time.monotonic() + 10
        while "|egress.proxy_auth|" not in rules and time.monotonic() < deadline:
            time.sleep(0.1)
            if (tmp_path / "audit.db").exists():
                with sqlite3.connect(tmp_path / "audit.db") as db:
                    rules = [r for (r,) in db.execute("SELECT rules FROM entries")]
        assert "|egress.proxy_auth|" in rules and "|policy.method_not_allowed|" in rules
    finally:
        proc.terminate()
        proc.wait(10)
    assert [s["path"] for s in upstream.seen] == ["/cli"]


def test_decisions_in_worker_threads(upstream: Upstream) -> None:
    pt = start_proxy(upstream, settings=ProxySettings(header_timeout=1.0, decide_in_threads=True))
    try:
        assert pt.proxy.decide_in_thread
        with client(pt) as c:
            assert c.get(f"http://allowed.test:{upstream.port}/t").status_code == 200
            assert c.get("http://evil.test/").headers["x-shieldwall-reason"] == "egress.host_not_allowed"
    finally:
        pt.stop()


# --------------------------------------------------------------------------- early refusals


def _audited(wall: Shieldwall) -> list[dict]:
    from shieldwall.audit.canonical import parse_leaf

    wall.audit.flush()
    return [parse_leaf(bytes(leaf))[0] for _, leaf, _ in wall.audit.store.iter_leaves()]


def _early_wall(tmp_path: Path, upstream: Upstream) -> Shieldwall:
    policy = parse_policy(f"""
version: 1
roles:
  reader: {{http_methods: [GET, POST]}}
egress:
  allow_hosts: ["allowed.test"]
  schemes: [http]
  ports: [{upstream.port}]
  allow_private: ["127.0.0.1"]
  limits: {{max_request_bytes: 1000}}
  proxy:
    credentials:
      - {{agent: reader-bot, role: reader, token_sha256: "{hash_token(READER_TOKEN)}"}}
audit: {{path: audit.db}}
gate: {{layer_budget_ms: 10000}}
""")
    return Shieldwall(policy, base_dir=tmp_path)


def test_refusals_before_a_session_exists_are_audited(tmp_path: Path, upstream: Upstream) -> None:
    from shieldwall.egress.proxy import audit_early_refusals

    wall = _early_wall(tmp_path, upstream)
    pol = egress_policy(wall)
    pol.resolver.inner = StaticResolver({"allowed.test": ["127.0.0.1"]})
    pt = ProxyThread(EgressProxy(pol, session_decider(wall), refused=audit_early_refusals(wall),
                                 settings=pol.section.proxy.model_copy(update={"header_timeout": 1.0})))
    url = f"http://allowed.test:{upstream.port}/x"
    wrong = "swp_not-a-real-token-but-looks-like-one-123"
    try:
        assert raw(pt.port, f"GET {url} HTTP/1.1\r\nHost: allowed.test\r\n\r\n".encode()).startswith(b"HTTP/1.1 407")
        out = raw(pt.port, f"GET {url} HTTP/1.1\r\nProxy-Authorization: Bearer {wrong}\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 407")
        assert raw(pt.port, b"NOT A REQUEST\r\n\r\n").startswith(b"HTTP/1.1 400")
        out = raw(pt.port, f"POST {url} HTTP/1.1\r\nContent-Length: 5000\r\n".encode() + auth(READER_TOKEN) + b"\r\n")
        assert out.startswith(b"HTTP/1.1 413")
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:  # a slow head
            s.sendall(b"GET http://allowed.test/ HTTP/1.1\r\nX-Slow: ")
            assert s.recv(1000).startswith(b"HTTP/1.1 408")
        with client(pt, READER_TOKEN, "reader-bot") as c:
            assert c.get(url).status_code == 200  # the proxy went on serving
    finally:
        pt.stop()
    entries = _audited(wall)
    early = [(e["agent"], e["findings"][0]["rule"]) for e in entries if e["session"] == "proxy"]
    assert early == [("(unauthenticated)", "egress.proxy_auth"), ("(unauthenticated)", "egress.proxy_auth"),
                     ("(unauthenticated)", "egress.proxy_malformed"), ("reader-bot", "egress.too_large"),
                     ("(unauthenticated)", "egress.proxy_timeout")]
    assert all(e["verdict"] == "deny" and e["findings"][0]["evidence"] == "peer 127.0.0.1"
               for e in entries if e["session"] == "proxy")
    assert [e["tool"] for e in entries if e["session"] == "proxy"][:2] == [url, url]
    # the allowed request is the gate's own entry; no credential is ever written down
    assert [e["verdict"] for e in entries if e["session"] != "proxy"] == ["allow"]
    wall.close()
    text = (tmp_path / "audit.db").read_bytes()
    assert wrong.encode() not in text and READER_TOKEN.encode() not in text


def test_an_early_refusal_flood_is_counted_not_written_one_by_one(tmp_path: Path, upstream: Upstream) -> None:
    from shieldwall.egress.proxy import EarlyRefusal, audit_early_refusals

    wall = _early_wall(tmp_path, upstream)
    now = [100.0]
    record = audit_early_refusals(wall, per_second=3, clock=lambda: now[0])
    e = EarlyRefusal(407, "egress.proxy_auth", "proxy credential missing", "10.1.2.3", "GET", "http://x.test/", None)
    for _ in range(10):
        record(e)
    assert len(_audited(wall)) == 3
    now[0] += 1.5
    record(e)
    entries = _audited(wall)
    assert len(entries) == 4
    assert "7 more early refusals were not recorded" in entries[-1]["findings"][0]["message"]
    wall.close()


def _echo_server() -> tuple[socket.socket, list[bytes]]:
    """A TCP echo server on loopback (what a tunnel reaches), recording what arrives."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    got: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c: socket.socket) -> None:
                with c:
                    while data := c.recv(65536):
                        got.append(data)
                        c.sendall(data)

            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def test_the_kill_switch_cuts_a_tunnel_opened_before_it(tmp_path: Path) -> None:
    _tunnel_cut_case(tmp_path, break_store=False)


def test_an_open_tunnel_is_cut_when_its_revocation_cannot_be_checked(tmp_path: Path) -> None:
    """Fail closed: the store that holds the kill switch stops answering."""
    _tunnel_cut_case(tmp_path, break_store=True)


def _tunnel_cut_case(tmp_path: Path, break_store: bool) -> None:
    """CONNECT is decided once, when the tunnel opens. A hijacked agent that opened one
    before it was killed must not keep it: the proxy re-checks the revocation of every
    open tunnel (egress.proxy.tunnel_recheck) and cuts it, and says so in the audit log."""
    echo, got = _echo_server()
    port = echo.getsockname()[1]
    policy = parse_policy(f"""
roles:
  reader: {{http_methods: [GET]}}
egress:
  allow_hosts: ["allowed.test"]
  ports: [{port}]
  allow_private: ["127.0.0.1"]
  proxy:
    tunnel_recheck: 0.2
    credentials:
      - {{agent: reader-bot, role: reader, token_sha256: "{hash_token(READER_TOKEN)}"}}
audit: {{path: audit.db}}
gate: {{layer_budget_ms: 10000}}
""")
    wall = Shieldwall(policy, base_dir=tmp_path)
    pol = egress_policy(wall)
    pol.resolver.inner = StaticResolver({"allowed.test": ["127.0.0.1"]})
    from shieldwall.egress.proxy import audit_early_refusals

    pt = ProxyThread(EgressProxy(pol, session_decider(wall), refused=audit_early_refusals(wall)))
    try:
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(f"CONNECT allowed.test:{port} HTTP/1.1\r\n".encode() + auth(READER_TOKEN) + b"\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.sendall(b"before the kill")
            assert s.recv(100) == b"before the kill"
            if break_store:
                from shieldwall.stores import StoreError

                def down(*keys: str) -> bool:
                    raise StoreError("redis store unavailable: ConnectionError")

                wall.store.any_revoked = down  # type: ignore[method-assign]
            else:
                wall.kill(agent="reader-bot")
            s.settimeout(5)
            try:  # cut within a few recheck periods: EOF or a reset, not silence
                cut = s.recv(100) == b""
            except ConnectionResetError:
                cut = True
            assert cut
            with contextlib.suppress(OSError):
                s.sendall(b"after the kill")
        time.sleep(0.3)
        assert b"after the kill" not in b"".join(got)
        # A new tunnel is refused at once, by the gate.
        out = raw(pt.port, f"CONNECT allowed.test:{port} HTTP/1.1\r\n".encode() + auth(READER_TOKEN) + b"\r\n")
        assert out.startswith(b"HTTP/1.1 403")
        assert (b"gate.layer_error" if break_store else b"identity.revoked") in out
    finally:
        pt.stop()
        echo.close()
    wall.close()
    text = (tmp_path / "audit.db").read_bytes()
    why = b"the revocation check failed (StoreError)" if break_store else b"the agent or its session was revoked"
    assert b"open tunnel to allowed.test" in text and why in text
