"""``shieldwall proxy``: an asyncio HTTP/1.1 forward proxy — a face of the gate.

Every request is an ``Egress`` action decided by a ``decide(identity, egress)`` callable
(in production: a Session of the agent the proxy credential names, see
:func:`session_decider`). Plain-HTTP requests are read whole and inspected; ``CONNECT``
opens a tunnel only to an allowed host and port. Refusals are ``403`` with an
``X-Shieldwall-Reason`` header naming the rule ids. The proxy connects to the address
the egress policy checked (pinned DNS), never by name.

Robustness: request heads have a size limit (431) and a deadline (408, so slowloris
clients cannot hold a slot), bodies have a size limit (413) and a deadline, malformed
requests get 400, and ambiguous framing (``Content-Length`` with ``Transfer-Encoding``,
conflicting lengths, obsolete line folding) is refused: no request smuggling. Each
connection is its own task; DNS is resolved off the loop before deciding; decisions run
on the loop (fastest) or, with ``egress.proxy.decide_in_threads``, in worker threads so
a remote store's latency never holds up other connections.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets as _secrets
import ssl
from collections.abc import Callable, Iterable
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


def session_decider(wall: Shieldwall) -> Decide:
    """A ``decide`` that asks a Session of the credential's agent (one per identity)."""
    import threading

    sessions: dict[ProxyIdentity, Any] = {}
    lock = threading.Lock()

    def decide(ident: ProxyIdentity, action: Egress) -> Decision:
        with lock:
            s = sessions.get(ident)
            if s is None:
                s = wall.session(agent=ident.agent, role=ident.role, task=ident.task)
                sessions[ident] = s
        d: Decision = s.decide(action)
        return d

    return decide


# --------------------------------------------------------------------------- errors


class _Reply(Exception):
    """Answer the client with ``status`` and close (or keep) the connection."""

    def __init__(self, status: int, message: str, rules: Iterable[str] = (), close: bool = True,
                 extra: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.rules = tuple(rules)
        self.close = close
        self.extra = tuple(extra)


class _Closed(Exception):
    """The client went away: nothing to answer."""


@dataclass(slots=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]


def _parse_head(head: bytes) -> _Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise _Reply(400, "undecodable request head") from None
    lines = text.split("\r\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise _Reply(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _Reply(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise _Reply(400, "malformed method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Reply(400 if not version.startswith("HTTP/") else 505, "unsupported HTTP version")
    if not target or _BAD_TARGET.search(target):
        raise _Reply(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            raise _Reply(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise _Reply(400, "malformed header line")
        value = value.strip(" \t")
        if _BAD_VALUE.search(value):
            raise _Reply(400, "control character in header value")
        headers.append((name, value))
        if len(headers) > _MAX_HEADERS:
            raise _Reply(431, "too many header fields")
    return _Request(method, target, version, headers)


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


def _deny_reply(d: Decision) -> _Reply:
    rules = sorted({f.rule for f in d.deciding()})
    msg = "; ".join(f.message for f in d.deciding())
    return _Reply(403, f"refused by Shieldwall: {msg}", rules, close=False)


# --------------------------------------------------------------------------- the proxy


@dataclass(slots=True)
class _Upstream:
    key: tuple[str, str, int]
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
    ) -> None:
        self.policy = policy
        self.decide = decide
        self.settings = settings if settings is not None else policy.section.proxy
        self.credentials = credentials if credentials is not None else CredentialStore(
            self.settings.credentials)
        self.event = event
        self.upstream_ssl = upstream_ssl
        self.servers: list[asyncio.Server] = []
        self.decide_in_thread = (self.settings.decide_in_threads if decide_in_thread is None
                                 else decide_in_thread)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sw-proxy")
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = {"requests": 0, "refused": 0, "errors": 0}

    # -- lifecycle -----------------------------------------------------------

    async def start(self, host: str | None = None, port: int | None = None,
                    unix_path: str | None = None, unix_mode: int = 0o666,
                    unix_identity: ProxyIdentity | None = None) -> list[str]:
        """Listen; returns the addresses (``host:port`` / socket path) actually bound.

        ``unix_identity`` makes the Unix socket a per-agent door: whoever can reach that
        socket (one sandbox, into which only it is bound) acts as that identity, with no
        token inside the sandbox. Without it, Unix clients authenticate like TCP ones."""
        limit = self.policy.limits.max_header_bytes
        bound: list[str] = []
        if host is not None and port is not None:
            srv = await asyncio.start_server(self._client, host, port, limit=limit,
                                             reuse_address=True)
            self.servers.append(srv)
            for sock in srv.sockets:
                h, p = sock.getsockname()[:2]
                bound.append(f"{h}:{p}")
        if unix_path is not None:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            ident = unix_identity

            async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                await self._client(r, w, ident)

            usrv = await asyncio.start_unix_server(handler, unix_path, limit=limit)
            os.chmod(unix_path, unix_mode)  # access is still by proxy credential
            self.servers.append(usrv)
            bound.append(unix_path)
        return bound

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for t in list(self._tasks):
            t.cancel()
        for s in self.servers:
            await s.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _emit(self, **event: Any) -> None:
        if self.event is not None:
            try:
                self.event(event)
            except Exception:  # an observer never breaks the proxy
                log.exception("proxy event observer failed")

    # -- one client connection -------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      fixed: ProxyIdentity | None = None) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._active += 1
        up: list[_Upstream | None] = [None]
        try:
            if self._active > self.settings.max_connections:
                await self._send_reply(writer, _Reply(503, "proxy is at its connection limit"))
                return
            peer = writer.get_extra_info("peername")
            for _ in range(10_000):  # keep-alive requests on one connection, bounded
                keep = await self._one(reader, writer, up, peer, fixed)
                if not keep:
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
            if r.status == 403:
                self.stats["refused"] += 1
            await self._send_reply(writer, r)
            return not r.close

    async def _send_reply(self, writer: asyncio.StreamWriter, r: _Reply) -> None:
        body = (r.message + "\n").encode("utf-8", "replace")
        lines = [f"HTTP/1.1 {r.status} {_REASONS.get(r.status, 'Error')}",
                 "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
        if r.rules:
            lines.append("X-Shieldwall-Reason: " + ", ".join(r.rules))
        lines += [f"{k}: {v}" for k, v in r.extra]
        if r.close:
            lines.append("Connection: close")
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body)
            await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, TimeoutError):
            raise _Closed() from None

    async def _decide(self, ident: ProxyIdentity, action: Egress) -> Decision:
        loop = asyncio.get_running_loop()
        self.stats["requests"] += 1
        try:
            if not self.decide_in_thread:
                return self.decide(ident, action)
            return await loop.run_in_executor(self._executor, self.decide, ident, action)
        except Exception as e:  # fail closed
            f = Finding(LAYER, "egress.decide_error",
                        f"the decision failed ({type(e).__name__}); refused (fail closed)",
                        Verdict.DENY, severity=Severity.HIGH)
            return Decision(Verdict.DENY, action, (f,))

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
        try:
            await asyncio.gather(self._pipe(reader, uw), self._pipe(ur, writer))
        finally:
            uw.close()

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
        client_close = (req.version == "HTTP/1.0" and (req.get("connection") or "").lower() != "keep-alive") \
            or "close" in (req.get("connection") or "").lower() \
            or "close" in (req.get("proxy-connection") or "").lower()
        conn_tokens = {t.strip().lower() for t in (req.get("connection") or "").split(",")}
        headers: dict[str, str] = {}
        for k, v in req.headers:
            lk = k.lower()
            if lk in _HOP_BY_HOP or lk in conn_tokens:
                continue
            # A repeated field becomes one comma-joined value (RFC 9110, 5.3).
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
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
        keep = await self._exchange(parsed, addrs, act, writer, up, head_only=act.method == "HEAD")
        return keep and not client_close

    async def _exchange(self, parsed: ParsedURL, addrs: list[Any], act: Egress,
                        writer: asyncio.StreamWriter, up: list[_Upstream | None],
                        head_only: bool) -> bool:
        lim = self.policy.limits
        lines = [f"{act.method} {parsed.target} HTTP/1.1", f"Host: {parsed.host_header}"]
        lines += [f"{k}: {v}" for k, v in act.headers.items()]
        if act.body or act.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(act.body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + act.body
        key = (parsed.scheme, parsed.host, parsed.port)
        for attempt in range(2):
            cur = up[0]
            fresh = False
            if cur is None or cur.key != key or cur.writer.is_closing() or cur.reader.at_eof():
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


async def serve(proxy: EgressProxy, listen: str | None, unix_path: str | None,
                ready: Callable[[list[str]], None] | None = None,
                unix_identity: ProxyIdentity | None = None) -> None:
    host: str | None = None
    port: int | None = None
    if listen:
        host, _, port_text = listen.rpartition(":")
        host, port = host.strip("[]") or "127.0.0.1", int(port_text)
    bound = await proxy.start(host, port, unix_path, unix_identity=unix_identity)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.close()

