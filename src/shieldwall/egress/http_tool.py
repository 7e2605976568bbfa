"""``http_request``: an HTTP client that goes through the egress policy, hop by hop.

Library users get egress control without running the proxy. The client never resolves a
name on its own: httpcore asks :class:`PinnedBackend` to connect, and the backend connects
to an address from :meth:`EgressPolicy.connect_addresses` (the pinned, checked answer the
gate saw). TLS still verifies the certificate against the name and sends it as SNI,
because httpcore takes those from the URL, not from the socket address. Redirects are
followed by hand, and every hop is checked again (host, scheme, port, addresses).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpcore

from ..actions import Decision, Egress, Finding, Severity, Verdict
from ..errors import Denied
from .policy import LAYER, EgressPolicy, EgressRefused, ParsedURL, UrlError

TOOL_NAME = "http_request"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin (they carry credentials).
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "host", "content-length"})


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str
    hops: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class PinnedBackend(httpcore.NetworkBackend):
    """Connects only to addresses the egress policy checked; never resolves by itself."""

    def __init__(self, policy: EgressPolicy, inner: httpcore.NetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner if inner is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        h = host[1:-1] if host.startswith("[") else host
        try:
            parsed = self.policy.parse(f"http://{'[' + h + ']' if ':' in h else h}:{port}/")
            addrs = self.policy.connect_addresses(parsed)
        except (UrlError, EgressRefused) as e:
            raise httpcore.ConnectError(f"egress refused connection to {host}:{port}: {e}") from None
        last: Exception | None = None
        for addr in addrs:
            try:
                return self.inner.connect_tcp(str(addr), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as e:
                last = e
        raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {last}")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("egress: Unix sockets are not reachable through http_request")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def _refusal(rule: str, message: str, evidence: str = "") -> Denied:
    f = Finding(LAYER, rule, message, Verdict.DENY, evidence=evidence, severity=Severity.HIGH)
    return Denied(Decision(Verdict.DENY, Egress("GET", evidence), (f,)))


class EgressClient:
    """An HTTP/1.1 client bound to one egress policy.

    ``decide`` (usually ``session.decide``) turns every hop into an audited ``Egress``
    decision; without it the policy's own checks are applied with ``role``'s methods.
    ``inspect_hops`` controls whether content inspection runs here: off for the built-in
    tool, whose first hop the gate inspected before secrets were resolved into it.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        decide: Callable[[Egress], Decision] | None = None,
        *,
        role: str | None = None,
        live_secrets: Callable[[], Iterable[str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        inspect_hops: bool = True,
    ) -> None:
        self.policy = policy
        self.decide = decide
        self.role = role
        self.live_secrets = live_secrets
        self.inspect_hops = inspect_hops
        self.pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or ssl.create_default_context(),
            network_backend=PinnedBackend(policy),
            max_connections=16,
            retries=0,
        )

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> EgressClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _gate(self, action: Egress, first: bool) -> Egress:
        if self.decide is not None:
            d = self.decide(action)
            if not d.allowed:
                raise Denied(d)
            assert isinstance(d.action, Egress)
            return d.action
        # Without a role the method was authorised by whoever called us (the gate, for
        # the built-in tool); hops only ever keep the method or turn it into GET/HEAD.
        methods = None if self.role is not None else frozenset({action.method})
        if first or self.inspect_hops:
            fs = self.policy.check(action, self.role, self.live_secrets, methods=methods)
        else:
            fs = self.policy.check(Egress(action.method, action.url), self.role, methods=methods)
        deny = [f for f in fs if f.verdict >= Verdict.ASK]
        if deny:
            raise Denied(Decision(max(f.verdict for f in deny), action, tuple(fs)))
        return action

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        follow_redirects: bool = True,
        pre_checked: bool = False,
    ) -> HttpResponse:
        """Send one request (following redirects, each hop checked). Raises ``Denied``."""
        limits = self.policy.limits
        hdrs = {k: v for k, v in (headers or {}).items() if k.lower() not in _HOP_BY_HOP}
        hops: list[str] = []
        action = Egress(method.upper(), url, hdrs, body)
        for hop in range(limits.max_redirects + 1):
            if not (pre_checked and hop == 0):
                action = self._gate(action, first=hop == 0)
            try:
                parsed = self.policy.parse(action.url)
            except UrlError as e:
                raise _refusal(e.rule, f"refused URL: {e}", action.url[:200]) from None
            hops.append(parsed.url)
            resp = self._send(parsed, action)
            location = resp.header("location")
            if not follow_redirects or resp.status not in _REDIRECTS or location is None:
                resp.hops = hops
                return resp
            nxt = urljoin(parsed.url, location)
            new_method = action.method
            new_body = action.body
            if resp.status == 303 or (resp.status in (301, 302) and action.method == "POST"):
                new_method, new_body = ("HEAD" if action.method == "HEAD" else "GET"), b""
            new_headers = dict(action.headers)
            try:
                same_origin = self.policy.parse(nxt).netloc == parsed.netloc
            except UrlError:
                same_origin = False
            if not same_origin:
                new_headers = {k: v for k, v in new_headers.items()
                               if k.lower() not in _CREDENTIAL_HEADERS}
            if not new_body:
                new_headers = {k: v for k, v in new_headers.items() if k.lower() != "content-type"}
            action = Egress(new_method, nxt, new_headers, new_body)
        raise _refusal("egress.too_many_redirects",
                       f"more than {limits.max_redirects} redirects (egress.limits.max_redirects)",
                       url[:200])

    def _send(self, parsed: ParsedURL, action: Egress) -> HttpResponse:
        limits = self.policy.limits
        headers = [("Host", parsed.host_header)]
        headers += [(k, v) for k, v in action.headers.items()]
        if action.body or action.method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(action.body))))
        hurl = httpcore.URL(scheme=parsed.scheme, host=parsed.host, port=parsed.port,
                            target=parsed.target)
        t = limits.timeout
        try:
            with self.pool.stream(
                action.method, hurl, headers=headers, content=action.body or None,
                extensions={"timeout": {"connect": t, "read": t, "write": t, "pool": t}},
            ) as r:
                chunks: list[bytes] = []
                size = 0
                for chunk in r.iter_stream():
                    size += len(chunk)
                    if size > limits.max_response_bytes:
                        raise _refusal(
                            "egress.response_too_large",
                            f"response from {parsed.netloc} exceeds "
                            f"egress.limits.max_response_bytes ({limits.max_response_bytes})",
                            parsed.url[:200],
                        )
                    chunks.append(chunk)
                hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in r.headers]
                return HttpResponse(r.status, hdrs, b"".join(chunks), parsed.url)
        except httpcore.ConnectError as e:
            if "egress refused" in str(e):
                raise _refusal("egress.private_address", str(e), parsed.url[:200]) from None
            raise


def http_request_tool(policy: EgressPolicy) -> Callable[..., dict[str, Any]]:
    """The built-in tool function. Its first hop has passed the gate as a ``ToolCall``
    (the egress layer checks ``http_request`` calls like ``Egress`` actions); redirect hops
    are checked here against the same policy."""
    client = EgressClient(policy, inspect_hops=False)

    def http_request(
        url: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: str | None = None,
    ) -> dict[str, Any]:
        """Send an HTTP request to an allowed host. Returns status, headers and text."""
        resp = client.request(method, url, headers or {}, (body or "").encode("utf-8"),
                              pre_checked=True)
        return {
            "status": resp.status,
            "headers": dict(resp.headers),
            "body": resp.text(),
            "url": resp.url,
        }

    return http_request
