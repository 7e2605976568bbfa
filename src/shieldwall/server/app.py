"""Routes of ``shieldwall serve``."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from ..actions import CodeRun, Decision, Egress, ModelInput, ModelOutput, ToolCall
from ..errors import ShieldwallError
from ..session import Session, SessionState
from ..wall import Shieldwall

Handler = Callable[[Request], Awaitable[Response]]


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Metrics:
    """Decision counters for ``/metrics`` (Prometheus text format)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.verdicts: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()

    def observe(self, decision: Decision, session: SessionState) -> None:
        with self._lock:
            self.verdicts[decision.verdict.label] += 1
            for f in decision.deciding():
                self.rules[f.rule] += 1

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP shieldwall_decisions_total Gate decisions by verdict.",
                     "# TYPE shieldwall_decisions_total counter"]
            lines += [f'shieldwall_decisions_total{{verdict="{v}"}} {n}' for v, n in sorted(self.verdicts.items())]
            lines += ["# HELP shieldwall_findings_total Deciding findings by rule id.",
                      "# TYPE shieldwall_findings_total counter"]
            lines += [f'shieldwall_findings_total{{rule="{r}"}} {n}' for r, n in sorted(self.rules.items())]
        return "\n".join(lines) + "\n"


def _action(data: dict[str, Any]) -> Any:
    kind = data.get("kind", "tool_call")
    if kind == "tool_call":
        return ToolCall(str(data["tool"]), dict(data.get("args") or {}))
    if kind == "egress":
        return Egress(str(data.get("method", "GET")), str(data["url"]),
                      {str(k): str(v) for k, v in (data.get("headers") or {}).items()},
                      str(data.get("body", "")).encode())
    if kind == "model_input":
        return ModelInput(str(data["text"]), source=str(data.get("source", "user")),
                          trusted=bool(data.get("trusted", True)))
    if kind == "model_output":
        return ModelOutput(str(data["text"]))
    if kind == "code_run":
        return CodeRun(code=str(data.get("code", "")), tool=str(data.get("tool", "run_code")))
    raise ValueError(f"unknown action kind {kind!r} (tool_call, egress, model_input, model_output, code_run)")


def build_app(wall: Shieldwall, tokens: dict[str, tuple[str, frozenset[str]]]) -> Starlette:
    """``tokens`` maps sha256(token) → (name, scopes)."""
    metrics = Metrics()
    wall.gate.observers.append(metrics.observe)
    sessions: dict[str, Session] = {}
    lock = threading.Lock()

    def auth(scope: str, handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get("sw_token", "")
            digest = token_digest(token) if token else ""
            hit = next((v for k, v in tokens.items() if digest and hmac.compare_digest(k, digest)), None)
            if hit is None:
                return JSONResponse({"error": "missing or unknown bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            if scope not in hit[1]:
                return JSONResponse({"error": f"token {hit[0]!r} lacks the {scope!r} scope"}, status_code=403)
            request.state.who = hit[0]
            return await handler(request)

        return wrapped

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"request body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError("request body must be a JSON object")
        return data

    async def decide(request: Request) -> Response:
        try:
            data = await body(request)
            action = _action(dict(data.get("action") or {}))
            sid = data.get("session")
            with lock:
                s = sessions.get(str(sid)) if sid else None
                if s is None:
                    s = wall.session(agent=str(data.get("agent", "")), role=str(data.get("role", "")),
                                     task=data.get("task"), session_id=str(sid) if sid else None)
                    sessions[s.id] = s
        except (ValueError, KeyError, ShieldwallError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        d = s.decide(action, approval_id=data.get("approval"))
        out: dict[str, Any] = {"session": s.id, "verdict": d.verdict.label, "allowed": d.allowed,
                               "findings": [f.to_dict() for f in d.findings], "audit_seq": d.audit_seq}
        if d.approval is not None:
            out["approval"] = d.approval.id
        if isinstance(d.action, ToolCall) and d.action is not action:
            out["args"] = d.action.args  # allow-with-changes: run with these
        return JSONResponse(out)

    async def approvals(request: Request) -> Response:
        return JSONResponse([r.summary() for r in wall.approvals.pending()])

    async def resolve(request: Request) -> Response:
        rid = request.path_params["rid"]
        try:
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                form = await request.form()
                approve, note = form.get("decision") == "approve", str(form.get("note", ""))
            else:
                data = await body(request)
                approve, note = bool(data.get("approve")), str(data.get("note", ""))
            wall.approvals.resolve(rid, approve, approver=request.state.who, note=note)
        except KeyError as e:
            return JSONResponse({"error": str(e)}, status_code=404)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=409)
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return RedirectResponse("/", status_code=303)
        return JSONResponse({"id": rid, "status": "approved" if approve else "denied"})

    async def audit(request: Request) -> Response:
        from ..audit import open_store
        from ..audit.store import Query
        from ..audit.view import query_entries

        p = request.query_params
        try:
            limit = min(int(p.get("limit", "100")), 1000)
            q = Query(session=p.get("session"), agent=p.get("agent"), tool=p.get("tool"),
                      verdict=p.get("verdict"), rule=p.get("rule"), kind=p.get("kind"),
                      event=p.get("event"), limit=limit, descending=True)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        flush = getattr(wall.audit, "flush", None)
        if flush is not None:
            flush()
        store = open_store(wall.policy.audit, wall.base_dir)
        try:
            rows = [{"seq": seq, **entry} for seq, entry in query_entries(store, q)]
        finally:
            store.close()
        return JSONResponse(rows)

    async def metrics_route(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def login(request: Request) -> Response:
        """A person pastes a token once; it becomes an HttpOnly, SameSite=Strict cookie
        (Strict also keeps other sites from submitting the approve buttons)."""
        if request.method == "GET":
            return HTMLResponse("<!doctype html><meta charset=utf-8><title>Shieldwall</title>"
                                "<form method=post><input name=token type=password size=50 "
                                "placeholder='bearer token'> <button>sign in</button></form>")
        form = await request.form()
        token = str(form.get("token", ""))
        digest = token_digest(token) if token else ""
        if not any(digest and hmac.compare_digest(k, digest) for k in tokens):
            return HTMLResponse("unknown token", status_code=401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie("sw_token", token, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
        return resp

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def dashboard(request: Request) -> Response:
        pending = wall.approvals.pending()
        rows = "".join(
            f"<tr><td>{html.escape(r.id)}</td><td>{html.escape(r.agent)} ({html.escape(r.role)})</td>"
            f"<td>{html.escape(r.tool)}</td><td><code>{html.escape(json.dumps(r.preview, default=str))}</code></td>"
            f"<td>{html.escape(r.reason)}</td><td>"
            f"<form method=post action='/v1/approvals/{html.escape(r.id)}'>"
            "<button name=decision value=approve>approve</button> "
            "<button name=decision value=deny>deny</button></form></td></tr>"
            for r in pending)
        counts = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(metrics.verdicts.items())) or "none yet"
        page = (
            "<!doctype html><meta charset=utf-8><title>Shieldwall</title>"
            "<style>body{font:14px system-ui;margin:2em}td,th{border-bottom:1px solid #ddd;padding:4px 8px;"
            "text-align:left}code{font-size:12px}</style>"
            f"<h1>Shieldwall</h1><p>decisions since start: {counts}</p>"
            f"<h2>Pending approvals ({len(pending)})</h2>"
            "<table><tr><th>id</th><th>agent</th><th>tool</th><th>arguments</th><th>reason</th><th></th></tr>"
            f"{rows}</table><p><a href='/metrics'>metrics</a></p>")
        return HTMLResponse(page)

    routes = [
        Route("/healthz", healthz),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/", auth("approve", dashboard)),
        Route("/v1/decide", auth("decide", decide), methods=["POST"]),
        Route("/v1/approvals", auth("approve", approvals)),
        Route("/v1/approvals/{rid}", auth("approve", resolve), methods=["POST"]),
        Route("/v1/audit", auth("audit", audit)),
        Route("/metrics", auth("audit", metrics_route)),
    ]
    return Starlette(routes=routes)
