"""``shieldwall proxy``: an asyncio HTTP/1.1 forward proxy — a face of the gate.

Every request is an ``Egress`` action decided by a ``decide(identity, egress)`` callable
(in production: a Session of the agent the proxy credential names, see
:func:`session_decider`). Plain-HTTP requests are read whole and inspected; ``CONNECT``
opens a tunnel only to an allowed host and port. Refusals are ``403`` with an
``X-Shieldwall-Reason`` header naming the rule ids. The proxy connects to the address
the egress policy checked (pinned DNS), never by name. Refusals made before any decision
(no or a wrong credential, a malformed, oversized or too slow request, the connection
limit) go to the ``refused`` hook; :func:`audit_early_refusals` writes them to the audit
log, so a probe that never gets a session still leaves a trace.

Robustness: request heads have a size limit (431) and a deadline (408, so slowloris
clients cannot hold a slot), bodies have a size limit (413) and a deadline, malformed
requests get 400, and ambiguous framing (``Content-Length`` with ``Transfer-Encoding``,
conflicting lengths, obsolete line folding) is refused: no request smuggling. DNS is
resolved off the loop before deciding; decisions run on the loop (fastest) or, with
``egress.proxy.decide_in_threads``, in worker threads so a remote store's latency never
holds up other connections.

Two paths, one set of rules. Every connection starts on the event-driven path
(:class:`_FastClient`, protocol callbacks, no task per connection): it takes plain-HTTP
requests with no body or a ``Content-Length`` body whose host is an IP or a pinned name,
decides on the loop, sends the request on a kept upstream connection and relays a
length-framed response as its bytes arrive (upstream reading pauses while the client's
buffer is full). Deadlines are checked by one sweeper task. Kept upstream connections
(:class:`_UpConn`) are keyed by (agent identity, scheme, host, port), reused only to an
address the current decision checked, and all retired when the policy or the decider
is replaced. Anything else — ``CONNECT``, chunked request bodies, decisions in threads,
a DNS miss, a response that is chunked or close-delimited — moves the connection, with
the bytes not yet consumed, to the stream-based path (:meth:`EgressProxy._client`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import secrets as _secrets
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..actions import Decision, Egress, Finding, Severity, Verdict
from ..policy.sections.egress import ProxyCredential, ProxySettings
from .policy import LAYER, EgressPolicy, EgressRefused, ParsedURL, UrlError

if TYPE_CHECKING:
    from ..wall import Shieldwall

log = logging.getLogger("shieldwall.egress.proxy")

_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length", "expect",
})
_RESP_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-connection",
                       "upgrade", "trailer"})
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed",
            505: "HTTP Version Not Supported",
            407: "Proxy Authentication Required", 408: "Request Timeout",
            413: "Content Too Large", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
_MAX_HEADERS = 100
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_TRAILERS = 32
# A whole header block at once: token ':' then only tab, visible ASCII and obs-text per
# line (what the per-line checks below accept); a head that fails this gets the per-line
# checks for the exact reason.
_HEADER_BLOCK = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*(?:\r\n|\Z))*")


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class ProxyIdentity:
    agent: str
    role: str
    task: str | None = None


def hash_token(token: str) -> str:
    """The form stored in the policy: ``sha256:<hex>`` (tokens are 32 random bytes, so a
    fast hash is enough; a slow KDF protects guessable passwords, which these are not)."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def mint_token() -> tuple[str, str]:
    """A new proxy token and its hash for ``egress.proxy.credentials``."""
    token = "swp_" + _secrets.token_urlsafe(32)
    return token, hash_token(token)


class CredentialStore:
    """Maps a ``Proxy-Authorization`` header to the agent it belongs to.

    ``Basic`` (user = agent name, password = token) and ``Bearer`` (token) are accepted.
    Only hashes are held; every failure is the same ``None``.
    """

    def __init__(self, credentials: Iterable[ProxyCredential]) -> None:
        self._by_hash: dict[str, ProxyIdentity] = {
            c.token_sha256: ProxyIdentity(c.agent, c.role, c.task) for c in credentials
        }
        self._cache: dict[str, ProxyIdentity] = {}

    def authenticate(self, header: str | None) -> ProxyIdentity | None:
        if not header:
            return None
        hit = self._cache.get(header)
        if hit is not None:
            return hit
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        user: str | None = None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            user, sep, token = decoded.partition(":")
            if not sep:
                return None
        elif scheme.lower() == "bearer":
            token = value
        else:
            return None
        digest = hash_token(token)
        ident = self._by_hash.get(digest)
        if ident is None:
            return None
        stored = next(k for k, v in self._by_hash.items() if v is ident)
        if not hmac.compare_digest(stored, digest):
            return None
        if user and user != ident.agent:
            return None
        if len(self._cache) < 4096:
            self._cache[header] = ident
        return ident


Decide = Callable[[ProxyIdentity, Egress], Decision]


class SessionDecider:
    """A ``decide`` that asks a Session of the credential's agent (one per identity).

    The session id is ``prx_<run>_<digest of agent, role, task>``: the worker processes of
    one ``shieldwall proxy --workers N`` share ``run``, so an agent has the same session
    (budgets, rate buckets, revocation) in every worker when the store is shared. A new
    run (a restart of the proxy) opens new sessions. :meth:`revoked` lets the proxy cut
    a tunnel it opened earlier once the kill switch is pulled."""

    def __init__(self, wall: Shieldwall, run: str | None = None) -> None:
        import threading

        self.wall = wall
        self.run = run or _secrets.token_hex(4)
        self.sessions: dict[ProxyIdentity, Any] = {}
        self._lock = threading.Lock()

    def session_id(self, ident: ProxyIdentity) -> str:
        who = "\0".join((ident.agent, ident.role, ident.task or ""))
        return f"prx_{self.run}_{hashlib.sha256(who.encode()).hexdigest()[:16]}"

    def __call__(self, ident: ProxyIdentity, action: Egress) -> Decision:
        s = self.sessions.get(ident)  # a dict read is atomic; the lock guards the first open
        if s is None:
            with self._lock:
                s = self.sessions.get(ident)
                if s is None:
                    s = self.wall.session(agent=ident.agent, role=ident.role, task=ident.task,
                                          session_id=self.session_id(ident))
                    self.sessions[ident] = s
        d: Decision = s.decide(action)
        return d

    def revoked(self, ident: ProxyIdentity) -> bool:
        """Whether the kill switch now covers this identity's session or agent (a store
        error raises: the caller treats that as revoked)."""
        return self.wall.store.any_revoked("session:" + self.session_id(ident),
                                           "agent:" + ident.agent)


def session_decider(wall: Shieldwall, run: str | None = None) -> SessionDecider:
    """See :class:`SessionDecider`."""
    return SessionDecider(wall, run)


def audit_early_refusals(wall: Shieldwall, per_second: float = 50.0,
                         clock: Callable[[], float] | None = None) -> Callable[[EarlyRefusal], None]:
    """A ``refused`` hook that writes each :class:`EarlyRefusal` to ``wall``'s audit log
    (event ``decision``, verdict deny, layer ``egress``), under the credential's agent when
    it is known, else ``(unauthenticated)``.

    Whoever can reach the proxy can make these, without a credential: past ``per_second``
    entries in a second the rest are counted, and the count is written with the next
    entry that is recorded, so a flood cannot fill the log but is still visible."""
    import time

    now = clock or time.monotonic
    window = [0.0, 0.0, 0]  # second started, entries in it, not recorded since the last entry

    def record(e: EarlyRefusal) -> None:
        t = now()
        if t - window[0] >= 1.0:
            window[0], window[1] = t, 0.0
        if window[1] >= per_second:
            window[2] += 1
            return
        window[1] += 1
        skipped, window[2] = window[2], 0
        note = f" ({skipped} more early refusals were not recorded one by one)" if skipped else ""
        ident = e.ident
        state = wall.bare_state(ident.agent if ident else "(unauthenticated)", "proxy",
                                role=ident.role if ident else "",
                                task=ident.task if ident else None)
        f = Finding(LAYER, e.rule, f"proxy answered {e.status}: {e.message}{note}", Verdict.DENY,
                    evidence=f"peer {e.peer}", severity=Severity.MEDIUM)
        act = Egress(e.method or "-", e.url[:2000], {}, b"")
        wall.gate.record(Decision(Verdict.DENY, act, (f,)), state)

    return record


# --------------------------------------------------------------------------- errors


class _Reply(Exception):
    """Answer the client with ``status`` and close (or keep) the connection.

    ``decided`` marks a refusal the decider made (the gate has audited it already); every
    other refusal happened before or outside a decision and goes to the proxy's
    ``refused`` hook. ``method``, ``url`` and ``ident`` say what is known of the request."""

    def __init__(self, status: int, message: str, rules: Iterable[str] = (), close: bool = True,
                 extra: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.rules = tuple(rules)
        self.close = close
        self.extra = tuple(extra)
        self.decided = False
        self.method = ""
        self.url = ""
        self.ident: ProxyIdentity | None = None

    def about(self, req: _Request, ident: ProxyIdentity | None) -> _Reply:
        if not self.method:
            self.method, self.url, self.ident = req.method, req.target, ident
        return self


# Rule ids for refusals made before any decision (no session exists yet).
_EARLY_RULES = {400: "egress.proxy_malformed", 501: "egress.proxy_malformed",
                505: "egress.proxy_malformed", 407: "egress.proxy_auth",
                408: "egress.proxy_timeout", 413: "egress.too_large", 431: "egress.too_large",
                503: "egress.proxy_busy"}


@dataclass(frozen=True, slots=True)
class EarlyRefusal:
    """A refusal the proxy made on its own, before (or outside) a decision: a missing or
    wrong credential, a malformed, oversized or too slow request, the connection limit,
    an address that failed its check at connect time, an oversized response."""

    status: int
    rule: str
    message: str
    peer: str
    method: str
    url: str
    ident: ProxyIdentity | None


def _early(r: _Reply, peer: Any) -> EarlyRefusal | None:
    """The refusal to audit, or None: a decider's refusal (audited by the gate) or an
    upstream failure after an allowed, audited decision (502/504 with no rule)."""
    if r.decided:
        return None
    rule = r.rules[0] if r.rules else _EARLY_RULES.get(r.status)
    if rule is None:
        return None
    who = peer[0] if isinstance(peer, tuple) and peer else (str(peer) if peer else "unix")
    return EarlyRefusal(r.status, rule, r.message, str(who), r.method, r.url, r.ident)


class _Closed(Exception):
    """The client went away: nothing to answer."""


@dataclass(slots=True)
class _Headers:
    """A parsed header block (the head after its request line), shared by the requests
    of one connection that send the same block: parsing is a pure function of the bytes.
    Derived once, on first use: the end-to-end headers, whether the client asked to close
    (per HTTP version) and those headers as upstream head lines. Never a decision."""

    raw: bytes
    headers: list[tuple[str, str]]
    index: dict[str, list[str]]  # lower-case name -> values, in order
    fwd: dict[str, str] | None = None
    closes: tuple[str, bool] | None = None
    lines: bytes | None = None


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    block: _Headers

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self.block.headers

    def get(self, name: str) -> str | None:
        """``name`` in lower case."""
        vs = self.block.index.get(name)
        return vs[0] if vs else None

    def all(self, name: str) -> list[str]:
        """``name`` in lower case."""
        return self.block.index.get(name, [])


def _parse_head(head: bytes) -> _Request:
    """A whole request head: request line, header block, the empty line."""
    first = head.find(b"\r\n")
    if first < 0:
        first = len(head)
    rest = head[first + 2:]
    method, target, version = _request_line(head[:first], not rest.replace(b"\r\n", b""))
    return _Request(method, target, version, _parse_headers(rest))


def _request_line(line: bytes | bytearray, alone: bool) -> tuple[str, str, str]:
    """Method, target and version. ``alone``: only empty lines follow (an all-empty head is
    an 'empty request')."""
    text = line.decode("latin-1")
    if not text and alone:
        raise _Reply(400, "empty request")
    parts = text.split(" ")
    if len(parts) != 3:
        raise _Reply(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise _Reply(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Reply(400 if not version.startswith("HTTP/") else 505, "unsupported HTTP version")
    if not target or _BAD_TARGET.search(target):
        raise _Reply(400, "malformed request target")
    return method, target, version


def _parse_headers(raw: bytes) -> _Headers:
    """The header block after the request line, up to and including the empty line."""
    lines = raw.decode("latin-1").split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    headers: list[tuple[str, str]] = []
    index: dict[str, list[str]] = {}
    if len(lines) <= _MAX_HEADERS and _HEADER_BLOCK.fullmatch("\r\n".join(lines)):
        for line in lines:
            name, _, value = line.partition(":")
            value = value.strip(" \t")
            headers.append((name, value))
            lname = name.lower()
            vs = index.get(lname)
            if vs is None:
                index[lname] = [value]
            else:
                vs.append(value)
        return _Headers(raw, headers, index)
    for line in lines:
        if line[:1] in (" ", "\t"):
            raise _Reply(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _Reply(400, "malformed header line")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise _Reply(400, "control character in header value")
        headers.append((name, value))
        lname = name.lower()
        vs = index.get(lname)
        if vs is None:
            index[lname] = [value]
        else:
            vs.append(value)
        if len(headers) > _MAX_HEADERS:
            raise _Reply(431, "too many header fields")
    return _Headers(raw, headers, index)


def _framing(req: _Request, max_body: int) -> tuple[str, int]:
    """('none'|'length'|'chunked', length). Refuses ambiguous framing (smuggling)."""
    te = req.all("transfer-encoding")
    cl = req.all("content-length")
    if te and cl:
        raise _Reply(400, "both Transfer-Encoding and Content-Length")
    if te:
        codings = [c.strip().lower() for v in te for c in v.split(",")]
        if codings != ["chunked"]:
            raise _Reply(501, "only 'Transfer-Encoding: chunked' is supported")
        return "chunked", 0
    if cl:
        values = {v.strip() for c in cl for v in c.split(",")}
        if len(values) != 1:
            raise _Reply(400, "conflicting Content-Length values")
        v = values.pop()
        if not v.isdigit() or len(v) > 15:
            raise _Reply(400, "invalid Content-Length")
        n = int(v)
        if n > max_body:
            raise _Reply(413, f"request body over {max_body} bytes", ["egress.too_large"])
        return "length", n
    return "none", 0


async def _read_chunked(reader: asyncio.StreamReader, limit: int,
                        sink: Callable[[bytes], Any] | None = None) -> bytes:
    """Read a chunked body. With ``sink`` the raw bytes are passed on and not kept."""
    body = bytearray()
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise _Reply(400 if sink is None else 502, "malformed chunk size")
        size = int(size_text, 16)
        if sink is not None:
            await sink(line)
        if size == 0:
            for _ in range(_MAX_TRAILERS):
                t = await reader.readuntil(b"\r\n")
                if sink is not None:
                    await sink(t)
                if t == b"\r\n":
                    return bytes(body)
            raise _Reply(400, "too many trailer fields")
        total += size
        if total > limit:
            raise _Reply(413 if sink is None else 502, f"body over {limit} bytes",
                         ["egress.too_large" if sink is None else "egress.response_too_large"])
        data = await reader.readexactly(size)
        crlf = await reader.readexactly(2)
        if crlf != b"\r\n":
            raise _Reply(400 if sink is None else 502, "malformed chunk")
        if sink is not None:
            await sink(data + crlf)
        else:
            body += data


async def _drain(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Flow control with a deadline: a client that stops reading is cut off, not waited on."""
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise _Closed() from None


def _reply_bytes(r: _Reply) -> bytes:
    body = (r.message + "\n").encode("utf-8", "replace")
    lines = [f"HTTP/1.1 {r.status} {_REASONS.get(r.status, 'Error')}",
             "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    if r.rules:
        lines.append("X-Shieldwall-Reason: " + ", ".join(r.rules))
    lines += [f"{k}: {v}" for k, v in r.extra]
    if r.close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


def _header_lines(headers: dict[str, str]) -> bytes:
    """``Name: value\\r\\n`` for each header, as they go upstream."""
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1", "replace")


def _request_head(act: Egress, parsed: ParsedURL, lines: bytes | None = None) -> bytes:
    """The upstream request head: origin-form target, Host from the checked URL.
    ``lines``: ``act.headers`` already as :func:`_header_lines`."""
    start = f"{act.method} {parsed.target} HTTP/1.1\r\nHost: {parsed.host_header}\r\n"
    if act.body or act.method in ("POST", "PUT", "PATCH"):
        end = f"Content-Length: {len(act.body)}\r\n\r\n"
    else:
        end = "\r\n"
    return b"".join((start.encode("latin-1", "replace"),
                     _header_lines(act.headers) if lines is None else lines,
                     end.encode("latin-1")))


def _request_wire(act: Egress, parsed: ParsedURL) -> bytes:
    return _request_head(act, parsed) + act.body


def _client_close(req: _Request) -> bool:
    conn = (req.get("connection") or "").lower()
    return (req.version == "HTTP/1.0" and conn != "keep-alive") or "close" in conn \
        or "close" in (req.get("proxy-connection") or "").lower()


def _forward_headers(req: _Request) -> dict[str, str]:
    conn = req.get("connection")
    conn_tokens = {t.strip().lower() for t in conn.split(",")} if conn else set()
    headers: dict[str, str] = {}
    for k, v in req.headers:
        lk = k.lower()
        if lk in _HOP_BY_HOP or lk in conn_tokens:
            continue
        # A repeated field becomes one comma-joined value (RFC 9110, 5.3).
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return headers


def _deny_reply(d: Decision) -> _Reply:
    rules = sorted({f.rule for f in d.deciding()})
    msg = "; ".join(f.message for f in d.deciding())
    r = _Reply(403, f"refused by Shieldwall: {msg}", rules, close=False)
    r.decided = True
    return r


def _decide_failed(action: Egress, e: Exception) -> Decision:
    f = Finding(LAYER, "egress.decide_error",
                f"the decision failed ({type(e).__name__}); refused (fail closed)",
                Verdict.DENY, severity=Severity.HIGH)
    return Decision(Verdict.DENY, action, (f,))


# --------------------------------------------------------------------------- the proxy


def _peer_in(peer: Any, addrs: list[Any]) -> bool:
    try:
        return ipaddress.ip_address(peer[0]) in addrs
    except (TypeError, ValueError, IndexError):
        return False


@dataclass(slots=True)
class _Upstream:
    key: tuple[Any, ...]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class EgressProxy:
    """The forward proxy. ``start()`` listens on TCP and/or a Unix socket."""

    def __init__(
        self,
        policy: EgressPolicy,
        decide: Decide,
        credentials: CredentialStore | None = None,
        settings: ProxySettings | None = None,
        *,
        event: Callable[[dict[str, Any]], None] | None = None,
        upstream_ssl: ssl.SSLContext | None = None,
        workers: int = 8,
        decide_in_thread: bool | None = None,
        refused: Callable[[EarlyRefusal], None] | None = None,
        revoked: Callable[[ProxyIdentity], bool] | None = None,
    ) -> None:
        self._gen = 0
        self._pool: dict[tuple[Any, ...], list[_UpConn]] = {}
        self._fast: set[_FastClient] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._policy = policy
        self._decide_fn = decide
        self.settings = settings if settings is not None else policy.section.proxy
        self.credentials = credentials if credentials is not None else CredentialStore(
            self.settings.credentials)
        self.event = event
        # Refusals made before a decision exists (see EarlyRefusal); in production
        # :func:`audit_early_refusals` writes them to the wall's audit log.
        self.refused = refused
        # Asked every tunnel_recheck seconds for each open CONNECT tunnel: a decision was
        # made once, when it opened; a kill switch pulled since then cuts it. Defaults to
        # the decider's own ``revoked`` (a SessionDecider has one).
        self.revoked = revoked if revoked is not None else getattr(decide, "revoked", None)
        self.upstream_ssl = upstream_ssl
        self.servers: list[asyncio.Server] = []
        self.decide_in_thread = (self.settings.decide_in_threads if decide_in_thread is None
                                 else decide_in_thread)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sw-proxy")
        self._active = 0
        self._draining = False  # close(drain=...) under way: no new requests on old connections
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = {"requests": 0, "refused": 0, "errors": 0}

    # -- policy and decider: replacing either retires every pooled upstream connection

    @property
    def policy(self) -> EgressPolicy:
        return self._policy

    @policy.setter
    def policy(self, value: EgressPolicy) -> None:
        self._policy = value
        self._retire_pool()

    @property
    def decide(self) -> Decide:
        return self._decide_fn

    @decide.setter
    def decide(self, value: Decide) -> None:
        self._decide_fn = value
        self._retire_pool()

    def _retire_pool(self) -> None:
        self._gen += 1
        for conns in self._pool.values():
            for u in conns:
                u.close()
        self._pool.clear()

    def _pool_take(self, key: tuple[Any, ...], addrs: list[Any]) -> _UpConn | None:
        idle = self._pool.get(key)
        while idle:
            u = idle.pop()
            if u.gen == self._gen and u.addr in addrs and u.alive():
                return u
            u.close()
        return None

    def _pool_put(self, u: _UpConn) -> None:
        if u.gen != self._gen or not u.alive():
            u.close()
            return
        idle = self._pool.setdefault(u.key, [])
        if len(idle) >= 16:
            u.close()
            return
        u.idle_since = self._loop_time()
        idle.append(u)

    def _pool_drop(self, u: _UpConn) -> None:
        idle = self._pool.get(u.key)
        if idle and u in idle:
            idle.remove(u)
            if not idle:
                del self._pool[u.key]

    def pooled(self) -> dict[tuple[Any, ...], int]:
        """Idle upstream connections per key (agent identity, scheme, host, port)."""
        return {k: len(v) for k, v in self._pool.items() if v}

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def _sweep(self) -> None:
        """Deadlines of the event-driven connections: one timer for all of them."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_SWEEP)
            now = loop.time()
            for c in list(self._fast):
                if c.deadline and now > c.deadline:
                    try:
                        c.expired()
                    except Exception:  # one bad connection never stops the deadlines
                        self.stats["errors"] += 1
                        log.exception("proxy deadline handling failed")
                        c.abort()
            idle_max = self.settings.idle_timeout
            for conns in list(self._pool.values()):
                for u in list(conns):
                    if now - u.idle_since > idle_max:
                        u.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None,
                    unix_path: str | None = None, unix_mode: int = 0o666,
                    unix_identity: ProxyIdentity | None = None, *,
                    reuse_port: bool = False,
                    unix_sock: socket.socket | None = None) -> list[str]:
        """Listen; returns the addresses (``host:port`` / socket path) actually bound.

        ``unix_identity`` makes the Unix socket a per-agent door: whoever can reach that
        socket (one sandbox, into which only it is bound) acts as that identity, with no
        token inside the sandbox. Without it, Unix clients authenticate like TCP ones.

        For ``--workers N`` (see :mod:`shieldwall.egress.workers`): ``reuse_port`` lets every
        worker listen on the same TCP port (``SO_REUSEPORT``: the kernel spreads new
        connections over the workers), and ``unix_sock`` is the Unix socket their parent
        opened, accepted on by all of them instead of ``unix_path``."""
        bound: list[str] = []
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        if host is not None and port is not None:
            srv = await loop.create_server(lambda: _FastClient(self, None), host, port,
                                           reuse_address=True, reuse_port=reuse_port or None)
            self.servers.append(srv)
            for sock in srv.sockets:
                h, p = sock.getsockname()[:2]
                bound.append(f"{h}:{p}")
        ident = unix_identity
        if unix_sock is None and unix_path is not None:
            unix_sock = unix_listener(unix_path, unix_mode)
        if unix_sock is not None:
            usrv = await loop.create_unix_server(lambda: _FastClient(self, ident), sock=unix_sock)
            self.servers.append(usrv)
            bound.append(str(unix_sock.getsockname()))
        return bound

    async def close(self, drain: float = 0.0) -> None:
        """Stop. With ``drain`` > 0 (SIGTERM to ``shieldwall proxy``: ``drain_timeout``),
        stop accepting first, close idle keep-alive connections, let requests in flight
        finish (their connections close after the response) for up to ``drain`` seconds,
        and only then cut what is left (tunnels, slow transfers)."""
        for s in self.servers:
            s.close()
        if drain > 0:
            self._draining = True
            for c in list(self._fast):
                c.drain()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain
            while self._active > 0 and loop.time() < deadline:
                await asyncio.sleep(0.02)
        for t in list(self._tasks):
            t.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for c in list(self._fast):
            c.abort()
        self._retire_pool()
        for s in self.servers:
            await s.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _refused_early(self, r: _Reply, peer: Any) -> None:
        if self.refused is None:
            return
        e = _early(r, peer)
        if e is None:
            return
        try:
            self.refused(e)
        except Exception:  # the reply goes out regardless: it is a refusal already
            self.stats["errors"] += 1
            log.exception("recording an early refusal failed")

    def _emit(self, **event: Any) -> None:
        if self.event is not None:
            try:
                self.event(event)
            except Exception:  # an observer never breaks the proxy
                log.exception("proxy event observer failed")

    # -- one client connection -------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      fixed: ProxyIdentity | None = None, counted: bool = False,
                      resume: _Resume | None = None) -> None:
        """The stream-based path: CONNECT tunnels, chunked bodies, decisions in threads,
        DNS misses and responses that are not length-framed (the event-driven
        :class:`_FastClient` hands such connections over, with their unread bytes)."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        if not counted:
            self._active += 1
        up: list[_Upstream | None] = [None]
        try:
            if self._active > self.settings.max_connections:
                r = _Reply(503, "proxy is at its connection limit")
                self._refused_early(r, writer.get_extra_info("peername"))
                await self._send_reply(writer, r)
                return
            if resume is not None:
                try:
                    keep = await resume(up, writer)
                except _Reply as r:
                    self._refused_early(r, writer.get_extra_info("peername"))
                    await self._send_reply(writer, r)
                    keep = not r.close
                if not keep:
                    return
            peer = writer.get_extra_info("peername")
            for _ in range(10_000):  # keep-alive requests on one connection, bounded
                keep = await self._one(reader, writer, up, peer, fixed)
                if not keep or self._draining:
                    break
        except (_Closed, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            self.stats["errors"] += 1
            log.exception("proxy connection failed")
        finally:
            self._active -= 1
            if up[0] is not None:
                up[0].writer.close()
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   up: list[_Upstream | None], peer: Any, fixed: ProxyIdentity | None = None) -> bool:
        s = self.settings
        try:
            try:
                async with asyncio.timeout(s.header_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise _Reply(431, "request head too large") from None
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    raise _Reply(400, "incomplete request head") from None
                raise _Closed() from None
            except TimeoutError:
                raise _Reply(408, "request head not received in time") from None
            req = _parse_head(head)
            ident = fixed or self.credentials.authenticate(req.get("proxy-authorization"))
            try:
                if ident is None:
                    self._emit(event="proxy_auth_failed", peer=str(peer), method=req.method)
                    raise _Reply(407, "proxy credential missing or not recognised",
                                 ["egress.proxy_auth"],
                                 extra=[("Proxy-Authenticate", 'Basic realm="shieldwall"')])
                if req.method == "CONNECT":
                    await self._connect(req, ident, reader, writer)
                    return False
                return await self._forward(req, ident, reader, writer, up)
            except _Reply as r:
                raise r.about(req, ident) from None
        except _Reply as r:
            if r.status == 403:
                self.stats["refused"] += 1
            self._refused_early(r, peer)
            await self._send_reply(writer, r)
            return not r.close

    async def _send_reply(self, writer: asyncio.StreamWriter, r: _Reply) -> None:
        try:
            writer.write(_reply_bytes(r))
            await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, TimeoutError):
            raise _Closed() from None

    async def _decide(self, ident: ProxyIdentity, action: Egress) -> Decision:
        if not self.decide_in_thread:
            return self._decide_now(ident, action)
        loop = asyncio.get_running_loop()
        self.stats["requests"] += 1
        try:
            return await loop.run_in_executor(self._executor, self.decide, ident, action)
        except Exception as e:  # fail closed
            return _decide_failed(action, e)

    def _decide_now(self, ident: ProxyIdentity, action: Egress) -> Decision:
        self.stats["requests"] += 1
        try:
            return self.decide(ident, action)
        except Exception as e:  # fail closed
            return _decide_failed(action, e)

    async def _prime_dns(self, url: str) -> None:
        """Resolve off the event loop before deciding, so the egress layer's lookup (inside
        the decision) is a pin-cache hit and never blocks other connections."""
        try:
            parsed = self.policy.parse(url)
        except UrlError:
            return
        if parsed.ip is None and self.policy.resolver.cached(parsed.host) is None:
            await asyncio.to_thread(self.policy._prime, parsed)

    async def _addresses(self, parsed: ParsedURL) -> list[Any]:
        try:
            return await self.policy.aconnect_addresses(parsed)
        except EgressRefused as e:
            raise _Reply(403, f"refused by Shieldwall: {e.finding.message}",
                         [e.finding.rule], close=False) from None

    async def _open(self, parsed: ParsedURL, addrs: list[Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t = self.policy.limits.timeout
        tls: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            tls = self.upstream_ssl or ssl.create_default_context()
        last: Exception | None = None
        for addr in addrs:
            try:
                # Connect to the checked address; TLS verifies and sends SNI for the name.
                return await asyncio.wait_for(
                    asyncio.open_connection(str(addr), parsed.port, ssl=tls,
                                            server_hostname=parsed.host if tls else None,
                                            limit=self.policy.limits.max_header_bytes),
                    t)
            except (OSError, TimeoutError, ssl.SSLError) as e:
                last = e
        raise _Reply(502, f"cannot connect to {parsed.netloc}: {type(last).__name__}", close=False)

    async def _open_fast(self, key: tuple[Any, ...], parsed: ParsedURL,
                         addrs: list[Any]) -> _UpConn:
        loop = asyncio.get_running_loop()
        t = self.policy.limits.timeout
        tls: ssl.SSLContext | None = None
        if parsed.scheme == "https":
            tls = self.upstream_ssl or ssl.create_default_context()
        last: Exception | None = None
        for addr in addrs:
            try:
                # Connect to the checked address; TLS verifies and sends SNI for the name.
                _, proto = await asyncio.wait_for(
                    loop.create_connection(lambda a=addr: _UpConn(self, key, a), str(addr),
                                           parsed.port, ssl=tls,
                                           server_hostname=parsed.host if tls else None), t)
                return proto
            except (OSError, TimeoutError, ssl.SSLError) as e:
                last = e
        raise _Reply(502, f"cannot connect to {parsed.netloc}: {type(last).__name__}", close=False)

    # -- CONNECT -----------------------------------------------------------------

    async def _connect(self, req: _Request, ident: ProxyIdentity, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        if "/" in req.target or "@" in req.target:
            raise _Reply(400, "CONNECT target must be host:port")
        try:
            parsed = self.policy.parse(f"https://{req.target}/")
        except UrlError as e:
            raise _Reply(400, f"bad CONNECT target: {e}", [e.rule]) from None
        if not req.target.rsplit(":", 1)[-1].isdigit():
            raise _Reply(400, "CONNECT target must name a port")
        action = Egress("CONNECT", f"https://{parsed.netloc}/", {}, b"")
        await self._prime_dns(action.url)
        d = await self._decide(ident, action)
        if not d.allowed:
            r = _deny_reply(d)
            r.close = True
            raise r
        addrs = await self._addresses(parsed)
        t = self.policy.limits.timeout
        last: Exception | None = None
        for addr in addrs:
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(str(addr), parsed.port), t)
                break
            except (OSError, TimeoutError) as e:
                last = e
        else:
            raise _Reply(502, f"cannot connect to {parsed.netloc}: {type(last).__name__}")
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        self._emit(event="tunnel", agent=ident.agent, target=parsed.netloc)
        pipes = asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))
        watch = (asyncio.get_running_loop().create_task(self._watch_tunnel(ident, parsed, pipes, writer))
                 if self.revoked is not None else None)
        try:
            await pipes
        except asyncio.CancelledError:
            if watch is None or not watch.done():
                raise
        finally:
            if watch is not None:
                watch.cancel()
            uw.close()

    async def _watch_tunnel(self, ident: ProxyIdentity, parsed: ParsedURL,
                            pipes: asyncio.Future[Any], writer: asyncio.StreamWriter) -> None:
        """Cut an open tunnel once its agent or session is revoked (or the check fails:
        fail closed), within ``tunnel_recheck`` seconds of the kill."""
        assert self.revoked is not None
        every = self.settings.tunnel_recheck
        while not pipes.done():
            await asyncio.sleep(every)
            try:
                cut = self.revoked(ident)
                why = "the agent or its session was revoked (kill switch)"
            except Exception as e:  # the store cannot answer: the tunnel cannot stay
                cut, why = True, f"the revocation check failed ({type(e).__name__})"
            if cut and not pipes.done():
                self._emit(event="tunnel_cut", agent=ident.agent, target=parsed.netloc)
                r = _Reply(403, f"open tunnel to {parsed.netloc} cut: {why}", ["identity.revoked"])
                r.method, r.url, r.ident = "CONNECT", f"https://{parsed.netloc}/", ident
                self._refused_early(r, writer.get_extra_info("peername"))
                pipes.cancel()
                writer.transport.abort()
                return

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        idle = self.settings.idle_timeout
        try:
            while True:
                data = await asyncio.wait_for(src.read(65536), idle)
                if not data:
                    break
                dst.write(data)
                await _drain(dst, idle)
        except (ConnectionError, TimeoutError, _Closed):
            pass
        finally:
            try:
                if dst.can_write_eof():
                    dst.write_eof()
            except (OSError, RuntimeError):
                pass

    # -- plain HTTP ----------------------------------------------------------------

    async def _forward(self, req: _Request, ident: ProxyIdentity, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, up: list[_Upstream | None]) -> bool:
        lim = self.policy.limits
        if not req.target.lower().startswith(("http://", "https://")):
            raise _Reply(400, "not a proxy request: the target must be an absolute http:// URL")
        kind, length = _framing(req, lim.max_request_bytes)
        try:
            if kind == "length":
                async with asyncio.timeout(self.settings.body_timeout):
                    body = await reader.readexactly(length)
            elif kind == "chunked":
                body = await asyncio.wait_for(_read_chunked(reader, lim.max_request_bytes),
                                              self.settings.body_timeout)
            else:
                body = b""
        except TimeoutError:
            raise _Reply(408, "request body not received in time") from None
        except asyncio.LimitOverrunError:
            raise _Reply(400, "malformed chunked body") from None
        client_close = _client_close(req)
        headers = _forward_headers(req)
        action = Egress(req.method.upper(), req.target, headers, body)
        await self._prime_dns(req.target)
        d = await self._decide(ident, action)
        if not d.allowed:
            self._emit(event="refused", agent=ident.agent, rules=d.rules())
            r = _deny_reply(d)
            r.close = client_close
            raise r
        act = d.action if isinstance(d.action, Egress) else action
        try:
            parsed = self.policy.parse(act.url)
        except UrlError as e:
            raise _Reply(400, f"refused URL: {e}", [e.rule], close=client_close) from None
        addrs = await self._addresses(parsed)
        keep = await self._exchange(ident, parsed, addrs, act, writer, up,
                                    head_only=act.method == "HEAD")
        return keep and not client_close

    async def _exchange(self, ident: ProxyIdentity, parsed: ParsedURL, addrs: list[Any], act: Egress,
                        writer: asyncio.StreamWriter, up: list[_Upstream | None],
                        head_only: bool) -> bool:
        lim = self.policy.limits
        wire = _request_wire(act, parsed)
        # A kept upstream connection serves only the same agent, host, port, checked
        # address and policy generation.
        key = (ident, parsed.scheme, parsed.host, parsed.port, self._gen)
        for attempt in range(2):
            cur = up[0]
            fresh = False
            if cur is None or cur.key != key or cur.writer.is_closing() or cur.reader.at_eof() \
                    or not _peer_in(cur.writer.get_extra_info("peername"), addrs):
                if cur is not None:
                    cur.writer.close()
                ur, uw = await self._open(parsed, addrs)
                cur = up[0] = _Upstream(key, ur, uw)
                fresh = True
            try:
                cur.writer.write(wire)
                await cur.writer.drain()
                status, rhead = await self._response_head(cur.reader)
                break
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                cur.writer.close()
                up[0] = None
                # A reused keep-alive connection may have been closed by the server
                # before our request arrived: retry once on a fresh one.
                if fresh or attempt == 1:
                    raise _Reply(502, f"upstream {parsed.netloc} closed the connection",
                                 close=False) from e
        else:  # pragma: no cover
            raise _Reply(502, "upstream failed", close=False)
        return await self._relay(status, rhead, cur, writer, up, head_only, lim.max_response_bytes)

    async def _response_head(self, reader: asyncio.StreamReader) -> tuple[int, list[tuple[str, str]]]:
        t = self.policy.limits.timeout
        for _ in range(10):  # skip interim 1xx responses, bounded
            try:
                async with asyncio.timeout(t):
                    raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise _Reply(502, "upstream response head too large", close=True) from None
            except TimeoutError:
                raise _Reply(504, "upstream did not answer in time", close=True) from None
            lines = raw.decode("latin-1").split("\r\n")
            first = lines[0].split(" ", 2)
            if len(first) < 2 or not first[0].startswith("HTTP/1.") or not first[1].isdigit():
                raise _Reply(502, "malformed upstream response", close=True)
            status = int(first[1])
            headers: list[tuple[str, str]] = []
            for line in lines[1:]:
                if not line:
                    continue
                k, sep, v = line.partition(":")
                if not sep or line[:1] in (" ", "\t"):
                    raise _Reply(502, "malformed upstream header", close=True)
                headers.append((k.strip(), v.strip()))
            if 100 <= status < 200 and status != 101:
                continue
            return status, [("__status__", lines[0]), *headers]
        raise _Reply(502, "too many interim responses", close=True)

    async def _relay(self, status: int, rhead: list[tuple[str, str]], cur: _Upstream,
                     writer: asyncio.StreamWriter, up: list[_Upstream | None], head_only: bool,
                     limit: int) -> bool:
        status_line = rhead[0][1]
        headers = rhead[1:]
        lower = [(k.lower(), v) for k, v in headers]
        te = [v.lower() for k, v in lower if k == "transfer-encoding"]
        cls = {v.strip() for k, v in lower if k == "content-length"}
        conn = " ".join(v.lower() for k, v in lower if k == "connection")
        no_body = head_only or status in (204, 304) or 100 <= status < 200
        n = 0
        if te and te[-1].strip().endswith("chunked"):
            mode = "chunked"
        elif len(cls) == 1 and next(iter(cls)).isdigit():
            mode, n = "length", int(next(iter(cls)))
        elif cls:
            raise _Reply(502, "upstream sent conflicting Content-Length", close=True)
        else:
            mode = "eof"
        if no_body:
            mode = "none"
        if mode == "length" and n > limit:
            cur.writer.close()
            up[0] = None
            raise _Reply(502, f"upstream response of {n} bytes exceeds "
                         f"egress.limits.max_response_bytes ({limit})",
                         ["egress.response_too_large"], close=False)
        keep_up = mode in ("none", "length", "chunked") and "close" not in conn
        keep_client = mode != "eof"
        out = [status_line] + [f"{k}: {v}" for k, v in headers if k.lower() not in _RESP_HOP]
        if not keep_client:
            out.append("Connection: close")
        head = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1", "replace")
        t = self.policy.limits.timeout
        if mode == "length" and n <= 65536:
            # Small body: one write for head and body (one send, one wakeup of the client).
            try:
                async with asyncio.timeout(t):
                    data = await cur.reader.readexactly(n) if n else b""
            except (TimeoutError, asyncio.IncompleteReadError):
                cur.writer.close()
                up[0] = None
                raise _Reply(502, "upstream response body incomplete", close=True) from None
            writer.write(head + data)
            await _drain(writer, t)
            if not keep_up:
                cur.writer.close()
                up[0] = None
            return keep_client
        writer.write(head)

        async def sink(b: bytes) -> None:
            writer.write(b)
            await _drain(writer, t)

        try:
            if mode == "length":
                remaining = n
                while remaining > 0:
                    chunk = await asyncio.wait_for(cur.reader.read(min(remaining, 262144)), t)
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", remaining)
                    remaining -= len(chunk)
                    writer.write(chunk)
                    await _drain(writer, t)
            elif mode == "chunked":
                await asyncio.wait_for(_read_chunked(cur.reader, limit, sink), t)
            elif mode == "eof":
                total = 0
                while True:
                    chunk = await asyncio.wait_for(cur.reader.read(262144), t)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise _Closed()
                    writer.write(chunk)
                    await _drain(writer, t)
            else:
                await _drain(writer, t)
        except (_Reply, _Closed, asyncio.IncompleteReadError, TimeoutError):
            # Mid-body failure: the status line is already out, so the only honest signal
            # left is to cut both connections.
            cur.writer.close()
            up[0] = None
            raise _Closed() from None
        if not keep_up:
            cur.writer.close()
            up[0] = None
        return keep_client


# --------------------------------------------------------------------------- event-driven path

# The common case (absolute http(s) URL, no body or a Content-Length body, a cached DNS
# pin, a length-framed response) runs on protocol callbacks: no task, no stream buffers
# and no timeout context per request; response bytes go from the upstream socket to the
# client as they arrive, with flow control between the two. Anything else is handed to
# the stream-based path above, with the bytes not yet consumed, so both paths keep the
# same checks and answers.

_SWEEP = 0.25
_HEAD, _BODY, _WAIT, _STREAMS, _DONE = range(5)
_U_IDLE, _U_HEAD, _U_BODY, _U_STREAMS, _U_DONE = range(5)
_Resume = Callable[[list["_Upstream | None"], asyncio.StreamWriter], Awaitable[bool]]


def _stream_pair(transport: asyncio.Transport, limit: int,
                 loop: asyncio.AbstractEventLoop) -> tuple[asyncio.StreamReaderProtocol,
                                                         asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over a transport that a protocol of ours already owns."""
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    sp = asyncio.StreamReaderProtocol(reader, loop=loop)
    sp.connection_made(transport)
    writer = asyncio.StreamWriter(transport, sp, reader, loop)
    return sp, reader, writer


class _FastClient(asyncio.Protocol):
    """One client connection on the event-driven path."""

    def __init__(self, proxy: EgressProxy, fixed: ProxyIdentity | None) -> None:
        self.p = proxy
        self.fixed = fixed
        self.t: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.state = _HEAD
        self.deadline = 0.0
        self.paused = False
        self.read_paused = False
        self.close_after = False
        self.head_only = False
        self.up: _UpConn | None = None
        self.sp: asyncio.StreamReaderProtocol | None = None
        self.pending: tuple[_Request, ProxyIdentity, ParsedURL, int] | None = None
        self.retry: tuple[tuple[Any, ...], ParsedURL, list[Any], tuple[bytes, bytes]] | None = None
        self.parts: list[bytes] | None = None  # a large body arriving, kept as received
        self.have = 0
        self.ready: bytes | None = None
        self.seq = 0
        self.rejected = False
        self.loop = asyncio.get_running_loop()
        # The last header block and its parse: a keep-alive client that repeats its headers
        # has them parsed once (a pure function of the bytes; decisions are never kept).
        self.last_block: _Headers | None = None

    # -- transport callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        p = self.p
        p._active += 1
        p._fast.add(self)
        self.deadline = self.loop.time() + p.settings.header_timeout
        if p._active > p.settings.max_connections:
            # Answered once the request arrives (or its deadline passes), so the
            # client's bytes are read before the close and it gets the 503, not a reset.
            self.rejected = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sp is not None:
            self.sp.connection_lost(exc)
            return
        self.p._active -= 1
        self.p._fast.discard(self)
        self.state = _DONE
        up, self.up = self.up, None
        if up is not None:
            up.c = None
            up.close()

    def data_received(self, data: bytes) -> None:
        if self.sp is not None:
            self.sp.data_received(data)
            return
        if self.state == _DONE:
            return
        if self.rejected:
            self.reply(_Reply(503, "proxy is at its connection limit"))
            return
        if self.parts is not None:
            self.body_part(data)
            return
        self.buf += data
        if self.state == _WAIT:
            if len(self.buf) > 65536 and not self.read_paused:
                self.read_paused = True
                self.t.pause_reading()
            return
        self.advance()

    def eof_received(self) -> bool | None:
        if self.sp is not None:
            return self.sp.eof_received()
        if self.state == _WAIT:
            self.close_after = True  # answer the request in flight, then close
            return True
        if self.state == _HEAD and self.buf.strip():
            self.reply(_Reply(400, "incomplete request head"))
        return None

    def pause_writing(self) -> None:
        if self.sp is not None:
            self.sp.pause_writing()
            return
        self.paused = True
        up = self.up
        if up is not None and up.state == _U_BODY:
            up.t.pause_reading()
            up.reading_paused = True

    def resume_writing(self) -> None:
        if self.sp is not None:
            self.sp.resume_writing()
            return
        self.paused = False
        up = self.up
        if up is not None and up.reading_paused:
            up.reading_paused = False
            up.t.resume_reading()

    # -- requests ------------------------------------------------------------

    def advance(self) -> None:
        while self.state in (_HEAD, _BODY) and self.sp is None and not self.t.is_closing():
            try:
                if not self.step():
                    return
            except _Reply as r:
                self.reply(r)
            except Exception:
                self.p.stats["errors"] += 1
                log.exception("proxy connection failed")
                self.abort()
                return

    def step(self) -> bool:
        """Consume one request if it is all here; False when more bytes are needed, the
        request went upstream or the connection changed hands."""
        p = self.p
        pol = p._policy
        lim = pol.limits
        if self.state == _HEAD:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0 or end + 4 > lim.max_header_bytes:
                if len(self.buf) > lim.max_header_bytes or end >= 0:
                    raise _Reply(431, "request head too large")
                return False
            # The request line is parsed every time; the header block after it is parsed
            # once per connection while the client sends the same bytes (a pure function
            # of them; a bad block raises and is never kept).
            first = self.buf.find(b"\r\n", 0, end + 2)
            raw = bytes(self.buf[first + 2:end + 4])
            line = self.buf[:first]
            method, target, version = _request_line(
                line, first == 0 and not raw.replace(b"\r\n", b""))
            block = self.last_block
            if block is None or block.raw != raw:
                block = self.last_block = _parse_headers(raw)
            req = _Request(method, target, version, block)
            ident = self.fixed or p.credentials.authenticate(req.get("proxy-authorization"))
            if ident is None:
                p._emit(event="proxy_auth_failed", peer=str(self.t.get_extra_info("peername")),
                        method=req.method)
                del self.buf[:end + 4]
                raise _Reply(407, "proxy credential missing or not recognised",
                             ["egress.proxy_auth"],
                             extra=[("Proxy-Authenticate", 'Basic realm="shieldwall"')]
                             ).about(req, None)
            if req.method == "CONNECT" or p.decide_in_thread \
                    or not req.target[:8].lower().startswith(("http://", "https://")):
                self.to_streams()
                return False
            try:
                parsed = pol.parse(req.target)
            except UrlError:
                self.to_streams()  # refused there with the URL rule
                return False
            if parsed.ip is None and pol.resolver.cached(parsed.host) is None:
                self.to_streams()  # resolves off the loop first
                return False
            try:
                kind, length = _framing(req, lim.max_request_bytes)
            except _Reply as r:
                raise r.about(req, ident) from None
            if kind == "chunked":
                self.to_streams()
                return False
            del self.buf[:end + 4]
            self.pending = (req, ident, parsed, length)
            self.state = _BODY
            self.deadline = self.loop.time() + p.settings.body_timeout
        assert self.pending is not None
        req, ident, parsed, length = self.pending
        body = self.ready
        if body is not None:
            self.ready = None
        elif len(self.buf) < length:
            if length > 65536:
                # Collect the rest as the chunks arrive and join once.
                self.parts = [bytes(self.buf)]
                self.have = len(self.buf)
                self.buf.clear()
            return False
        elif length == len(self.buf):
            body = bytes(self.buf)
            self.buf.clear()
        else:
            with memoryview(self.buf) as mv:
                body = bytes(mv[:length])
            del self.buf[:length]
        self.pending = None
        self.state = _HEAD
        return self.dispatch(req, ident, parsed, body)

    def body_part(self, data: bytes) -> None:
        assert self.parts is not None and self.pending is not None
        self.parts.append(data)
        self.have += len(data)
        need = self.pending[3]
        if self.have < need:
            return
        joined = b"".join(self.parts)
        self.parts = None
        if len(joined) == need:
            self.ready = joined
        else:
            self.ready = joined[:need]
            self.buf += joined[need:]
        self.advance()

    def dispatch(self, req: _Request, ident: ProxyIdentity, parsed: ParsedURL, body: bytes) -> bool:
        try:
            return self._dispatch(req, ident, parsed, body)
        except _Reply as r:
            raise r.about(req, ident) from None

    def _dispatch(self, req: _Request, ident: ProxyIdentity, parsed: ParsedURL,
                  body: bytes) -> bool:
        p = self.p
        pol = p._policy
        block = req.block
        closes = block.closes
        if closes is not None and closes[0] == req.version:
            client_close = closes[1]
        else:
            client_close = _client_close(req)
            block.closes = (req.version, client_close)
        fwd = block.fwd
        if fwd is None:
            fwd = block.fwd = _forward_headers(req)
        # The action gets its own copy: whatever a layer does with it, the memo stays.
        action = Egress(req.method.upper(), req.target, dict(fwd), body)
        d = p._decide_now(ident, action)
        if not d.allowed:
            p._emit(event="refused", agent=ident.agent, rules=d.rules())
            r = _deny_reply(d)
            r.close = client_close
            raise r
        act = d.action if isinstance(d.action, Egress) else action
        if act.url != req.target:
            try:
                parsed = pol.parse(act.url)
            except UrlError as e:
                raise _Reply(400, f"refused URL: {e}", [e.rule], close=client_close) from None
        addrs: list[Any] | None = None
        if parsed.ip is not None or pol.resolver.cached(parsed.host) is not None:
            try:
                addrs = pol.connect_addresses(parsed)
            except EgressRefused as e:
                raise _Reply(403, f"refused by Shieldwall: {e.finding.message}",
                             [e.finding.rule], close=client_close) from None
        self.close_after = client_close or p._draining
        self.head_only = act.method == "HEAD"
        self.seq += 1
        self.state = _WAIT
        self.deadline = self.loop.time() + pol.limits.timeout
        key = (ident, parsed.scheme, parsed.host, parsed.port)
        if act.headers == fwd:  # the decision kept the headers: their lines are known
            lines = block.lines
            if lines is None:
                lines = block.lines = _header_lines(fwd)
            head = _request_head(act, parsed, lines)
        else:
            head = _request_head(act, parsed)
        wire = (head, act.body)
        up = p._pool_take(key, addrs) if addrs is not None else None
        if up is not None:
            self.retry = (key, parsed, addrs or [], wire)
            up.start(self, wire, fresh=False)
        else:
            p._spawn(self.open_upstream(key, parsed, addrs, wire, self.seq))
        return False

    async def open_upstream(self, key: tuple[Any, ...], parsed: ParsedURL,
                            addrs: list[Any] | None, wire: tuple[bytes, bytes],
                            seq: int) -> None:
        p = self.p
        try:
            if addrs is None:
                addrs = await p._addresses(parsed)
            up = await p._open_fast(key, parsed, addrs)
        except _Reply as r:
            if self.state == _WAIT and self.seq == seq:
                self.reply(r)
            return
        if self.state != _WAIT or self.seq != seq or self.t.is_closing():
            p._pool_put(up)
            return
        self.retry = None
        up.start(self, wire, fresh=True)

    def upstream_lost(self, up: _UpConn, reused_unanswered: bool) -> None:
        """The upstream connection closed before the response was complete."""
        self.up = None
        if self.state != _WAIT:
            return
        if reused_unanswered and self.retry is not None:
            # A kept connection may have been closed by the server before our request
            # arrived: retry once on a fresh one.
            key, parsed, addrs, wire = self.retry
            self.retry = None
            self.p._spawn(self.open_upstream(key, parsed, addrs, wire, self.seq))
        elif up.state == _U_BODY:
            self.abort()  # the status line is out: cutting the connection is the signal
        else:
            self.reply(_Reply(502, f"upstream {key_netloc(up.key)} closed the connection",
                              close=False))

    def finished(self) -> None:
        """The response is out; next request (maybe already buffered) or close."""
        self.up = None
        if self.close_after:
            self.state = _DONE
            self.t.close()
            return
        self.state = _HEAD
        self.deadline = self.loop.time() + self.p.settings.header_timeout
        if self.read_paused:
            self.read_paused = False
            self.t.resume_reading()
        if self.buf:
            self.advance()

    def reply(self, r: _Reply) -> None:
        if r.status == 403:
            self.p.stats["refused"] += 1
        if self.p.refused is not None:
            self.p._refused_early(r, self.t.get_extra_info("peername"))
        if self.t.is_closing():
            return
        self.t.write(_reply_bytes(r))
        up, self.up = self.up, None
        if up is not None:
            up.c = None
            up.close()
        if r.close or self.p._draining:
            self.state = _DONE
            self.t.close()
        else:
            self.close_after = False
            self.parts = self.ready = self.pending = None
            was_waiting = self.state == _WAIT
            self.state = _HEAD
            self.deadline = self.loop.time() + self.p.settings.header_timeout
            if self.read_paused:
                self.read_paused = False
                self.t.resume_reading()
            if was_waiting and self.buf:
                self.advance()

    def expired(self) -> None:
        if self.rejected:
            self.reply(_Reply(503, "proxy is at its connection limit"))
        elif self.state == _HEAD:
            self.reply(_Reply(408, "request head not received in time"))
        elif self.state == _BODY:
            self.reply(_Reply(408, "request body not received in time"))
        elif self.state == _WAIT:
            if self.up is not None and self.up.state == _U_BODY:
                self.abort()  # mid-body stall (upstream or a client that stopped reading)
            else:
                self.reply(_Reply(504, "upstream did not answer in time"))

    def drain(self) -> None:
        """The proxy is stopping: an idle keep-alive connection closes now, a busy one
        after its response (the stream-based path checks ``_draining`` itself)."""
        if self.sp is not None or self.state == _DONE:
            return
        self.close_after = True
        if self.state == _HEAD and not self.buf:
            self.state = _DONE
            self.t.close()

    def abort(self) -> None:
        self.state = _DONE
        up, self.up = self.up, None
        if up is not None:
            up.c = None
            up.close()
        self.t.abort()

    def to_streams(self, resume: _Resume | None = None) -> None:
        """Hand this connection to the stream-based path (bytes not consumed go along)."""
        p = self.p
        p._fast.discard(self)
        sp, reader, writer = _stream_pair(self.t, p.policy.limits.max_header_bytes, self.loop)
        if self.paused:
            sp.pause_writing()
        self.sp = sp
        self.state = _STREAMS
        if self.buf:
            reader.feed_data(bytes(self.buf))
            self.buf.clear()
        if self.read_paused:
            self.read_paused = False
            self.t.resume_reading()
        p._spawn(p._client(reader, writer, self.fixed, counted=True, resume=resume))


def key_netloc(key: tuple[Any, ...]) -> str:
    return f"{key[2]}:{key[3]}"


class _UpConn(asyncio.Protocol):
    """An upstream connection on the event-driven path, kept per (agent, scheme, host,
    port) and to the checked address it was opened to."""

    def __init__(self, proxy: EgressProxy, key: tuple[Any, ...], addr: Any) -> None:
        self.p = proxy
        self.key = key
        self.addr = addr
        self.gen = proxy._gen
        self.t: asyncio.Transport = None  # type: ignore[assignment]
        self.buf = bytearray()
        self.c: _FastClient | None = None
        self.state = _U_IDLE
        self.remaining = 0
        self.keep = True
        self.fresh = True
        self.got = False
        self.interim = 0
        self.reading_paused = False
        self.idle_since = 0.0
        self.sp: asyncio.StreamReaderProtocol | None = None
        self.last_head: tuple[bytes, _RespHead] | None = None  # as on _FastClient

    def alive(self) -> bool:
        return self.state == _U_IDLE and self.t is not None and not self.t.is_closing()

    def close(self) -> None:
        if self.state != _U_STREAMS:
            self.state = _U_DONE
        if self.t is not None:
            self.t.close()

    def start(self, c: _FastClient, wire: tuple[bytes, bytes], fresh: bool) -> None:
        self.c = c
        c.up = self
        self.fresh = fresh
        self.got = False
        self.interim = 0
        self.keep = True
        self.state = _U_HEAD
        if wire[1]:
            self.t.writelines(wire)  # head and body in one vectored send, no joined copy
        else:
            self.t.write(wire[0])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sp is not None:
            self.sp.connection_lost(exc)
            return
        was = self.state
        self.state = _U_DONE
        self.p._pool_drop(self)
        c, self.c = self.c, None
        if c is not None and was in (_U_HEAD, _U_BODY):
            self.state = was
            c.upstream_lost(self, reused_unanswered=was == _U_HEAD and not self.fresh
                            and not self.got)
            self.state = _U_DONE

    def eof_received(self) -> bool | None:
        if self.sp is not None:
            return self.sp.eof_received()
        return None

    def pause_writing(self) -> None:
        if self.sp is not None:
            self.sp.pause_writing()

    def resume_writing(self) -> None:
        if self.sp is not None:
            self.sp.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.sp is not None:
            self.sp.data_received(data)
            return
        c = self.c
        if c is None or self.state not in (_U_HEAD, _U_BODY):
            self.close()  # bytes nobody asked for: never reuse this connection
            return
        self.got = True
        if self.state == _U_BODY:
            n = len(data)
            if n <= self.remaining:
                self.remaining -= n
                c.t.write(data)
            else:
                c.t.write(data[:self.remaining])
                self.remaining = 0
                self.keep = False  # more than was announced
            c.deadline = c.loop.time() + self.p._policy.limits.timeout
            if not self.remaining:
                self.done()
            return
        self.buf += data
        try:
            self.head()
        except _Reply as r:
            self.close()
            c.reply(r)
        except Exception:
            self.p.stats["errors"] += 1
            log.exception("proxy upstream connection failed")
            self.close()
            c.abort()

    def head(self) -> None:
        c = self.c
        assert c is not None
        lim = self.p._policy.limits
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > lim.max_header_bytes:
                    raise _Reply(502, "upstream response head too large", close=True)
                return
            raw = bytes(self.buf[:end + 4])
            last = self.last_head
            if last is not None and last[0] == raw:
                rh = last[1]
            else:
                rh = _RespHead.parse(raw)
                self.last_head = (raw, rh)
            status = rh.status
            if 100 <= status < 200 and status != 101:
                del self.buf[:end + 4]
                self.interim += 1
                if self.interim >= 10:
                    raise _Reply(502, "too many interim responses", close=True)
                continue
            break
        no_body = c.head_only or status in (204, 304)
        if status == 101 or (not no_body and (rh.chunked or rh.length is None)) \
                or (rh.length is None and len(rh.lengths) == 1):
            self.to_streams()
            return
        n = 0 if no_body else rh.length or 0
        limit = lim.max_response_bytes
        if n > limit:
            raise _Reply(502, f"upstream response of {n} bytes exceeds "
                         f"egress.limits.max_response_bytes ({limit})",
                         ["egress.response_too_large"], close=False)
        self.keep = not rh.close
        head = rh.out
        if self.p._draining:  # the proxy is stopping: tell the client this is the last
            head = head[:-2] + b"Connection: close\r\n\r\n"
        start = end + 4
        avail = len(self.buf) - start
        if avail > n:
            self.keep = False
        take = min(avail, n)
        if take:
            with memoryview(self.buf) as mv:
                c.t.write(head + mv[start:start + take])
        else:
            c.t.write(head)
        self.buf.clear()
        self.remaining = n - take
        if self.remaining:
            self.state = _U_BODY
            if c.paused:
                self.t.pause_reading()
                self.reading_paused = True
        else:
            self.done()

    def done(self) -> None:
        c, self.c = self.c, None
        self.state = _U_IDLE
        if self.reading_paused:
            self.reading_paused = False
            self.t.resume_reading()
        if self.keep:
            self.p._pool_put(self)
        else:
            self.close()
        if c is not None:
            c.finished()

    def to_streams(self) -> None:
        """A response that is not length-framed: relay it on the stream-based path."""
        c, self.c = self.c, None
        assert c is not None
        p = self.p
        c.up = None
        self.state = _U_STREAMS
        sp, reader, writer = _stream_pair(self.t, p.policy.limits.max_header_bytes, c.loop)
        self.sp = sp
        reader.feed_data(bytes(self.buf))
        self.buf.clear()
        cur = _Upstream(self.key, reader, writer)
        head_only = c.head_only
        close_after = c.close_after

        async def resume(up: list[_Upstream | None], cw: asyncio.StreamWriter) -> bool:
            up[0] = cur
            try:
                status, rhead = await p._response_head(reader)
                keep = await p._relay(status, rhead, cur, cw, up, head_only,
                                      p.policy.limits.max_response_bytes)
            finally:
                # Not kept: the stream-based path keys its own connections.
                writer.close()
                up[0] = None
            return keep and not close_after

        c.to_streams(resume)


@dataclass(frozen=True, slots=True)
class _RespHead:
    """What the event-driven path needs of a response head, and the head to send on."""

    status: int
    chunked: bool  # any Transfer-Encoding: the stream-based path relays it
    lengths: tuple[str, ...]  # distinct Content-Length values
    length: int | None  # the one valid Content-Length, else None
    close: bool  # upstream said Connection: close
    out: bytes  # status line and end-to-end headers (hop-by-hop ones dropped)

    @classmethod
    def parse(cls, raw: bytes) -> _RespHead:
        status, status_line, headers = _parse_response_head(raw)
        te = False
        cls_: set[str] = set()
        conn = ""
        out = [status_line]
        for k, v, lk in headers:
            if lk == "content-length":
                cls_.add(v)
            elif lk == "transfer-encoding":
                te = True
            elif lk == "connection":
                conn += v.lower()
            if lk not in _RESP_HOP:
                out.append(f"{k}: {v}")
        one = next(iter(cls_)) if len(cls_) == 1 else None
        length = int(one) if one is not None and one.isdigit() else None
        return cls(status, te, tuple(sorted(cls_)), length, "close" in conn,
                   ("\r\n".join(out) + "\r\n\r\n").encode("latin-1", "replace"))


def _parse_response_head(raw: bytes) -> tuple[int, str, list[tuple[str, str, str]]]:
    """Status, status line and (name, value, lower-case name) of a response head."""
    lines = raw.decode("latin-1").split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2 or not first[0].startswith("HTTP/1.") or not first[1].isdigit():
        raise _Reply(502, "malformed upstream response", close=True)
    headers: list[tuple[str, str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if not sep or line[:1] in (" ", "\t"):
            raise _Reply(502, "malformed upstream header", close=True)
        k = k.strip()
        headers.append((k, v.strip(), k.lower()))
    return int(first[1]), lines[0], headers


# --------------------------------------------------------------------------- running


def policy_decider(policy: EgressPolicy,
                   live_secrets: Callable[[], Iterable[str]] | None = None) -> Decide:
    """A ``decide`` that applies only the egress policy (for tests and a bare proxy)."""

    def decide(ident: ProxyIdentity, action: Egress) -> Decision:
        fs = policy.check(action, ident.role, live_secrets)
        v = max((f.verdict for f in fs), default=Verdict.ALLOW)
        return Decision(v, action, tuple(fs))

    return decide


def new_event_loop(prefer_uvloop: bool = True) -> tuple[asyncio.AbstractEventLoop, str]:
    """An event loop for the proxy: uvloop when installed (``shieldwall[proxy]``), else
    the standard one. Returns the loop and its name."""
    if prefer_uvloop:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            pass
        else:
            from importlib.metadata import version

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop, f"uvloop {version('uvloop')}"
    return asyncio.new_event_loop(), "asyncio"


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """For ``--workers N``: bind ``listen`` (``host:port``, port 0 for any) with
    ``SO_REUSEPORT`` without listening, so the port is held for the workers, which each
    bind it again and listen (a socket that does not listen takes no connections).
    Returns the socket (keep it open while the workers run) and the ``host:port`` bound.
    Raises ``OSError`` naming the address."""
    host, port = _split_listen(listen)
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                               flags=socket.AI_PASSIVE)[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(addr)
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"cannot listen on {listen}: {e.strerror}") from None
    h, p = s.getsockname()[:2]
    return s, (f"[{h}]:{p}" if ":" in h else f"{h}:{p}")


def unix_listener(path: str, mode: int = 0o666, backlog: int = 1024) -> socket.socket:
    """A listening Unix socket at ``path``, opened once by the parent of ``--workers N``
    and accepted on by every worker (Unix sockets have no ``SO_REUSEPORT``)."""
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        os.chmod(path, mode)  # access is still by proxy credential
        s.listen(backlog)
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def _split_listen(listen: str) -> tuple[str, int]:
    host, _, port_text = listen.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen address {listen!r} is not host:port") from None
    return host.strip("[]") or "127.0.0.1", port


async def serve(proxy: EgressProxy, listen: str | None, unix_path: str | None,
                ready: Callable[[list[str]], None] | None = None,
                unix_identity: ProxyIdentity | None = None, *,
                reuse_port: bool = False,
                unix_sock: socket.socket | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run ``proxy`` until ``stop`` is set (or forever)."""
    host: str | None = None
    port: int | None = None
    if listen:
        host, port = _split_listen(listen)
    bound = await proxy.start(host, port, unix_path, unix_identity=unix_identity,
                              reuse_port=reuse_port, unix_sock=unix_sock)
    if ready is not None:
        ready(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await proxy.close(drain=proxy.settings.drain_timeout if stop is not None else 0.0)
