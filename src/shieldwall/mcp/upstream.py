"""Connecting to the real MCP server: a command over stdio or a Streamable HTTP URL."""

from __future__ import annotations

import shlex
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..errors import ShieldwallError


@dataclass(slots=True)
class UpstreamSpec:
    """Where the real server is: ``command`` (argv, stdio) or ``url`` (Streamable HTTP)."""

    command: Sequence[str] = ()
    url: str | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sandbox: bool = False
    # keyword arguments of shieldwall.sandbox.wrap_command (ro_paths, rw_paths, limits,
    # network, proxy_socket) for a sandboxed stdio server
    sandbox_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ShieldwallError("an MCP upstream is either a command or a URL (exactly one)")

    def describe(self) -> str:
        return self.url or shlex.join(self.command)

    def argv(self) -> list[str]:
        """The command as given (unsandboxed); sandboxed launches go through
        :func:`shieldwall.sandbox.wrap_command` in :func:`open_session`."""
        return list(self.command)


def stdio_launch(spec: UpstreamSpec, stack: ExitStack | AsyncExitStack
                 ) -> tuple[list[str], dict[str, str] | None, str | None]:
    """(argv, extra environment, cwd) that start a command upstream; a sandboxed one runs
    inside :func:`shieldwall.sandbox.wrap_command` until ``stack`` closes. Refuses to start
    a server unsandboxed when the sandbox was asked for and cannot be had."""
    if not spec.sandbox:
        return spec.argv(), spec.env, spec.cwd
    try:
        from ..sandbox import SandboxError, wrap_command
    except ImportError:  # pragma: no cover - the sandbox room ships with us
        raise ShieldwallError("mcp.sandbox is true but the sandbox backend is missing; "
                              "refusing to start the server unsandboxed") from None
    try:
        argv = stack.enter_context(wrap_command(spec.command, env=spec.env, cwd=spec.cwd,
                                                **spec.sandbox_options))
    except SandboxError as e:
        raise ShieldwallError(f"mcp.sandbox: {e}; refusing to start the server "
                              "unsandboxed") from e
    # the sandbox clears the environment and works in /workspace
    return list(argv), None, None


@asynccontextmanager
async def open_session(
    spec: UpstreamSpec,
    *,
    message_handler: Callable[[Any], Any] | None = None,
    errlog: TextIO | None = None,
    client_name: str = "shieldwall",
    **callbacks: Any,
) -> AsyncIterator[tuple[Any, Any]]:
    """An initialized ``mcp.ClientSession`` to the upstream, and its InitializeResult;
    ``callbacks`` (sampling_callback, list_roots_callback, ...) go to the ClientSession."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp import types as mt

    from .. import __version__

    async with AsyncExitStack() as stack:
        if spec.url:
            client = httpx2.AsyncClient(headers=spec.headers or None,
                                        timeout=httpx2.Timeout(30.0, read=300.0))
            await stack.enter_async_context(client)
            read, write = await stack.enter_async_context(
                streamable_http_client(spec.url, http_client=client))
        else:
            argv, env, cwd = stdio_launch(spec, stack)
            params = StdioServerParameters(command=argv[0], args=argv[1:], env=env, cwd=cwd)
            read, write = await stack.enter_async_context(
                stdio_client(params, errlog=errlog or sys.stderr))
        session = await stack.enter_async_context(ClientSession(
            read, write, message_handler=message_handler,  # type: ignore[arg-type]
            **callbacks, client_info=mt.Implementation(name=client_name, version=__version__)))
        init = await session.initialize()
        yield session, init


async def list_all_tools(session: Any) -> list[Any]:
    """Every tool of the server, following pagination (bounded)."""
    from mcp import types as mt

    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(100):
        params = mt.PaginatedRequestParams(cursor=cursor) if cursor else None
        res = await session.list_tools(params=params)
        tools.extend(res.tools)
        cursor = res.next_cursor
        if not cursor:
            break
    return tools
