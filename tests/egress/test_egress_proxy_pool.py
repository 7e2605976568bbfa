"""The proxy's event-driven path against a raw loopback server that names the connection
each request arrived on: kept upstream connections serve one agent, one host and one
policy; responses that are not length-framed (chunked, close-delimited) still relay;
pipelined and HEAD requests keep their framing; a kept connection the server dropped is
retried once on a fresh one."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from egress_kit import Upstream, make_policy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_egress_proxy import OPER_TOKEN, READER_TOKEN, ProxyThread, auth, creds, start_proxy

from shieldwall.actions import Decision, Egress, Verdict
from shieldwall.egress.proxy import EgressProxy, ProxyIdentity, _parse_head, _Reply, policy_decider
from shieldwall.policy.sections.egress import ProxySettings


@dataclass
class Raw:
    port: int
    seen: list[tuple[int, str, str]] = field(default_factory=list)  # (peer port, method, path)


def _serve_raw(rec: Raw) -> type[socketserver.BaseRequestHandler]:
    class H(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            peer = sock.getpeername()[1]
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _v = lines[0].split(" ")
                n = 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.lower() == "content-length":
                        n = int(v)
                while len(buf) < n:
                    buf += sock.recv(65536)
                buf = buf[n:]
                rec.seen.append((peer, method, path))
                if path == "/chunked":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                    continue
                if path == "/hang":
                    time.sleep(3)  # never answers in time
                    return
                if path == "/eof":
                    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
                    return
                body = json.dumps({"peer": peer, "path": path}).encode()
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                             + (b"" if method == "HEAD" else body))
                if path == "/drop":
                    return  # closes a connection the proxy may keep: its next use must retry

    return H


@pytest.fixture
def rawsrv() -> Iterator[Raw]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    rec = Raw(srv.server_address[1])
    srv.RequestHandlerClass = _serve_raw(rec)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield rec
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def pt(rawsrv: Raw) -> Iterator[ProxyThread]:
    p = make_policy(rawsrv.port)
    t = ProxyThread(EgressProxy(p, policy_decider(p), creds(), ProxySettings(header_timeout=2.0)))
    yield t
    t.stop()


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """One response with a Content-Length body (or none for HEAD, by the caller)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk
        rest += chunk
    assert len(rest) == n, "more bytes than the response announced"
    return head, rest


def get(pt: ProxyThread, url: str, token: str = OPER_TOKEN, method: str = "GET") -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(f"{method} {url} HTTP/1.1\r\nHost: x\r\n".encode() + auth(token) + b"\r\n")
        head, body = read_response(s)
    assert head.startswith(b"HTTP/1.1 200"), head
    out: dict[str, object] = json.loads(body)
    return out


def on_loop(pt: ProxyThread, fn: object) -> None:
    async def run() -> None:
        fn()  # type: ignore[operator]

    asyncio.run_coroutine_threadsafe(run(), pt.loop).result(5)


def test_kept_upstream_connections_serve_one_agent(pt: ProxyThread, rawsrv: Raw) -> None:
    url = f"http://127.0.0.1:{rawsrv.port}/p"
    oper = {get(pt, url)["peer"] for _ in range(3)}
    reader = {get(pt, url, READER_TOKEN)["peer"] for _ in range(3)}
    # Each agent's requests (three client connections each) reuse one upstream connection,
    # and no upstream connection ever carries both agents' requests.
    assert len(oper) == 1 and len(reader) == 1 and not oper & reader
    # The loop thread returns a connection to the pool just after writing the response,
    # so this thread may look a moment early: wait for it.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        agents = {key[0].agent for key in pt.proxy.pooled()}
        if agents == {"oper-bot", "reader-bot"}:
            break
        time.sleep(0.01)
    assert agents == {"oper-bot", "reader-bot"}


def test_kept_connections_are_per_host_even_at_the_same_address(pt: ProxyThread, rawsrv: Raw) -> None:
    # The first request to a name resolves it off the loop (stream-based path); later
    # ones find the pin and take kept connections.
    get(pt, f"http://allowed.test:{rawsrv.port}/warm")
    by_ip = get(pt, f"http://127.0.0.1:{rawsrv.port}/a")["peer"]
    by_name = get(pt, f"http://allowed.test:{rawsrv.port}/b")["peer"]  # resolves to 127.0.0.1
    assert by_ip != by_name
    assert get(pt, f"http://allowed.test:{rawsrv.port}/c")["peer"] == by_name


def test_a_policy_or_decider_change_retires_kept_connections(pt: ProxyThread, rawsrv: Raw) -> None:
    url = f"http://127.0.0.1:{rawsrv.port}/p"
    first = get(pt, url)["peer"]
    assert get(pt, url)["peer"] == first
    new_policy = make_policy(rawsrv.port)
    on_loop(pt, lambda: setattr(pt.proxy, "policy", new_policy))
    second = get(pt, url)["peer"]
    assert second != first
    on_loop(pt, lambda: setattr(pt.proxy, "decide", policy_decider(new_policy)))
    assert get(pt, url)["peer"] not in (first, second)


def test_a_refusal_after_a_policy_change_sends_nothing_upstream(pt: ProxyThread, rawsrv: Raw) -> None:
    get(pt, f"http://127.0.0.1:{rawsrv.port}/p")
    before = len(rawsrv.seen)
    closed = make_policy(rawsrv.port, hosts=["allowed.test"])  # 127.0.0.1 no longer allowed
    on_loop(pt, lambda: setattr(pt.proxy, "policy", closed))
    on_loop(pt, lambda: setattr(pt.proxy, "decide", policy_decider(closed)))
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/p HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
        head, _ = read_response(s)
    assert head.startswith(b"HTTP/1.1 403") and b"egress.host_not_allowed" in head
    assert len(rawsrv.seen) == before and pt.proxy.pooled() == {}


def test_chunked_and_close_delimited_responses_relay(pt: ProxyThread, rawsrv: Raw) -> None:
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/chunked HTTP/1.1\r\nHost: x\r\n".encode()
                  + auth() + b"\r\n")
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = s.recv(65536)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"hello\r\n6\r\n world" in data
        # The same client connection goes on (on the stream-based path).
        s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/after HTTP/1.1\r\nHost: x\r\n".encode()
                  + auth() + b"\r\n")
        head, body = read_response(s)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["path"] == "/after"
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/eof HTTP/1.1\r\nHost: x\r\n".encode()
                  + auth() + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    assert data.endswith(b"until the end")


def test_pipelined_requests_are_answered_in_order(pt: ProxyThread, rawsrv: Raw) -> None:
    reqs = b"".join(
        f"GET http://127.0.0.1:{rawsrv.port}/n{i} HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n"
        for i in range(5))
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(reqs)
        paths = []
        # Responses may arrive together in one read: take them from one buffered stream.
        with s.makefile("rb") as f:
            for _ in range(5):
                status = f.readline()
                assert status.startswith(b"HTTP/1.1 200"), status
                n = 0
                while (line := f.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                paths.append(json.loads(f.read(n))["path"])
    assert paths == [f"/n{i}" for i in range(5)]


def test_head_response_has_no_body_and_the_connection_goes_on(pt: ProxyThread, rawsrv: Raw) -> None:
    with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
        s.sendall(f"HEAD http://127.0.0.1:{rawsrv.port}/h HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"\r\n\r\n")
        s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/g HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
        _head, body = read_response(s)
    assert json.loads(body)["path"] == "/g"


def test_a_kept_connection_the_server_closed_is_retried_once(pt: ProxyThread, rawsrv: Raw) -> None:
    url = f"http://127.0.0.1:{rawsrv.port}"
    dropped = get(pt, url + "/drop")["peer"]  # kept by the proxy, closed by the server
    again = get(pt, url + "/after-drop")
    assert again["path"] == "/after-drop" and again["peer"] != dropped
    assert [p for _, _, p in rawsrv.seen] == ["/drop", "/after-drop"]


def test_a_rewritten_action_goes_where_the_decision_says(rawsrv: Raw) -> None:
    p = make_policy(rawsrv.port)

    def rewrite(ident: ProxyIdentity, action: Egress) -> Decision:
        changed = Egress(action.method, action.url.replace("/orig", "/changed"), action.headers, action.body)
        return Decision(Verdict.CHANGES, changed)

    pt = ProxyThread(EgressProxy(p, rewrite, creds(), ProxySettings(header_timeout=2.0)))
    try:
        assert get(pt, f"http://127.0.0.1:{rawsrv.port}/orig")["path"] == "/changed"
    finally:
        pt.stop()


def test_a_large_body_in_pieces_then_a_pipelined_request(upstream: Upstream) -> None:
    pt = start_proxy(upstream)
    words = b"order shipped to customer with invoice total amount and a note "
    body = (words * (300_000 // len(words) + 1))[:300_000]
    post = (f"POST http://allowed.test:{upstream.port}/up HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + auth() + b"\r\n" + body
    follow = f"GET http://allowed.test:{upstream.port}/next HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n"
    try:
        get_url = f"http://allowed.test:{upstream.port}/warm"  # resolve the name first
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(f"GET {get_url} HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
            read_response(s)
            wire = post + follow
            for i in range(0, len(wire), 70_001):  # pieces that do not line up with anything
                s.sendall(wire[i:i + 70_001])
            h1, _ = read_response(s)
            h2, b2 = read_response(s)
        assert h1.startswith(b"HTTP/1.1 200") and h2.startswith(b"HTTP/1.1 200")
        assert json.loads(b2)["path"] == "/next"
        assert [x["path"] for x in upstream.seen] == ["/warm", "/up", "/next"]
        assert upstream.seen[1]["body"] == body
    finally:
        pt.stop()


# --------------------------------------------------------------------------- head parser

_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def reference_headers(lines: list[str]) -> list[tuple[str, str]] | None:
    """The per-line rules, written out plainly: None where the head must be refused."""
    out = []
    for line in lines:
        name, sep, value = line.partition(":")
        if line[:1] in (" ", "\t") or not sep or not _NAME.fullmatch(name):
            return None
        value = value.strip(" \t")
        if _CTL.search(value):
            return None
        out.append((name, value))
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(alphabet="aZ-_:; \t\x01\x7f\x80\xe9\r\n.,=/\"'", max_size=12), max_size=8))
def test_head_parser_agrees_with_the_per_line_rules(lines: list[str]) -> None:
    head = ("GET http://a.test/ HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    split = "\r\n".join(lines).split("\r\n")
    while split and split[-1] == "":  # the head ends at its first empty line
        split.pop()
    expected = reference_headers(split)
    try:
        got: list[tuple[str, str]] | None = _parse_head(head).headers
    except _Reply as r:
        assert r.status == 400
        got = None
    assert got == expected


def test_an_upstream_that_does_not_answer_gets_504_and_others_go_on(rawsrv: Raw) -> None:
    p = make_policy(rawsrv.port, limits={"timeout": 1.0})
    pt = ProxyThread(EgressProxy(p, policy_decider(p), creds(), ProxySettings(header_timeout=5.0)))
    try:
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(f"GET http://127.0.0.1:{rawsrv.port}/hang HTTP/1.1\r\nHost: x\r\n".encode()
                      + auth() + b"\r\n")
            assert get(pt, f"http://127.0.0.1:{rawsrv.port}/meanwhile")["path"] == "/meanwhile"
            head, _ = read_response(s)
        assert head.startswith(b"HTTP/1.1 504") and b"Connection: close" in head
    finally:
        pt.stop()


def test_a_body_that_never_completes_gets_408(rawsrv: Raw) -> None:
    p = make_policy(rawsrv.port)
    pt = ProxyThread(EgressProxy(p, policy_decider(p), creds(),
                                 ProxySettings(header_timeout=5.0, body_timeout=1.0)))
    try:
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(f"POST http://127.0.0.1:{rawsrv.port}/slow HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 100\r\n".encode() + auth() + b"\r\n0123456789")
            head, _ = read_response(s)
        assert head.startswith(b"HTTP/1.1 408")
        assert rawsrv.seen == []
    finally:
        pt.stop()


# Parsed heads are memoised by their bytes; decisions never are.


def _same_head_three_times(port: int, url: str) -> list[bytes]:
    heads = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(3):
            s.sendall(f"GET {url} HTTP/1.1\r\nHost: x\r\n".encode() + auth() + b"\r\n")
            heads.append(read_response(s)[0])
    return heads


def test_identical_request_heads_are_decided_every_time(rawsrv: Raw) -> None:
    p = make_policy(rawsrv.port)
    inner = policy_decider(p)
    calls: list[int] = []

    def budget_of_two(ident: ProxyIdentity, action: Egress) -> Decision:
        calls.append(1)
        if len(calls) > 2:
            return Decision(Verdict.DENY, action, ())
        return inner(ident, action)

    t = ProxyThread(EgressProxy(p, budget_of_two, creds(), ProxySettings(header_timeout=2.0)))
    try:
        heads = _same_head_three_times(t.port, f"http://127.0.0.1:{rawsrv.port}/p")
    finally:
        t.stop()
    assert [h[:12] for h in heads] == [b"HTTP/1.1 200", b"HTTP/1.1 200", b"HTTP/1.1 403"]
    assert len(calls) == 3 and len(rawsrv.seen) == 2


def test_a_decider_that_edits_the_action_in_place_is_honoured_on_a_repeated_head(upstream: Upstream) -> None:
    p = make_policy(upstream.port)
    inner = policy_decider(p)
    n = [0]

    def tag(ident: ProxyIdentity, action: Egress) -> Decision:
        n[0] += 1
        if n[0] == 2:
            action.headers["X-Tag"] = "second"  # not a replacement: the same object, edited
        return inner(ident, action)

    t = ProxyThread(EgressProxy(p, tag, creds(), ProxySettings(header_timeout=2.0)))
    try:
        heads = _same_head_three_times(t.port, f"http://127.0.0.1:{upstream.port}/p")
    finally:
        t.stop()
    assert all(h.startswith(b"HTTP/1.1 200") for h in heads)
    assert [s["headers"].get("X-Tag") for s in upstream.seen] == [None, "second", None]


def test_a_malformed_head_is_refused_every_time_it_comes(pt: ProxyThread, rawsrv: Raw) -> None:
    bad = f"GET http://127.0.0.1:{rawsrv.port}/p HTTP/1.1\r\nBad Header: x\r\n".encode() + auth() + b"\r\n"
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", pt.port), timeout=5) as s:
            s.sendall(bad)
            assert s.recv(1000).startswith(b"HTTP/1.1 400")
    assert rawsrv.seen == []


def test_one_connection_changing_its_target_and_headers_gets_each_request_as_sent(upstream: Upstream) -> None:
    # The header block is parsed once while it repeats; the request line never is kept.
    p = make_policy(upstream.port)
    t = ProxyThread(EgressProxy(p, policy_decider(p), creds(), ProxySettings(header_timeout=2.0)))
    base = f"http://127.0.0.1:{upstream.port}"
    sent = [("GET", "/a?i=1", b"X-A: 1\r\n"), ("GET", "/b?i=2", b"X-A: 1\r\n"),
            ("HEAD", "/c", b"X-A: 1\r\n"), ("GET", "/d", b"X-A: 2\r\nX-B: b\r\n"),
            ("GET", "/e", b"X-A: 2\r\nX-B: b\r\n")]
    try:
        with socket.create_connection(("127.0.0.1", t.port), timeout=5) as s:
            for method, path, extra in sent:
                s.sendall(f"{method} {base}{path} HTTP/1.1\r\n".encode() + extra + auth() + b"\r\n")
                head, _ = read_response(s) if method != "HEAD" else (s.recv(65536), b"")
                assert head.startswith(b"HTTP/1.1 200"), head
            s.sendall(f"GET {base}/f HTTP/1.1\r\nX-A: 2\r\nBad Header: x\r\n".encode() + auth() + b"\r\n")
            assert s.recv(1000).startswith(b"HTTP/1.1 400")
    finally:
        t.stop()
    assert [(r["method"], r["path"]) for r in upstream.seen] == [(m, pa) for m, pa, _ in sent]
    assert [(r["headers"].get("X-A"), r["headers"].get("X-B")) for r in upstream.seen] == [
        ("1", None), ("1", None), ("1", None), ("2", "b"), ("2", "b")]
    assert all(r["headers"]["Host"] == f"127.0.0.1:{upstream.port}" for r in upstream.seen)
