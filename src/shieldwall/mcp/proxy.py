"""The MCP gateway's gate logic, and the SDK-based gateway (HTTP, or an HTTP upstream).

The gate on one ``tools/call`` (:func:`gated_tool_call`), on resource and prompt results
(:func:`gated_passthrough`) and the upstream's tool table (:class:`ToolTable`: registry,
argument schemas, pin verdicts) work on wire dicts and are shared by both gateways: the
lean stdio relay (:mod:`shieldwall.mcp.relay`, ``shieldwall mcp wrap -- CMD``) and
:class:`GatedProxy`, a real MCP server (the ``mcp`` SDK) facing the clients with an SDK
client facing the upstream (``shieldwall mcp serve`` and ``wrap --url``).

Every ``tools/call`` goes through the gate (roles, tasks, argument schema and constraints,
approvals, flows, budgets, audit) before the upstream call is made, so a refused call never
reaches the server and stripped arguments are never sent. Results come back through the
``ToolResult`` decision, so the result layers of the other rooms (secret redaction,
injection scan, spotlighting) apply before the client sees them. Tools whose manifest
drifted from ``shieldwall.lock`` are withheld from ``tools/list`` and refused by
:class:`~shieldwall.mcp.pin.PinLayer`.

GatedProxy keeps one upstream connection per client session (HTTP), so what the upstream
says on its own (log messages, list_changed, sampling/elicitation/roots requests) reaches
only the session it belongs to.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TextIO, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread

from ..actions import Action, Decision, Finding, ToolCall, ToolResult, Verdict
from ..errors import Denied, ShieldwallError
from ..tools import JsonSchemaValidator, ToolSpec
from .pin import PinState, ToolManifest
from .upstream import UpstreamSpec, list_all_tools, open_session

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server

    from ..session import Session
    from ..wall import Shieldwall

T = TypeVar("T")

APPROVAL_META_KEY = "shieldwall/approval"
MAX_HTTP_SESSIONS = 4096  # gate sessions kept for HTTP clients (one per agent and MCP session)
MAX_SESSION_UPSTREAMS = 64  # upstream connections kept for HTTP client sessions (oldest closed)
# Names under which resource and prompt results pass the result layers (usable in the
# policy's tools: section, e.g. to mark them `result: {trusted: false}`).
RESOURCE_LABEL = "mcp.resources_read"
PROMPT_LABEL = "mcp.prompts_get"
SERVER_REQUEST_REFUSED = -32001  # a server request the gate refused (implementation range)
TRUNCATED_NOTE = "[shieldwall: result truncated: {n} bytes over the {cap}-byte cap]"


class UpstreamDown(ShieldwallError):
    """The upstream server is not reachable (crashed, restarting, or given up on)."""


@dataclass(frozen=True, slots=True)
class Identity:
    agent: str
    role: str
    task: str | None = None

    @property
    def key(self) -> str:
        return f"{self.agent}\x00{self.role}\x00{self.task or ''}"


# --------------------------------------------------------------------------- upstream


class Upstream:
    """One supervised connection to the real server. After a crash the server is started
    again (up to ``restarts`` times); calls meanwhile get :class:`UpstreamDown`."""

    def __init__(self, spec: UpstreamSpec, *, restarts: int = 3, call_timeout: float = 60.0,
                 connect_timeout: float = 30.0, errlog: TextIO | None = None,
                 on_tools: Callable[[list[Any]], None] | None = None,
                 callbacks: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.callbacks = callbacks or {}  # ClientSession callbacks: sampling, roots, ...
        self.restarts = restarts
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.errlog = errlog or sys.stderr
        self.on_tools = on_tools
        self.session: Any = None
        self.init: Any = None
        self.tools: list[Any] = []
        self.down: str | None = "not started"
        self.dead = False
        self.crashes = 0
        self._ready = anyio.Event()
        self._stop = anyio.Event()
        self._closing = False
        self._notes_send, self._notes_recv = anyio.create_memory_object_stream[Any](256)

    def _log(self, msg: str) -> None:
        print(f"shieldwall mcp: {msg}", file=self.errlog, flush=True)

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            return
        try:
            self._notes_send.send_nowait(message)
        except anyio.WouldBlock:
            self._log(f"dropped a notification from the upstream ({type(message).__name__})")

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        started = False
        failures = 0
        while not self._closing:
            self._stop = anyio.Event()
            try:
                async with open_session(self.spec, message_handler=self._on_message,
                                        errlog=self.errlog, **self.callbacks) as (cs, init):
                    self.init = init
                    await self._list(cs)
                    self.session = cs
                    self.down = None
                    self._ready.set()
                    if not started:
                        started = True
                        task_status.started()
                    await self._stop.wait()
            except Exception as e:
                if not started:
                    raise UpstreamDown(f"could not start MCP server {self.spec.describe()}: "
                                       f"{_describe(e)}") from None
                self._log(f"upstream connection ended: {_describe(e)}")
            finally:
                self.session = None
                if self._ready.is_set():
                    self._ready = anyio.Event()
            if self._closing:
                return
            failures += 1
            self.crashes += 1
            self.down, delay = after_crash(self.spec.describe(), failures, self.restarts)
            self._log(self.down)
            if delay is None:
                self.dead = True
                self._ready.set()
                return
            await anyio.sleep(delay)

    def close(self) -> None:
        self._closing = True
        self._stop.set()

    async def _list(self, cs: Any) -> list[Any]:
        tools = await list_all_tools(cs)
        self.tools = tools
        if self.on_tools is not None:
            self.on_tools(tools)
        return tools

    def _lost(self, cs: Any) -> None:
        if self.session is cs and cs is not None:
            self.session = None
            self._ready = anyio.Event()
            self._stop.set()

    async def _connected(self) -> Any:
        with anyio.fail_after(self.connect_timeout):
            while True:
                if self.dead:
                    raise UpstreamDown(self.down or "upstream is down")
                cs = self.session
                if cs is not None:
                    return cs
                await self._ready.wait()
                if self.session is None and not self.dead:
                    await anyio.sleep(0.01)

    async def call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client_session)``; a lost connection becomes :class:`UpstreamDown`."""
        from mcp_types import CONNECTION_CLOSED

        from mcp import MCPError

        try:
            cs = await self._connected()
        except TimeoutError:
            raise UpstreamDown(self.down or "upstream did not come back in time") from None
        try:
            return await op(cs)
        except MCPError as e:
            if e.code == CONNECTION_CLOSED:
                self._lost(cs)
                raise UpstreamDown(f"the MCP server closed the connection mid-request "
                                   f"({self.spec.describe()}); restarting it") from None
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                OSError) as e:
            self._lost(cs)
            raise UpstreamDown(f"the MCP server connection broke ({type(e).__name__}); "
                               "restarting it") from None

    async def refresh_tools(self) -> list[Any]:
        return await self.call(self._list)

    async def notifications(self) -> anyio.abc.ObjectReceiveStream[Any]:
        return self._notes_recv


def _describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


# --------------------------------------------------------------------------- results


def cap_result(dumped: dict[str, Any], cap: int) -> dict[str, Any]:
    """Truncate a CallToolResult (wire dict) to about ``cap`` bytes of content."""
    content = dumped.get("content")
    if not isinstance(content, list):
        return dumped
    used = 0
    out: list[Any] = []
    over = 0
    for item in content:
        if not isinstance(item, dict):
            continue
        size = len(json.dumps(item, ensure_ascii=False).encode())
        if used + size <= cap:
            out.append(item)
            used += size
            continue
        over += used + size - cap if used < cap else size
        if item.get("type") == "text" and used < cap:
            text = str(item.get("text", ""))
            room = max(0, cap - used)
            cut = text.encode()[:room].decode(errors="ignore")
            out.append({**item, "text": cut})
            used = cap
    if over:
        out.append({"type": "text", "text": TRUNCATED_NOTE.format(n=over, cap=cap)})
        dumped = {**dumped, "content": out}
        sc = dumped.get("structuredContent")
        if sc is not None and len(json.dumps(sc, ensure_ascii=False).encode()) > cap:
            dumped.pop("structuredContent", None)
    return dumped


def error_result(text: str, rules: list[str] | None = None, verdict: str = "error"
                 ) -> dict[str, Any]:
    """A CallToolResult (wire dict) that tells the client what went wrong."""
    shield: dict[str, Any] = {"verdict": verdict}
    if rules:
        shield["rules"] = rules
    return {"content": [{"type": "text", "text": text}], "isError": True,
            "_meta": {"shieldwall": shield}}


def _text_slots(value: Any, out: list[dict[str, Any]], depth: int = 0) -> list[dict[str, Any]]:
    """The dicts in a result that carry model-visible text (``{"text": str}``), in order."""
    if depth > 16:
        return out
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            out.append(value)
        for k, v in value.items():
            if k != "text" and k != "_meta":
                _text_slots(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _text_slots(v, out, depth + 1)
    return out


class GatedView:
    """What the result layers see of an MCP result: its texts (one string when there is
    one), plus ``structuredContent`` for tools. Layers that redact or wrap strings change
    these; :meth:`apply` writes them back into the wire result."""

    def __init__(self, dumped: dict[str, Any]) -> None:
        import copy

        self.dumped = copy.deepcopy(dumped)
        body = {k: v for k, v in self.dumped.items() if k not in ("_meta", "structuredContent")}
        self.slots = _text_slots(body, [])
        self.structured = "structuredContent" in self.dumped

    def value(self) -> Any:
        texts = [s["text"] for s in self.slots]
        if not self.structured:
            return texts[0] if len(texts) == 1 else texts
        return {"content": texts, "structuredContent": self.dumped["structuredContent"]}

    def apply(self, out: Any) -> dict[str, Any] | None:
        """The wire result with the layers' changes, or None when ``out`` lost its shape."""
        if self.structured:
            if not isinstance(out, dict) or not isinstance(out.get("content"), list):
                return None
            texts, self.dumped["structuredContent"] = out["content"], out.get("structuredContent")
        elif len(self.slots) == 1:
            texts = [out]
        else:
            texts = out
        if not isinstance(texts, list) or len(texts) != len(self.slots):
            return None
        for slot, t in zip(self.slots, texts, strict=True):
            slot["text"] = t if isinstance(t, str) else json.dumps(t, ensure_ascii=False,
                                                                    default=str)
        return self.dumped


def _meta_dict(meta: Any) -> dict[str, Any] | None:
    """A request's ``_meta`` as a dict (a model on handshake versions, a mapping on the
    2026-07-28 wire)."""
    if meta is None:
        return None
    if isinstance(meta, dict):
        return meta
    dumped: dict[str, Any] = meta.model_dump(by_alias=True, exclude_none=True)
    return dumped


def denied_result(decision: Decision) -> dict[str, Any]:
    rules = sorted({f.rule for f in decision.deciding()})
    return error_result(f"Shieldwall refused this call: {Denied(decision).for_model()}", rules,
                        decision.verdict.label)


def rebuilt_result(view: GatedView | None, out: Any) -> dict[str, Any]:
    """The wire result with the result layers' changes; plain text when its shape was lost."""
    data = view.apply(out) if view is not None else None
    if data is not None:
        return data
    text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False, default=str)
    return {"content": [{"type": "text", "text": text}]}


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An object schema that declares no properties declares no arguments: make that
    explicit so undeclared arguments are stripped, not waved through."""
    s = dict(schema or {})
    if s.get("type", "object") == "object" and "properties" not in s:
        s["properties"] = {}
    return s


# --------------------------------------------------------------------------- the gate


class ResultRefused(ShieldwallError):
    """A resource or prompt result the result layers refused (or could not rebuild)."""


class UpstreamError(ShieldwallError):
    """The upstream answered a request with a JSON-RPC error."""


# forward(tool, arguments, request _meta) -> the upstream's result, capped, as a GatedView
Forward = Callable[[str, dict[str, Any], "dict[str, Any] | None"], Awaitable[GatedView]]


async def gated_tool_call(wall: Shieldwall, session: Session, name: str, args: dict[str, Any],
                          meta: dict[str, Any] | None, forward: Forward) -> dict[str, Any]:
    """The gate on one tools/call: the steps of ``Session.call``, run on the event loop (a
    worker thread only when a person must approve, since that blocks). ``forward`` is the
    upstream call: it runs only for an allowed call, with the gate's (stripped) arguments
    and the secrets resolved. Returns the CallToolResult for the client (wire dict)."""
    approval = (meta or {}).get(APPROVAL_META_KEY)
    state = session.state
    try:
        decision = session.decide(ToolCall(name, args),
                                  approval_id=approval if isinstance(approval, str) else None)
        if decision.verdict == Verdict.ASK:
            decision = await anyio.to_thread.run_sync(session.ask, decision)
        if not decision.allowed:
            return denied_result(decision)
        call = decision.action
        assert isinstance(call, ToolCall)
        if call.tool not in wall.tools:
            return error_result(f"{call.tool}: the MCP server does not offer this tool")
        t0 = time.perf_counter()
        try:
            real_args = wall.resolve_secrets(call.args, call.tool, state)
            view = await forward(call.tool, real_args, meta)
        except Exception as e:
            msg = wall.redact_text(f"{type(e).__name__}: {e}")
            wall.gate.record_outcome(state, call, error=msg,
                                     duration_ms=(time.perf_counter() - t0) * 1000)
            if isinstance(e, UpstreamDown):
                msg = f"the MCP server is down or was restarted ({msg})"
            return error_result(f"{call.tool} failed: {msg}")
        duration = (time.perf_counter() - t0) * 1000
        rdecision = session.decide(ToolResult(call.tool, call.args, view.value()))
        out = rdecision.action.result if isinstance(rdecision.action, ToolResult) else None
        wall.gate.record_outcome(state, call, result=out, duration_ms=duration,
                                 verdict=rdecision.verdict)
        if rdecision.verdict >= Verdict.ASK:
            return denied_result(rdecision)
        return rebuilt_result(view, out)
    except ShieldwallError as e:
        return error_result(f"{name} failed: {e}")


def gated_passthrough(session: Session, label: str, args: dict[str, Any],
                      dumped: dict[str, Any]) -> dict[str, Any]:
    """A resource/prompt result (wire dict) through the result layers (redact, scan,
    label); ``dumped`` itself when nothing changed. Raises :class:`ResultRefused`."""
    view = GatedView(dumped)
    value = view.value()
    d = session.decide(ToolResult(label, args, value))
    if d.verdict >= Verdict.ASK:
        rules = ", ".join(sorted({f.rule for f in d.deciding()}))
        raise ResultRefused(f"Shieldwall refused this {label} result ({rules})")
    out = d.action.result if isinstance(d.action, ToolResult) else value
    if out is value:
        return dumped
    data = view.apply(out)
    if data is None:
        raise ResultRefused(f"Shieldwall could not rebuild the {label} result after its checks")
    return data


def after_crash(server: str, failures: int, restarts: int) -> tuple[str, float | None]:
    """What an upstream says after its ``failures``-th crash, and the back-off before it is
    started again (None once its ``restarts`` are spent). Shared by the stdio relay and the
    SDK engine."""
    if failures > restarts:
        return f"MCP server {server} crashed {failures} times; not restarted again", None
    return (f"MCP server {server} crashed; restarting (attempt {failures} of {restarts})",
            min(0.1 * failures, 2.0))


@dataclass(slots=True)
class ServerRequest(Action):
    """A request the MCP server sent to the client (sampling, elicitation, roots): audited
    as its own kind, so `shieldwall audit` shows which server asked the client for what."""

    kind: ClassVar[str] = "mcp_server_request"
    method: str
    server: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def target(self) -> str:
        return self.method

    def payload(self) -> dict[str, Any]:
        return {"server": self.server, **self.summary}


def _texts(value: Any, out: list[str], depth: int = 0) -> list[str]:
    """Every string under a ``text`` key (message contents), in order."""
    if depth > 16:
        return out
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "text" and isinstance(v, str):
                out.append(v)
            elif k != "_meta":
                _texts(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _texts(v, out, depth + 1)
    return out


def check_server_request(wall: Shieldwall, session: Session, server: str, method: str,
                         params: dict[str, Any]) -> str | None:
    """Audit a request of the server to the client; the reason when the gate refuses
    it. Sampling text is what the client's model will read on the server's behalf, an
    elicitation message what its user will: both are untrusted input."""
    state = session.state
    text = ""
    summary: dict[str, Any] = {}
    if method == "sampling/createMessage":
        parts = _texts(params.get("messages"), [])
        system = params.get("systemPrompt")
        if isinstance(system, str):
            parts.insert(0, system)
        text = "\n".join(parts)
        summary = {"messages": len(params.get("messages") or []), "chars": len(text),
                   "max_tokens": params.get("maxTokens")}
    elif method == "elicitation/create":
        text = str(params.get("message") or "")
        summary = {"chars": len(text), "mode": params.get("mode", "form")}
    kind = method.split("/", 1)[0]
    allowed = wall.policy.mcp.server_requests
    if kind in ("sampling", "elicitation", "roots") and kind not in allowed:
        f = Finding("mcp", "mcp.server_request_not_allowed",
                    f"server {server!r} sent {method}, which the policy does not let servers ask "
                    f"of the client (mcp.server_requests: {', '.join(allowed) or 'none'})",
                    Verdict.DENY, evidence=method)
        wall.gate.record(Decision(Verdict.DENY, ServerRequest(method, server, summary), (f,)), state,
                         event="mcp.server_request")
        return f"Shieldwall refused this {method} request (mcp.server_request_not_allowed)"
    wall.gate.record(Decision(Verdict.ALLOW, ServerRequest(method, server, summary)), state,
                     event="mcp.server_request")
    if not text:
        return None
    d = session.check_input(text, source=f"mcp:{server}:{method}", trusted=False)
    if d.verdict >= Verdict.ASK:
        rules = ", ".join(sorted({f.rule for f in d.deciding()}))
        return f"Shieldwall refused this {method} request ({rules})"
    return None


class ToolTable:
    """The upstream's tools as the gate knows them: each listing (wire dicts) updates the
    tool registry (with the declared input schema, so undeclared arguments are stripped)
    and the pin verdicts."""

    def __init__(self, wall: Shieldwall, pins: PinState, log: Callable[[str], None]) -> None:
        self.wall = wall
        self.pins = pins
        self.log = log
        self._known: set[str] = set()

    def absorb(self, server: str, version: str, tools: list[dict[str, Any]]) -> None:
        names = set()
        for t in tools:
            name = str(t.get("name", ""))
            names.add(name)
            try:
                validator = JsonSchemaValidator(_strict_schema(dict(t.get("inputSchema") or {})))
            except Exception as e:
                self.log(f"tool {name!r} has an invalid input schema ({e}); not callable")
                self.wall.tools.pop(name, None)
                continue
            self.wall.register_tool(ToolSpec(name, fn=None, validator=validator,
                                             description=str(t.get("description") or ""),
                                             meta={"mcp_server": server}))
        for gone in self._known - names:
            self.wall.tools.pop(gone, None)
        self._known = names
        newly = self.pins.update(server, version, [ToolManifest.from_wire(t) for t in tools])
        for f in newly.values():
            self.log(f"[{f.rule}] {f.message}")

    def visible(self, session: Session, tools: list[T]) -> list[T]:
        """The tools this session may see: granted to its role and task, not drifted."""
        granted = session.state.effective.tools
        return [t for t in tools if _name(t) in granted and self.pins.visible(_name(t))]


def _name(tool: Any) -> str:
    return str(tool.get("name", "") if isinstance(tool, dict) else tool.name)


def _wire(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    dumped.pop("resultType", None)
    return dumped


def _as_model(result_type: Any, data: dict[str, Any]) -> Any:
    """A wire result as the SDK model; a CallToolResult that does not validate becomes its
    text."""
    try:
        return result_type.model_validate(data)
    except ValueError:  # pydantic's ValidationError
        return result_type.model_validate(rebuilt_result(None, data))


# --------------------------------------------------------------------------- proxy


@dataclass(slots=True, eq=False)
class _SessionUpstream:
    """One HTTP client session's own upstream connection."""

    upstream: Upstream
    conn: Any
    ready: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None


class GatedProxy:
    """Serves one upstream MCP server to MCP clients through the gate.

    ``identity`` fixes who is calling (stdio); in HTTP mode ``identity_of(ctx)`` reads it
    from the request the bearer-token middleware annotated.
    """

    def __init__(self, wall: Shieldwall, spec: UpstreamSpec, pins: PinState, *,
                 identity: Identity | None = None,
                 identity_of: Callable[[Any], Identity] | None = None,
                 max_result_bytes: int = 256 * 1024, restarts: int = 3,
                 call_timeout: float = 60.0, errlog: TextIO | None = None) -> None:
        if (identity is None) == (identity_of is None):
            raise ShieldwallError("GatedProxy needs exactly one of identity / identity_of")
        self.wall = wall
        self.pins = pins
        self.identity = identity
        self.identity_of = identity_of
        self.max_result_bytes = max_result_bytes
        self.call_timeout = call_timeout
        self.errlog = errlog or sys.stderr
        self.upstream = Upstream(spec, restarts=restarts, call_timeout=call_timeout,
                                 errlog=self.errlog, on_tools=self._absorb_tools)
        self._sessions: dict[str, Session] = {}
        self._conns: dict[int, Any] = {}
        self._clients: dict[str, _SessionUpstream] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self.restarts = restarts
        self.table = ToolTable(wall, pins, self._log)
        self._progress: dict[str, tuple[Any, Any, Any]] = {}
        self._progress_seq = 0
        self.server: Server[Any] | None = None
        if identity is not None:
            self._sessions[""] = wall.session(identity.agent, identity.role, identity.task)

    def _log(self, msg: str) -> None:
        print(f"shieldwall mcp: {msg}", file=self.errlog, flush=True)

    # ----------------------------------------------------------------- tools registry

    def _absorb_tools(self, tools: list[Any]) -> None:
        """A fresh upstream listing: update the registry and the pin verdicts."""
        init = self.upstream.init
        version = str(getattr(getattr(init, "server_info", None), "version", "") or "")
        self.table.absorb(self.server_name, version, [_wire(t) for t in tools])

    @property
    def server_name(self) -> str:
        init = self.upstream.init
        info = getattr(init, "server_info", None)
        return str(getattr(info, "name", "") or self.upstream.spec.describe())

    async def _forward_call(self, name: str, args: dict[str, Any],
                            meta: dict[str, Any] | None, ctx: Any = None) -> GatedView:
        fwd_meta = None
        token = (meta or {}).get("progress_token", (meta or {}).get("progressToken"))
        ours = None
        if token is not None and ctx is not None:
            # the upstream sees a token of ours, so progress goes back to this request only
            self._progress_seq += 1
            ours = f"shieldwall-{self._progress_seq}"
            self._progress[ours] = (ctx.session, ctx.request_id, token)
            fwd_meta = {"progress_token": ours}
        try:
            up = await self._upstream_for(ctx)
            res = await up.call(lambda cs: cs.call_tool(
                name, args, read_timeout_seconds=self.call_timeout, meta=fwd_meta))
        finally:
            if ours is not None:
                self._progress.pop(ours, None)
        return GatedView(cap_result(_wire(res), self.max_result_bytes))

    # ----------------------------------------------------------------- sessions

    def _session_key(self, ctx: Any) -> tuple[Identity, str, str]:
        """(identity, MCP session id or "", key) of the HTTP request behind ``ctx``."""
        assert self.identity_of is not None
        ident = self.identity_of(ctx)
        sid = ""
        req = getattr(ctx, "request", None)
        headers = getattr(req, "headers", None)
        if headers is not None:
            sid = headers.get("mcp-session-id", "") or ""
        return ident, sid, f"{ident.key}\x00{sid}"

    def gate_session(self, ctx: Any) -> Session:
        if self.identity is not None:
            return self._sessions[""]
        ident, _, key = self._session_key(ctx)
        s = self._sessions.get(key)
        if s is None:
            s = self.wall.session(ident.agent, ident.role, ident.task)
            self._sessions[key] = s
            while len(self._sessions) > MAX_HTTP_SESSIONS:  # oldest first (dicts keep order)
                self._sessions.pop(next(iter(self._sessions))).close()
        return s

    # ----------------------------------------------------------------- upstream per session

    async def _upstream_for(self, ctx: Any) -> Upstream:
        """The upstream connection that serves this request. Each HTTP client session
        (``Mcp-Session-Id``) gets one of its own, so what the upstream says on its own
        (log messages, list_changed, sampling/elicitation/roots requests) belongs to
        exactly one session. Stdio, and stateless HTTP requests (no session, hence no
        channel back), share the first connection."""
        if self.identity is not None or ctx is None or self._tg is None:
            return self.upstream
        _, sid, key = self._session_key(ctx)
        conn = getattr(getattr(ctx, "session", None), "_connection", None)
        if not sid or conn is None:
            return self.upstream
        c = self._clients.get(key)
        if c is None:
            c = self._open_session_upstream(key, conn, self.gate_session(ctx))
        await c.ready.wait()
        if c.error is not None:
            self._drop_session_upstream(key, c)
            raise UpstreamDown(c.error)
        return c.upstream

    def _open_session_upstream(self, key: str, conn: Any, session: Session) -> _SessionUpstream:
        assert self._tg is not None
        up = Upstream(self.upstream.spec, restarts=self.restarts, call_timeout=self.call_timeout,
                      errlog=self.errlog, on_tools=self._absorb_tools,
                      callbacks=self._client_callbacks(conn, session))
        c = _SessionUpstream(up, conn)
        self._clients[key] = c
        conn.exit_stack.callback(self._drop_session_upstream, key, c)
        while len(self._clients) > MAX_SESSION_UPSTREAMS:  # oldest first
            old = next(iter(self._clients))
            self._drop_session_upstream(old, self._clients[old])
        self._tg.start_soon(self._run_session_upstream, c)
        return c

    def _drop_session_upstream(self, key: str, c: _SessionUpstream) -> None:
        if self._clients.get(key) is c:
            del self._clients[key]
        c.upstream.close()

    async def _run_session_upstream(self, c: _SessionUpstream) -> None:
        try:
            async with anyio.create_task_group() as tg:
                async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                    await c.upstream.run(task_status=task_status)
                    tg.cancel_scope.cancel()  # closed: stop the pump too

                await tg.start(run)
                c.ready.set()
                tg.start_soon(self._pump, c.upstream, c.conn)
        except Exception as e:
            c.error = f"could not open the upstream for this session: {_describe(e)}"
            self._log(c.error)
        finally:
            c.ready.set()

    def _client_callbacks(self, conn: Any, session: Session) -> dict[str, Any]:
        """ClientSession callbacks that pass the upstream's requests to this client (only
        those its capabilities allow), each audited and, for text a model or a person will
        read, scanned first (:func:`check_server_request`)."""
        from mcp_types import INTERNAL_ERROR

        from mcp import MCPError
        from mcp import types as mt

        async def relay(method: str, params: Any, result_type: Any) -> Any:
            dumped = _wire(params) if params is not None else {}
            refusal = check_server_request(self.wall, session, self.server_name, method, dumped)
            if refusal is not None:
                self._log(f"refused {method} from {self.server_name}: {refusal}")
                return mt.ErrorData(code=SERVER_REQUEST_REFUSED, message=refusal)
            try:
                raw = await conn.send_raw_request(method, dumped or None)
                return result_type.model_validate(raw)
            except MCPError as e:
                return mt.ErrorData(code=e.code, message=e.message)
            except Exception as e:
                return mt.ErrorData(code=INTERNAL_ERROR,
                                    message=f"the client could not be asked: {_describe(e)}")

        async def sampling(context: Any, params: Any) -> Any:
            return await relay("sampling/createMessage", params, mt.CreateMessageResult)

        async def elicitation(context: Any, params: Any) -> Any:
            return await relay("elicitation/create", params, mt.ElicitResult)

        async def roots(context: Any) -> Any:
            return await relay("roots/list", None, mt.ListRootsResult)

        caps = getattr(conn, "client_capabilities", None)
        out: dict[str, Any] = {}
        if getattr(caps, "sampling", None) is not None:
            out["sampling_callback"] = sampling
        if getattr(caps, "elicitation", None) is not None:
            out["elicitation_callback"] = elicitation
        if getattr(caps, "roots", None) is not None:
            out["list_roots_callback"] = roots
        return out

    # ----------------------------------------------------------------- handlers

    async def _track(self, ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
        conn = getattr(ctx.session, "_connection", None)
        if conn is not None and id(conn) not in self._conns:
            self._conns[id(conn)] = conn
            conn.exit_stack.callback(self._conns.pop, id(conn), None)
        return await call_next(ctx)

    async def _list_tools(self, ctx: Any, params: Any) -> Any:
        from mcp import types as mt

        session = self.gate_session(ctx)
        try:
            tools = await (await self._upstream_for(ctx)).refresh_tools()
        except UpstreamDown as e:
            raise _mcp_error(str(e)) from None
        return mt.ListToolsResult(tools=self.table.visible(session, tools))

    async def _call_tool(self, ctx: Any, params: Any) -> Any:
        from mcp import types as mt

        async def forward(name: str, args: dict[str, Any], meta: dict[str, Any] | None
                          ) -> GatedView:
            return await self._forward_call(name, args, meta, ctx)

        res = await gated_tool_call(self.wall, self.gate_session(ctx), params.name,
                                    dict(params.arguments or {}), _meta_dict(params.meta), forward)
        return _as_model(mt.CallToolResult, res)

    async def _passthrough(self, ctx: Any, label: str, args: dict[str, Any], result: Any,
                           result_type: Any) -> Any:
        """Run a resource/prompt result through the result layers (redact, scan, label)."""
        dumped = _wire(result)
        try:
            out = gated_passthrough(self.gate_session(ctx), label, args, dumped)
        except ResultRefused as e:
            raise _mcp_error(str(e)) from None
        return result if out is dumped else result_type.model_validate(out)

    async def _forward(self, ctx: Any, op: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await (await self._upstream_for(ctx)).call(op)
        except UpstreamDown as e:
            raise _mcp_error(str(e)) from None

    # ----------------------------------------------------------------- the server

    def build_server(self) -> Server[Any]:
        """A lowlevel MCP server mirroring the upstream's capabilities."""

        from mcp import types as mt

        init = self.upstream.init
        caps = init.capabilities
        info = init.server_info
        handlers: dict[str, Any] = {}
        if caps.tools is not None:
            handlers["on_list_tools"] = self._list_tools
            handlers["on_call_tool"] = self._call_tool
        if caps.resources is not None:
            async def list_resources(ctx: Any, params: Any) -> Any:
                return await self._forward(ctx, lambda cs: cs.list_resources(params=params))

            async def list_templates(ctx: Any, params: Any) -> Any:
                return await self._forward(ctx, lambda cs: cs.list_resource_templates(params=params))

            async def read_resource(ctx: Any, params: Any) -> Any:
                res = await self._forward(ctx, lambda cs: cs.read_resource(params.uri))
                return await self._passthrough(ctx, RESOURCE_LABEL, {"uri": str(params.uri)},
                                               res, mt.ReadResourceResult)

            handlers.update(on_list_resources=list_resources,
                            on_list_resource_templates=list_templates,
                            on_read_resource=read_resource)
            if caps.resources.subscribe:
                async def subscribe(ctx: Any, params: Any) -> Any:
                    return await self._forward(ctx, lambda cs: cs.subscribe_resource(str(params.uri)))

                async def unsubscribe(ctx: Any, params: Any) -> Any:
                    return await self._forward(
                        ctx, lambda cs: cs.unsubscribe_resource(str(params.uri)))

                handlers.update(on_subscribe_resource=subscribe,
                                on_unsubscribe_resource=unsubscribe)
        if caps.prompts is not None:
            async def list_prompts(ctx: Any, params: Any) -> Any:
                return await self._forward(ctx, lambda cs: cs.list_prompts(params=params))

            async def get_prompt(ctx: Any, params: Any) -> Any:
                res = await self._forward(
                    ctx, lambda cs: cs.get_prompt(params.name, params.arguments))
                return await self._passthrough(ctx, PROMPT_LABEL, {"name": params.name},
                                               res, mt.GetPromptResult)

            handlers.update(on_list_prompts=list_prompts, on_get_prompt=get_prompt)
        if caps.completions is not None:
            async def complete(ctx: Any, params: Any) -> Any:
                return await self._forward(ctx, lambda cs: cs.complete(
                    params.ref, params.argument.model_dump(), context_arguments=(
                        params.context.arguments if params.context else None)))

            handlers["on_completion"] = complete
        server: Server[Any] = _gated_server_class()(
            info.name, version=info.version or "", title=getattr(info, "title", None),
            instructions=init.instructions, **handlers)
        if caps.logging is not None:
            async def set_level(ctx: Any, params: Any) -> Any:
                return await self._forward(ctx, lambda cs: cs.send_request(
                    mt.SetLevelRequest(params=params), mt.EmptyResult))

            server.add_request_handler("logging/setLevel", mt.SetLevelRequestParams, set_level)
        server.middleware.append(self._track)
        from mcp.server.lowlevel.server import NotificationOptions

        # tools can change under the pins at any time, so listChanged is always offered
        server.notification_options = NotificationOptions(  # type: ignore[attr-defined]
            tools_changed=caps.tools is not None,
            resources_changed=bool(caps.resources and caps.resources.list_changed),
            prompts_changed=bool(caps.prompts and caps.prompts.list_changed))
        self.server = server
        return server

    def initialization_options(self) -> Any:
        assert self.server is not None
        return self.server.create_initialization_options()

    # ----------------------------------------------------------------- notifications

    async def _pump(self, upstream: Upstream, conn: Any) -> None:
        """What ``upstream`` says on its own goes to ``conn``, the client session it
        serves (None: the shared connection, whose messages belong to no HTTP session;
        on stdio its one client gets them)."""
        from mcp import types as mt

        stream = await upstream.notifications()
        async for note in stream:
            if isinstance(note, mt.ToolListChangedNotification):
                try:
                    await upstream.refresh_tools()
                except Exception as e:
                    self._log(f"re-listing tools after list_changed failed: {_describe(e)}")
            if isinstance(note, mt.ProgressNotification):
                route = self._progress.get(str(note.params.progress_token))
                if route is not None:
                    session, request_id, token = route
                    with anyio.move_on_after(5):
                        await session.send_progress_notification(
                            token, note.params.progress, note.params.total,
                            note.params.message, related_request_id=request_id)
                continue
            data = note.model_dump(by_alias=True, mode="json", exclude_none=True)
            targets = [conn] if conn is not None else (
                list(self._conns.values()) if self.identity is not None else [])
            for target in targets:
                with anyio.move_on_after(5):
                    await target.notify(data["method"], data.get("params"))

    # ----------------------------------------------------------------- running

    async def run(self, serve: Callable[[GatedProxy], Awaitable[None]]) -> None:
        """Start the upstream, build the server, run ``serve(self)``, then stop."""
        warm_detectors()
        async with anyio.create_task_group() as tg:
            await tg.start(self.upstream.run)
            self.build_server()
            self._tg = tg
            tg.start_soon(self._pump, self.upstream, None)
            try:
                await serve(self)
            finally:
                self._tg = None
                self.upstream.close()
                for key, c in list(self._clients.items()):
                    self._drop_session_upstream(key, c)
                tg.cancel_scope.cancel()

    async def serve_stdio(self) -> None:
        from mcp.server.stdio import stdio_server

        async def body(proxy: GatedProxy) -> None:
            assert proxy.server is not None
            async with stdio_server() as (read, write):
                await proxy.server.run(read, write, proxy.initialization_options())

        await self.run(body)

    def close(self) -> None:
        for s in list(self._sessions.values()):
            s.close()
        self._sessions.clear()


def warm_detectors() -> None:
    """Pay one-time detector start-up costs before the first call: paid inside the first
    decision they can exceed a layer's time budget, and the gate fails closed."""
    try:
        from ..detect import secrets as detect_secrets
    except ImportError:
        return
    scan = getattr(detect_secrets, "scan", None)
    if callable(scan):
        try:
            scan("shieldwall gateway warm-up")
        except Exception:  # noqa: S110 - warming is best effort; the gate still decides
            pass


def _gated_server_class() -> type[Any]:
    """A lowlevel Server whose initialization options default to the proxy's notification
    options (the streamable-HTTP manager asks for them without arguments)."""
    from mcp.server.lowlevel import Server

    class GatedServer(Server[Any]):
        notification_options: Any = None

        def create_initialization_options(self, notification_options: Any = None,
                                          *args: Any, **kwargs: Any) -> Any:
            return super().create_initialization_options(
                notification_options or self.notification_options, *args, **kwargs)

    return GatedServer


def _mcp_error(message: str) -> Exception:
    from mcp_types import INTERNAL_ERROR

    from mcp import MCPError

    return MCPError(code=INTERNAL_ERROR, message=message)
