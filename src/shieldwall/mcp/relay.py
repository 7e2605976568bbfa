"""``shieldwall mcp wrap -- CMD``: the lean stdio gateway.

The client launches Shieldwall as if it were the server; Shieldwall launches the real
server and relays newline-delimited JSON-RPC between the two pipes. Only the messages
the gate must see are opened up; everything else is passed on as it came (a client
request only gets a fresh id, so that ids the gateway uses itself never collide):

- ``initialize`` / ``server/discover``: relayed; the answer tells the gateway the server's
  name and version (for the pins) and the protocol era the two sides agreed on, and the
  gateway then lists the tools itself (pins, drift, argument schemas).
- ``tools/list``: answered from the gateway's own full listing, filtered to the tools the
  role may call and that have not drifted from the lock.
- ``tools/call``: through the gate (:func:`~shieldwall.mcp.proxy.gated_tool_call`);
  ``resources/read`` and ``prompts/get`` results through the result layers.
- ``notifications/tools/list_changed``: the gateway re-lists (rug-pull check) first.
- Requests of the server to the client (``sampling/createMessage``,
  ``elicitation/create``, ``roots/list``): audited and relayed under ids of the gateway's
  own; the text a server asks the client's model to read (sampling) or shows the user
  (elicitation) goes through the gate as an untrusted ``ModelInput`` first, so the
  detect room's input scan can refuse it. A ``ping`` of the server is answered here.

The ``mcp`` SDK stays the protocol reference: its clients and servers are what the tests
drive through this relay, and the HTTP face (:class:`~shieldwall.mcp.proxy.GatedProxy`)
is built on it. Here it would parse every message into models and back twice per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ShieldwallError
from .proxy import (
    APPROVAL_META_KEY,
    PROMPT_LABEL,
    RESOURCE_LABEL,
    SERVER_REQUEST_REFUSED,
    GatedView,
    Identity,
    ResultRefused,
    ToolTable,
    UpstreamDown,
    UpstreamError,
    after_crash,
    cap_result,
    check_server_request,
    error_result,
    gated_passthrough,
    gated_tool_call,
    warm_detectors,
)
from .upstream import UpstreamSpec, stdio_launch

if TYPE_CHECKING:
    from ..wall import Shieldwall
    from .pin import PinState

JSON = dict[str, Any]
LINE_LIMIT = 256 * 1024 * 1024  # one JSON-RPC message; results are capped after parsing
ENVELOPE = "io.modelcontextprotocol/"  # the per-request _meta keys of the stateless era
SERVER_INFO = ENVELOPE + "serverInfo"
INTERNAL_ERROR = -32603
PARSE_ERROR = -32700
MAX_PAGES = 100


@dataclass(slots=True)
class _Relayed:
    """A client request passed to the upstream under a fresh id."""

    client_id: Any
    method: str
    params: Any = None


def _dumps(msg: Any) -> bytes:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _fd_or_inherit(stream: TextIO) -> int | None:
    """Where the server's stderr goes: the gateway's error log when it is a real file."""
    if stream is sys.stderr:
        return None
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


class StdioRelay:
    """One client on ``reader``/``writer`` (the gateway's stdin/stdout), one upstream
    server process, the gate of ``identity`` in between. The upstream is restarted after
    a crash (up to ``restarts`` times) and brought back to where the client left it (the
    client's handshake replayed, the tools listed again)."""

    def __init__(self, wall: Shieldwall, spec: UpstreamSpec, pins: PinState,
                 identity: Identity, *, max_result_bytes: int = 256 * 1024, restarts: int = 3,
                 call_timeout: float = 60.0, connect_timeout: float = 30.0,
                 errlog: TextIO | None = None) -> None:
        if not spec.command:
            raise ShieldwallError("the stdio relay needs a server command (a URL upstream is "
                                  "served by GatedProxy)")
        self.wall = wall
        self.spec = spec
        self.pins = pins
        self.session = wall.session(identity.agent, identity.role, identity.task)
        self.max_result_bytes = max_result_bytes
        self.restarts = restarts
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.errlog = errlog or sys.stderr
        self.table = ToolTable(wall, pins, self._log)
        self.server_name = spec.describe()
        self.server_version = ""
        self.crashes = 0
        self.down: str | None = "not started"
        self._ids = itertools.count(1)
        self._pending: dict[Any, _Relayed | asyncio.Future[JSON]] = {}
        self._by_client: dict[Any, int] = {}  # client request id -> upstream id
        self._to_server: dict[Any, Any] = {}  # our id toward the client -> the server's id
        self._from_server: dict[Any, int] = {}
        self._handshake: JSON | None = None  # the client's initialize params (to replay)
        self._envelope: JSON | None = None  # stateless era: the client's per-request _meta
        self._listed: asyncio.Event | None = None
        self._ready: asyncio.Event | None = None
        self._closing = False
        self._dead = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handled: dict[Any, asyncio.Task[Any]] = {}  # client request id -> its handler
        self._proc: asyncio.subprocess.Process | None = None
        self._out: asyncio.StreamWriter | Any = None
        self._up: asyncio.StreamWriter | None = None

    def _log(self, msg: str) -> None:
        print(f"shieldwall mcp: {msg}", file=self.errlog, flush=True)

    # ----------------------------------------------------------------- running

    async def run(self, reader: asyncio.StreamReader, writer: Any) -> None:
        """Serve the client on ``reader``/``writer`` (``writer.write(bytes)``) until it
        closes its end; the upstream is stopped then."""
        self._out = writer
        self._listed = asyncio.Event()
        self._ready = asyncio.Event()
        warm_detectors()
        stack = ExitStack()
        try:
            first = await self._spawn(stack)
            supervisor = asyncio.create_task(self._supervise(first, stack))
            try:
                await self._client_loop(reader)
            finally:
                self._closing = True
                await self._stop_process()
                supervisor.cancel()
                for t in list(self._tasks):
                    t.cancel()
                with contextlib.suppress(BaseException):
                    await supervisor
        finally:
            stack.close()

    async def serve_stdio(self) -> None:
        """Serve on this process's stdin and stdout."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
        transport, _protocol = await loop.connect_write_pipe(asyncio.BaseProtocol, out)
        try:
            await self.run(reader, transport)
        finally:
            transport.close()

    def close(self) -> None:
        self.session.close()

    # ----------------------------------------------------------------- the upstream process

    async def _spawn(self, stack: ExitStack) -> asyncio.subprocess.Process:
        from mcp.client.stdio import get_default_environment

        try:
            argv, env, cwd = stdio_launch(self.spec, stack)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=_fd_or_inherit(self.errlog),
                env=get_default_environment() | (env or {}), cwd=cwd,
                limit=LINE_LIMIT, start_new_session=True)
        except (OSError, ValueError) as e:
            raise UpstreamDown(f"could not start MCP server {self.spec.describe()}: "
                               f"{type(e).__name__}: {e}") from None
        self._proc = proc
        self._up = proc.stdin
        return proc

    async def _supervise(self, proc: asyncio.subprocess.Process, stack: ExitStack) -> None:
        assert self._ready is not None
        failures = 0
        while True:
            reading = asyncio.create_task(self._upstream_loop(proc))
            try:
                if failures:
                    await self._restore()
                self.down = None
                self._ready.set()
                await reading
            except UpstreamDown as e:  # the restored server failed its handshake
                self._log(str(e))
                reading.cancel()
            self._ready.clear()
            await self._reap(proc)
            if self._closing:
                return
            self._lost(f"the MCP server closed the connection mid-request "
                       f"({self.spec.describe()}); restarting it")
            failures += 1
            self.crashes += 1
            self.down, delay = after_crash(self.spec.describe(), failures, self.restarts)
            self._log(self.down)
            if delay is None:
                self._dead = True
                self._ready.set()
                return
            await asyncio.sleep(delay)
            try:
                proc = await self._spawn(stack)
            except UpstreamDown as e:
                self._dead = True
                self.down = str(e)
                self._log(self.down)
                self._ready.set()
                return

    def _lost(self, why: str) -> None:
        """The upstream went away: every request waiting on it gets an error."""
        for p in list(self._pending.values()):
            if isinstance(p, asyncio.Future):
                if not p.done():
                    p.set_exception(UpstreamDown(why))
            else:
                self._by_client.pop(p.client_id, None)
                self._reply_error(p.client_id, INTERNAL_ERROR, why)
        self._pending.clear()
        # the client's answers to the dead server's requests have nowhere to go
        self._to_server.clear()
        self._from_server.clear()

    async def _restore(self) -> None:
        """Bring a restarted server to where the client left the last one."""
        if self._handshake is not None:
            resp = await self._request("initialize", self._handshake, wait=False)
            if "error" in resp:
                raise UpstreamDown(f"the restarted MCP server refused the handshake: "
                                   f"{resp['error'].get('message')}")
            self._write_up({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if self._handshake is not None or self._envelope is not None:
            await self._list_all(wait=False)

    async def _stop_process(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        await self._reap(proc)

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        """Wait for the server to exit after its stdin closed; then end its process group."""
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 2.0)
            if proc.returncode is not None:
                return

    # ----------------------------------------------------------------- writing

    def _write_client(self, msg: Any) -> None:
        self._out.write(_dumps(msg))

    def _reply(self, rid: Any, result: JSON) -> None:
        self._out.write(_dumps({"jsonrpc": "2.0", "id": rid, "result": result}))

    def _reply_error(self, rid: Any, code: int, message: str) -> None:
        self._out.write(_dumps({"jsonrpc": "2.0", "id": rid,
                                "error": {"code": code, "message": message}}))

    def _write_up(self, msg: Any) -> None:
        up = self._up
        if up is None or up.is_closing():
            raise UpstreamDown(self.down or "the MCP server is not running")
        up.write(_dumps(msg))

    async def _upstream_ready(self) -> None:
        ready = self._ready
        assert ready is not None
        if not ready.is_set():
            try:
                await asyncio.wait_for(ready.wait(), self.connect_timeout)
            except TimeoutError:
                raise UpstreamDown(self.down or "upstream did not come back in time") from None
        if self._dead:
            raise UpstreamDown(self.down or "upstream is down")

    async def _request(self, method: str, params: JSON | None, *, client_id: Any = None,
                       wait: bool = True, timeout: float | None = None) -> JSON:
        """Send a request of the gateway's own (or one it handles for the client) and
        return the upstream's response message."""
        if wait:
            await self._upstream_ready()
        uid = next(self._ids)
        fut: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._pending[uid] = fut
        if client_id is not None:
            self._by_client[client_id] = uid
        msg: JSON = {"jsonrpc": "2.0", "id": uid, "method": method}
        if self._envelope is not None:
            params = dict(params or {})
            params["_meta"] = {**self._envelope, **(params.get("_meta") or {})}
        if params is not None:
            msg["params"] = params
        try:
            self._write_up(msg)
            return await asyncio.wait_for(fut, timeout or self.call_timeout)
        except TimeoutError:
            raise UpstreamDown(f"the MCP server did not answer {method} within "
                               f"{timeout or self.call_timeout:g}s") from None
        finally:
            self._pending.pop(uid, None)
            if client_id is not None:
                self._by_client.pop(client_id, None)

    # ----------------------------------------------------------------- client -> upstream

    async def _client_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # one message over LINE_LIMIT
                self._reply_error(None, PARSE_ERROR, "message too large")
                return
            if not line:
                return
            if line.isspace():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                self._reply_error(None, PARSE_ERROR, "not JSON")
                continue
            for m in (msg if isinstance(msg, list) else [msg]):  # 2025-03-26 batches
                try:
                    await self._from_client(m, line if m is msg else None)
                except UpstreamDown as e:
                    if isinstance(m, dict) and "id" in m and "method" in m:
                        self._reply_error(m["id"], INTERNAL_ERROR, str(e))

    def _spawn_task(self, coro: Any, rid: Any = None) -> None:
        """Run ``coro`` in the background; ``rid``: the client request it answers (a
        cancellation from the client cancels it)."""
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        if rid is not None:
            self._handled[rid] = t
            t.add_done_callback(lambda _t: self._handled.pop(rid, None))

    async def _from_client(self, msg: Any, raw: bytes | None) -> None:
        if not isinstance(msg, dict):
            self._reply_error(None, INTERNAL_ERROR, "not a JSON-RPC message")
            return
        method = msg.get("method")
        if method is None:  # the client's answer to a request of the server
            sid = self._to_server.pop(msg.get("id"), None)
            if sid is None:
                return
            self._from_server.pop(sid, None)
            msg["id"] = sid
            await self._upstream_ready()
            self._write_up(msg)
            return
        if "id" not in msg:  # a notification
            if method == "notifications/cancelled":
                params = msg.get("params") or {}
                handler = self._handled.get(params.get("requestId"))
                uid = self._by_client.get(params.get("requestId"))
                if handler is not None:  # no answer is due any more
                    handler.cancel()
                if uid is None:
                    return
                msg = {**msg, "params": {**params, "requestId": uid}}
                raw = None
            await self._upstream_ready()
            if raw is not None:
                assert self._up is not None
                self._up.write(raw if raw.endswith(b"\n") else raw + b"\n")
            else:
                self._write_up(msg)
            if method == "notifications/initialized" and self._handshake is not None:
                self._spawn_task(self._first_listing())
            return
        rid = msg["id"]
        params = msg.get("params") or {}
        if method == "tools/call":
            self._spawn_task(self._handle_call(rid, params), rid)
        elif method == "tools/list":
            self._spawn_task(self._handle_list(rid), rid)
        elif method == "resources/read":
            self._spawn_task(self._handle_passthrough(
                rid, method, params, RESOURCE_LABEL, {"uri": str(params.get("uri", ""))}), rid)
        elif method == "prompts/get":
            self._spawn_task(self._handle_passthrough(
                rid, method, params, PROMPT_LABEL, {"name": str(params.get("name", ""))}), rid)
        else:
            await self._upstream_ready()
            uid = next(self._ids)
            keep = params if method in ("initialize", "server/discover") else None
            self._pending[uid] = _Relayed(rid, method, keep)
            self._by_client[rid] = uid
            msg["id"] = uid
            self._write_up(msg)

    # ----------------------------------------------------------------- upstream -> client

    async def _upstream_loop(self, proc: asyncio.subprocess.Process) -> None:
        reader = proc.stdout
        assert reader is not None
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                self._log("the MCP server sent a message over the size limit; disconnecting")
                return
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                self._log(f"the MCP server wrote a line that is not JSON: {line[:200]!r}")
                continue
            if isinstance(msg, dict):
                self._from_upstream(msg, line)

    def _from_upstream(self, msg: JSON, raw: bytes) -> None:
        method = msg.get("method")
        if method is None:  # a response
            p = self._pending.pop(msg.get("id"), None)
            if p is None:
                return
            if isinstance(p, asyncio.Future):
                if not p.done():
                    p.set_result(msg)
                return
            self._by_client.pop(p.client_id, None)
            if p.params is not None and "result" in msg:
                self._handshake_done(p, msg["result"])
            msg["id"] = p.client_id
            self._write_client(msg)
            return
        if "id" in msg:
            self._spawn_task(self._handle_server_request(msg))
            return
        if method == "notifications/tools/list_changed":
            self._spawn_task(self._on_list_changed(raw))
        elif method == "notifications/cancelled":
            params = msg.get("params") or {}
            cid = self._from_server.pop(params.get("requestId"), None)
            if cid is not None:
                self._to_server.pop(cid, None)
                self._write_client({**msg, "params": {**params, "requestId": cid}})
        else:
            self._out.write(raw)

    def _handshake_done(self, p: _Relayed, result: Any) -> None:
        """The client and the server agreed on a protocol era: note who the server is."""
        if not isinstance(result, dict):
            return
        if p.method == "initialize":
            self._handshake = p.params
            self._envelope = None
            info = result.get("serverInfo") or {}
            # the gateway may withhold tools at any time (drift), so it always announces it
            tools = (result.get("capabilities") or {}).get("tools")
            if isinstance(tools, dict):
                tools["listChanged"] = True
        else:  # server/discover: the stateless era; each request carries the envelope
            meta = (p.params or {}).get("_meta") or {}
            self._envelope = {k: v for k, v in meta.items() if k.startswith(ENVELOPE)}
            self._handshake = None
            info = (result.get("_meta") or {}).get(SERVER_INFO) or {}
            self._spawn_task(self._first_listing())
        if isinstance(info, dict):
            self.server_name = str(info.get("name") or self.spec.describe())
            self.server_version = str(info.get("version") or "")

    # ----------------------------------------------------------------- tools

    async def _first_listing(self) -> None:
        assert self._listed is not None
        try:
            await self._list_all()
        except Exception as e:
            self._log(f"listing the server's tools failed: {type(e).__name__}: {e}")
        finally:
            self._listed.set()

    async def _tools_known(self) -> None:
        assert self._listed is not None
        if not self._listed.is_set():
            try:
                await asyncio.wait_for(self._listed.wait(), self.connect_timeout)
            except TimeoutError:
                raise UpstreamDown("the MCP server's tools are not known yet (no "
                                   "handshake?)") from None

    async def _list_all(self, *, wait: bool = True) -> tuple[list[JSON], JSON]:
        """Every tool of the server (following pagination); the registry and the pins are
        updated from it. Returns the tools and the last page's other fields."""
        tools: list[JSON] = []
        cursor: Any = None
        last: JSON = {}
        for _ in range(MAX_PAGES):
            resp = await self._request("tools/list", {"cursor": cursor} if cursor else None,
                                       wait=wait)
            if "error" in resp:
                raise UpstreamError(f"tools/list: {resp['error'].get('message')}")
            last = resp.get("result") or {}
            tools.extend(t for t in last.get("tools") or [] if isinstance(t, dict))
            cursor = last.get("nextCursor")
            if not cursor:
                break
        self.table.absorb(self.server_name, self.server_version, tools)
        return tools, last

    async def _handle_list(self, rid: Any) -> None:
        try:
            await self._tools_known()
            tools, last = await self._list_all()
        except (UpstreamDown, UpstreamError) as e:
            self._reply_error(rid, INTERNAL_ERROR, str(e))
            return
        result = {k: v for k, v in last.items() if k not in ("tools", "nextCursor")}
        result["tools"] = self.table.visible(self.session, tools)
        self._reply(rid, result)

    async def _on_list_changed(self, raw: bytes) -> None:
        try:
            await self._list_all()
        except Exception as e:
            self._log(f"re-listing tools after list_changed failed: {type(e).__name__}: {e}")
        self._out.write(raw)

    async def _forward_call(self, rid: Any, name: str, args: JSON, meta: JSON | None
                            ) -> GatedView:
        params: JSON = {"name": name, "arguments": args}
        fwd = {k: v for k, v in (meta or {}).items() if k != APPROVAL_META_KEY}
        if fwd:
            params["_meta"] = fwd
        resp = await self._request("tools/call", params, client_id=rid)
        if "error" in resp:
            raise UpstreamError(str(resp["error"].get("message")))
        result = resp.get("result")
        return GatedView(cap_result(result if isinstance(result, dict) else {},
                                    self.max_result_bytes))

    async def _handle_call(self, rid: Any, params: JSON) -> None:
        async def forward(name: str, args: JSON, meta: JSON | None) -> GatedView:
            return await self._forward_call(rid, name, args, meta)

        try:
            await self._tools_known()
            args = params.get("arguments") or {}
            meta = params.get("_meta")
            result = await gated_tool_call(
                self.wall, self.session, str(params.get("name", "")),
                dict(args) if isinstance(args, dict) else {},
                meta if isinstance(meta, dict) else None, forward)
        except UpstreamDown as e:
            result = error_result(f"{params.get('name')} failed: {e}")
        if self._envelope is not None:
            result.setdefault("resultType", "complete")
        self._reply(rid, result)

    async def _handle_passthrough(self, rid: Any, method: str, params: JSON, label: str,
                                  args: JSON) -> None:
        try:
            resp = await self._request(method, params, client_id=rid)
        except UpstreamDown as e:
            self._reply_error(rid, INTERNAL_ERROR, str(e))
            return
        result = resp.get("result")
        if "error" in resp or not isinstance(result, dict):
            resp["id"] = rid
            self._write_client(resp)
            return
        try:
            self._reply(rid, gated_passthrough(self.session, label, args, result))
        except ResultRefused as e:
            self._reply_error(rid, INTERNAL_ERROR, str(e))

    # ----------------------------------------------------------------- server -> client

    async def _handle_server_request(self, msg: JSON) -> None:
        sid = msg["id"]
        method = str(msg["method"])
        if method == "ping":  # the gateway is alive whatever the client does
            self._write_up({"jsonrpc": "2.0", "id": sid, "result": {}})
            return
        refusal = check_server_request(self.wall, self.session, self.server_name, method,
                                       msg.get("params") or {})
        if refusal is not None:
            self._log(f"refused {method} from {self.server_name}: {refusal}")
            self._write_up({"jsonrpc": "2.0", "id": sid,
                            "error": {"code": SERVER_REQUEST_REFUSED, "message": refusal}})
            return
        cid = next(self._ids)
        self._to_server[cid] = sid
        self._from_server[sid] = cid
        self._write_client({**msg, "id": cid})

def serve(relay: StdioRelay, on_error: Callable[[BaseException], None] | None = None) -> None:
    """Run ``relay`` on stdin/stdout until the client hangs up (or SIGTERM/SIGINT)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await relay.serve_stdio()

    asyncio.run(main())
