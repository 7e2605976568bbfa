"""Fixtures for the egress tests: real HTTP servers on loopback and policies that open
loopback explicitly (default policies never reach 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shieldwall.egress.policy import EgressPolicy
from shieldwall.egress.ssrf import StaticResolver
from shieldwall.policy.sections.egress import EgressSection

ROLES = {"reader": ["GET"], "operator": ["GET", "POST", "PUT"], "admin": ["GET", "POST", "PUT", "DELETE"]}


@dataclass
class Upstream:
    """A loopback HTTP server that records what reached it."""

    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(up: Upstream) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            up.seen.append({"method": self.command, "path": self.path,
                            "headers": dict(self.headers.items()), "body": body})
            if self.path in up.redirects:
                self.send_response(302)
                self.send_header("Location", up.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith("/slow/"):  # /slow/MS: answer after MS milliseconds
                time.sleep(int(self.path.split("/")[2]) / 1000)
            if self.path.startswith("/big/"):
                size = int(self.path.split("/")[2])
                payload = b"a" * size
                ctype = "application/octet-stream"
            else:
                payload = json.dumps({"method": self.command, "path": self.path,
                                      "host": self.headers.get("Host"),
                                      "body": body.decode("latin-1")}).encode()
                ctype = "application/json"
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

    return H


def start_upstream(host: str = "127.0.0.1") -> tuple[Upstream, ThreadingHTTPServer]:
    srv = ThreadingHTTPServer((host, 0), _handler(Upstream(0)))
    up = Upstream(srv.server_address[1])
    srv.RequestHandlerClass = _handler(up)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return up, srv


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up, srv = start_upstream()
    yield up
    srv.shutdown()
    srv.server_close()


def make_policy(port: int | None = None, *, hosts: list[str] | None = None,
                private: list[str] | None = None, resolver: StaticResolver | None = None,
                **section: Any) -> EgressPolicy:
    """Loopback opened explicitly: '127.0.0.1' and names the static resolver maps to it."""
    ports = [port] if port else [80, 443]
    sec = EgressSection(
        allow_hosts=hosts if hosts is not None else ["allowed.test", "*.allowed.test", "127.0.0.1"],
        schemes=section.pop("schemes", ["http", "https"]),
        ports=ports,
        allow_private=private if private is not None else ["127.0.0.1"],
        **section,
    )
    res = resolver or StaticResolver({
        "allowed.test": ["127.0.0.1"],
        "api.allowed.test": ["127.0.0.1"],
        "internal.allowed.test": ["10.0.0.7"],
        "rebind.allowed.test": ["127.0.0.1"],
        "meta.allowed.test": ["169.254.169.254"],
        "mixed.allowed.test": ["127.0.0.1", "192.168.1.1"],
        "v6.allowed.test": ["::ffff:10.0.0.1"],
    })
    return EgressPolicy(sec, ROLES, resolver=res)
