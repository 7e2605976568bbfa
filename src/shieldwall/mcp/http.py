"""``shieldwall mcp serve``: the gated MCP server over Streamable HTTP.

Bound to loopback by default. Every request needs ``Authorization: Bearer <token>``;
the token's SHA-256 maps to an agent, a role and optionally a task (policy ``mcp.tokens``
or ``mcp.tokens_file``), so each agent is gated as itself. Optional mutual TLS: with a
client CA every connection must present a certificate that CA signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .proxy import GatedProxy, Identity

if TYPE_CHECKING:
    from ..policy.sections.mcp import McpSection
    from ..wall import Shieldwall
    from .pin import PinState
    from .upstream import UpstreamSpec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

IDENTITY_KEY = "shieldwall_identity"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_tokens(section: McpSection, base_dir: Path) -> dict[str, Identity]:
    """sha256 hex → identity, from the policy section and its optional tokens file."""
    from ..policy.sections.mcp import McpToken

    entries = list(section.tokens)
    if section.tokens_file:
        p = Path(section.tokens_file)
        p = p if p.is_absolute() else base_dir / p
        text = p.read_text(encoding="utf-8")
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        raw = data.get("tokens", []) if isinstance(data, dict) else data
        if not isinstance(raw, list):
            raise ValueError(f"{p}: expected a list of tokens")
        entries += [McpToken.model_validate(t) for t in raw]
    out: dict[str, Identity] = {}
    for t in entries:
        if t.sha256 in out:
            raise ValueError(f"token hash {t.sha256[:12]}… is listed twice")
        out[t.sha256] = Identity(t.agent, t.role, t.task)
    return out


class BearerAuth:
    """ASGI middleware: refuses (401) any HTTP request without a known bearer token and
    stores the caller's identity in the request scope for the handlers."""

    def __init__(self, app: ASGIApp, tokens: dict[str, Identity]) -> None:
        self.app = app
        self.tokens = dict(tokens)

    def identify(self, header: str | None) -> Identity | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        digest = token_hash(value.strip())
        found: Identity | None = None
        # compare against every entry: the time taken does not depend on which one matched
        for h, ident in self.tokens.items():
            if hmac.compare_digest(h, digest):
                found = ident
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                header = v.decode("latin-1")
                break
        ident = self.identify(header)
        if ident is None:
            body = json.dumps({"error": "invalid_token",
                               "error_description": "a valid bearer token is required"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="shieldwall", error="invalid_token"'),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[IDENTITY_KEY] = ident
        await self.app(scope, receive, send)


def identity_of(ctx: Any) -> Identity:
    """The identity BearerAuth put on the request that carried this MCP message."""
    from ..errors import ShieldwallError

    req = getattr(ctx, "request", None)
    scope = getattr(req, "scope", None)
    ident = (scope or {}).get("state", {}).get(IDENTITY_KEY) if scope is not None else None
    if not isinstance(ident, Identity):
        raise ShieldwallError("request carries no authenticated identity")
    return ident


@dataclass(slots=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8808
    path: str = "/mcp"
    certfile: str | None = None
    keyfile: str | None = None
    client_ca: str | None = None


def uvicorn_ssl(settings: HttpSettings) -> dict[str, Any]:
    if not settings.certfile:
        return {}
    kw: dict[str, Any] = {"ssl_certfile": settings.certfile, "ssl_keyfile": settings.keyfile}
    if settings.client_ca:
        kw["ssl_ca_certs"] = settings.client_ca
        kw["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return kw


def build_app(proxy: GatedProxy, tokens: dict[str, Identity], settings: HttpSettings) -> ASGIApp:
    assert proxy.server is not None
    app = proxy.server.streamable_http_app(streamable_http_path=settings.path,
                                           host=settings.host)
    return BearerAuth(app, tokens)


async def serve_http(wall: Shieldwall, spec: UpstreamSpec, pins: PinState,
                     tokens: dict[str, Identity], section: McpSection,
                     settings: HttpSettings, *,
                     started: Callable[[int], None] | None = None) -> None:
    """Run until cancelled. ``started(port)`` is called once the socket listens."""
    import uvicorn

    proxy = GatedProxy(wall, spec, pins, identity_of=identity_of,
                       max_result_bytes=section.max_result_bytes, restarts=section.restarts,
                       call_timeout=section.call_timeout)

    async def body(p: GatedProxy) -> None:
        config = uvicorn.Config(build_app(p, tokens, settings), host=settings.host,
                                port=settings.port, log_level="warning", lifespan="on",
                                **uvicorn_ssl(settings))
        server = uvicorn.Server(config)
        if started is None:
            await server.serve()
            return
        import anyio

        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.02)
            port = settings.port
            for s in getattr(server, "servers", []):
                for sock in s.sockets:
                    port = sock.getsockname()[1]
            started(port)

    try:
        await proxy.run(body)
    finally:
        proxy.close()
