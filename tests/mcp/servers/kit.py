"""Tiny toolkit for the test MCP servers: real `mcp` SDK servers over stdio (or HTTP) that
record every request they receive to the file named by $SW_RECORD (one JSON line each)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp.types as mt
from mcp.server.lowlevel import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.stdio import stdio_server

Handler = Callable[[dict[str, Any], Any], Awaitable[Any]]


def _argv_value(flag: str) -> str | None:
    if flag in sys.argv:
        i = sys.argv.index(flag)
        if i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return None


def record(event: dict[str, Any]) -> None:
    # --record PATH (the SDK's stdio client passes only a safe subset of the environment)
    path = _argv_value("--record") or os.environ.get("SW_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")


def text(s: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=s)])


class Kit:
    def __init__(self, name: str, version: str = "1.0.0") -> None:
        self.name = name
        self.version = version
        self.tools: dict[str, tuple[str, dict[str, Any], Handler]] = {}
        self.listings = 0
        self.describe: Callable[[str, str], str] = lambda name, d: d
        self.resources: dict[str, str] = {}
        self.prompts: dict[str, str] = {}

    def tool(self, name: str, description: str, props: dict[str, Any],
             required: list[str] | None = None) -> Callable[[Handler], Handler]:
        schema = {"type": "object", "properties": props, "required": required or []}

        def deco(fn: Handler) -> Handler:
            self.tools[name] = (description, schema, fn)
            return fn
        return deco

    def server(self) -> Server[Any]:
        async def list_tools(ctx: Any, params: Any) -> mt.ListToolsResult:
            self.listings += 1
            record({"method": "tools/list", "n": self.listings})
            return mt.ListToolsResult(tools=[
                mt.Tool(name=n, description=self.describe(n, d), input_schema=s)
                for n, (d, s, _) in self.tools.items()])

        async def call_tool(ctx: Any, params: Any) -> mt.CallToolResult:
            args = dict(params.arguments or {})
            record({"method": "tools/call", "tool": params.name, "args": args})
            entry = self.tools.get(params.name)
            if entry is None:
                return mt.CallToolResult(content=[mt.TextContent(type="text", text="no such tool")],
                                         is_error=True)
            res = await entry[2](args, ctx)
            return res if isinstance(res, mt.CallToolResult) else text(str(res))

        kw: dict[str, Any] = {"on_list_tools": list_tools, "on_call_tool": call_tool}
        if self.resources:
            async def list_resources(ctx: Any, params: Any) -> mt.ListResourcesResult:
                return mt.ListResourcesResult(resources=[
                    mt.Resource(uri=u, name=u.rsplit("/", 1)[-1]) for u in self.resources])

            async def read_resource(ctx: Any, params: Any) -> mt.ReadResourceResult:
                uri = str(params.uri)
                record({"method": "resources/read", "uri": uri})
                return mt.ReadResourceResult(contents=[
                    mt.TextResourceContents(uri=uri, text=self.resources[uri])])
            kw.update(on_list_resources=list_resources, on_read_resource=read_resource)
        if self.prompts:
            async def list_prompts(ctx: Any, params: Any) -> mt.ListPromptsResult:
                return mt.ListPromptsResult(prompts=[mt.Prompt(name=n) for n in self.prompts])

            async def get_prompt(ctx: Any, params: Any) -> mt.GetPromptResult:
                return mt.GetPromptResult(messages=[mt.PromptMessage(
                    role="user", content=mt.TextContent(type="text", text=self.prompts[params.name]))])
            kw.update(on_list_prompts=list_prompts, on_get_prompt=get_prompt)
        return Server(self.name, version=self.version, **kw)

    def run(self) -> None:
        server = self.server()
        opts = server.create_initialization_options(NotificationOptions(tools_changed=True))
        port = _argv_value("--http")
        if port is not None:
            import uvicorn
            app = server.streamable_http_app()
            uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")
            return

        async def main() -> None:
            async with stdio_server() as (r, w):
                await server.run(r, w, opts)
        anyio.run(main)
