"""``shieldwall ...``: the command-line face."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import PolicyError, ShieldwallError

app = typer.Typer(help="Shieldwall: the one gate every AI-agent action passes.",
                  no_args_is_help=True, add_completion=False)
policy_app = typer.Typer(help="Check, explain and export the policy file.", no_args_is_help=True)
bench_app = typer.Typer(help="Reproducible benchmarks (tables written to benchmarks/).",
                        no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(bench_app, name="bench")
approvals_app = typer.Typer(help="List and resolve pending approval requests.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

# Faces that live in their rooms: (module, command name)
_ROOM_CLIS = (("audit", "audit"), ("sandbox", "sandbox"), ("mcp", "mcp"), ("egress", "proxy"),
              ("secrets", "secrets"), ("identity", "identity"))


def _mount_rooms() -> None:
    for room, name in _ROOM_CLIS:
        modname = f"shieldwall.{room}.cli"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name in (modname, f"shieldwall.{room}"):
                continue
            raise
        sub = getattr(mod, "app", None)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)
    from .bench import BENCHES

    for name in BENCHES:
        modname = f"shieldwall.bench.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        fn = getattr(mod, "command", None)
        if fn is not None:
            bench_app.command(name)(fn)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


DEFAULT_POLICY = Path("shieldwall.yaml")
PolicyOpt = Annotated[Path, typer.Option("--policy", "-p", help="policy file")]


@app.command()
def demo(
    folder: Annotated[Path, typer.Option(help="where the demo writes its files")] = Path(".shieldwall/demo"),
) -> None:
    """Run a scripted hijacked agent against the example policy and show every verdict."""
    from .demo import main

    raise typer.Exit(main(folder.resolve()))


@app.command()
def check(
    action: Annotated[Path, typer.Option("--action", "-a", help="action JSON file, or - for stdin")],
    policy: PolicyOpt = DEFAULT_POLICY,
) -> None:
    """Decide one action without running it. Exit 0 = allowed, 1 = refused or needs approval.

    The action file: {"agent": "a", "role": "reader", "task": null,
    "kind": "tool_call", "tool": "read_document", "args": {"path": "x.md"}}
    (kinds: tool_call, egress {method, url}, model_input {text}, model_output {text},
    code_run {code}).
    """
    from .actions import CodeRun, Egress, ModelInput, ModelOutput, ToolCall
    from .wall import Shieldwall

    try:
        raw = sys.stdin.read() if str(action) == "-" else action.read_text(encoding="utf-8")
        data = json.loads(raw)
    except (OSError, json.JSONDecodeError) as e:
        _fail(f"{action}: cannot read action JSON: {e}")
    if not isinstance(data, dict):
        _fail(f"{action}: the action must be a JSON object")
    try:
        wall = Shieldwall.from_policy(policy, audit=False)
        s = wall.session(agent=str(data.get("agent", "cli")), role=str(data.get("role", "")),
                         task=data.get("task"))
        kind = data.get("kind", "tool_call")
        act: Any
        if kind == "tool_call":
            act = ToolCall(str(data["tool"]), dict(data.get("args") or {}))
        elif kind == "egress":
            act = Egress(str(data.get("method", "GET")), str(data["url"]),
                         dict(data.get("headers") or {}), str(data.get("body", "")).encode())
        elif kind == "model_input":
            act = ModelInput(str(data["text"]), source=str(data.get("source", "user")))
        elif kind == "model_output":
            act = ModelOutput(str(data["text"]))
        elif kind == "code_run":
            act = CodeRun(code=str(data.get("code", "")), tool=str(data.get("tool", "run_code")))
        else:
            _fail(f"{action}: unknown action kind {kind!r} (tool_call, egress, model_input, "
                  "model_output, code_run)")
    except KeyError as e:
        _fail(f"{action}: missing field {e}")
    except (PolicyError, ShieldwallError) as e:
        _fail(str(e))
    d = s.decide(act)
    out = {"verdict": d.verdict.label, "findings": [f.to_dict() for f in d.findings]}
    typer.echo(json.dumps(out, indent=2))
    raise typer.Exit(0 if d.allowed else 1)


@policy_app.command("check")
def policy_check(policy: PolicyOpt = DEFAULT_POLICY) -> None:
    """Validate the policy file; errors name the file, line and key."""
    from .policy.compile import CompiledPolicy
    from .policy.load import load_policy

    try:
        p = load_policy(policy)
        CompiledPolicy(p, policy.resolve().parent)
    except PolicyError as e:
        _fail(str(e), 1)
    typer.echo(f"{policy}: ok ({len(p.roles)} roles, {len(p.tasks)} tasks, {len(p.tools)} tools)")


@policy_app.command("schema")
def policy_schema(
    out: Annotated[Path | None, typer.Option(help="write to a file instead of stdout")] = None,
) -> None:
    """Print the policy's JSON Schema (for editor completion)."""
    from .policy.load import policy_json_schema

    text = policy_json_schema()
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    else:
        typer.echo(text)


@policy_app.command("example")
def policy_example() -> None:
    """Print the example policy (the seed's Reader / Operator / Admin table)."""
    from importlib import resources

    typer.echo(resources.files("shieldwall.examples").joinpath("shieldwall.yaml").read_text("utf-8"))


@policy_app.command("explain")
def policy_explain(
    role: Annotated[str, typer.Argument(help="role name")],
    task: Annotated[str | None, typer.Argument(help="task name (optional)")] = None,
    policy: PolicyOpt = DEFAULT_POLICY,
) -> None:
    """Print the effective permissions of ROLE (∩ TASK)."""
    from rich.console import Console
    from rich.table import Table

    from .policy.compile import CompiledPolicy
    from .policy.load import load_policy

    try:
        p = load_policy(policy)
        eff = CompiledPolicy(p, policy.resolve().parent).effective(role, task)
    except PolicyError as e:
        _fail(str(e), 1)
    c = Console()
    c.print(f"[bold]role[/] {role}" + (f" ∩ [bold]task[/] {task}" if task else ""))
    c.print(f"HTTP methods: {', '.join(sorted(eff.http_methods)) or 'none'}   "
            f"database scope: {eff.db_scope}   code: {'yes' if eff.code else 'no'}")
    c.print(f"session budget: {eff.session_calls if eff.session_calls is not None else 'unlimited'} calls, "
            f"rate: {f'{eff.per_minute:g}/min' if eff.per_minute else 'unlimited'}, "
            f"lifetime: {f'{eff.lifetime:g}s' if eff.lifetime else 'session'}")
    t = Table(title="tools")
    for col in ("tool", "arguments constrained", "sink", "approval", "result label"):
        t.add_column(col)
    for name in sorted(eff.tools):
        tp = p.tools.get(name)
        if tp is None:
            t.add_row(name, "(not declared: no constraints)", "-", "-", "-")
            continue
        cons = ", ".join(
            f"{a}: " + "/".join(k for k, v in c_.model_dump(exclude_defaults=True).items() if v is not None)
            for a, c_ in tp.args.items()
        ) or "-"
        t.add_row(name, cons, "yes" if tp.sink else "no",
                  "yes" if tp.approval_required else "no",
                  f"{tp.result.sensitivity}, {'trusted' if tp.result.trusted else 'untrusted'}")
    c.print(t)
    denied = sorted(eff.role_tools - eff.tools)
    if denied:
        c.print(f"removed by the task: {', '.join(denied)}")


@policy_app.command("lint")
def policy_lint(policy: PolicyOpt = DEFAULT_POLICY) -> None:
    """Static analysis: dangerous combinations in the policy. Exit 1 on warnings."""
    from .policy.lint import lint
    from .policy.load import load_policy

    try:
        p = load_policy(policy)
    except PolicyError as e:
        _fail(str(e), 1)
    warnings = lint(p)
    for w in warnings:
        typer.secho(f"{policy}: {w.rule}: {w.message}", fg=typer.colors.YELLOW)
    if warnings:
        raise typer.Exit(1)
    typer.echo(f"{policy}: no warnings")


@policy_app.command("replay")
def policy_replay(
    candidate: Annotated[Path, typer.Option("--policy", "-p", help="the candidate policy")],
    live: Annotated[Path, typer.Option("--from", help="the live policy whose audit log to replay")],
    fail_on_change: Annotated[bool, typer.Option(help="exit 1 if any verdict changes")] = False,
) -> None:
    """Replay the live policy's audit log against a candidate policy; show changed verdicts."""
    from rich.console import Console
    from rich.table import Table

    from .policy.load import load_policy
    from .replay import audit_entries, replay_entries

    try:
        cand = load_policy(candidate)
        live_policy = load_policy(live)
        report = replay_entries(cand, audit_entries(live_policy, live.resolve().parent),
                                base_dir=candidate.resolve().parent)
    except (PolicyError, ShieldwallError) as e:
        _fail(str(e), 2)
    c = Console()
    c.print(f"replayed {report.replayed} decisions: {len(report.changes)} would change "
            f"({len(report.newly_denied())} newly refused, {len(report.newly_allowed())} newly allowed)")
    if report.changes:
        t = Table()
        for col in ("seq", "agent (role)", "target", "before", "after", "rules"):
            t.add_column(col)
        for ch in report.changes[:200]:
            t.add_row(str(ch.seq), f"{ch.agent} ({ch.role})", ch.target, ch.before, ch.after,
                      ", ".join(ch.rules))
        c.print(t)
    for err in report.errors:
        c.print(f"[yellow]{err}[/]")
    c.print("note: arguments were redacted in the log and tool results are not replayed.")
    raise typer.Exit(1 if fail_on_change and report.changes else 0)


@app.command()
def serve(
    policy: PolicyOpt = DEFAULT_POLICY,
    listen: Annotated[str | None, typer.Option(help="host:port (default: server.listen)")] = None,
) -> None:
    """The HTTP API (decide, approvals, audit, metrics) and the approvals dashboard."""
    import uvicorn

    from .server.app import build_app
    from .wall import Shieldwall

    try:
        wall = Shieldwall.from_policy(policy)
    except (PolicyError, ShieldwallError) as e:
        _fail(str(e), 2)
    cfg = wall.policy.server
    if not cfg.tokens:
        _fail(f"{policy}: server.tokens is empty, so nobody could call the API; "
              "create one with `shieldwall serve-token --name NAME --scope decide`", 2)
    host, _, port = (listen or cfg.listen).rpartition(":")
    app_ = build_app(wall, {t.sha256: (t.name, frozenset(t.scopes)) for t in cfg.tokens})
    try:
        uvicorn.run(app_, host=host or "127.0.0.1", port=int(port), log_level="warning")
    finally:
        wall.close()


@app.command()
def kill(
    agent: Annotated[str | None, typer.Option(help="revoke every session of this agent")] = None,
    session: Annotated[str | None, typer.Option(help="revoke this one session")] = None,
    reason: Annotated[str, typer.Option(help="why (written to the audit log)")] = "",
    lift: Annotated[bool, typer.Option("--lift", help="lift an earlier kill (after review)")] = False,
    policy: PolicyOpt = DEFAULT_POLICY,
) -> None:
    """The kill switch from outside: every further action of that agent or session is
    refused (rule identity.revoked) by every gateway and proxy worker that shares the
    policy's store (store.backend: redis). The revocation lasts store.ttl; --lift ends it
    sooner. Both are written to the audit log."""
    from .stores import StoreError
    from .wall import Shieldwall

    if not agent and not session:
        _fail("name what to revoke: --agent NAME or --session ID", 2)
    try:
        wall = Shieldwall.from_policy(policy)
    except (PolicyError, ShieldwallError) as e:
        _fail(str(e), 2)
    try:
        if wall.policy.store.backend != "redis":
            _fail(f"{policy}: store.backend is memory, which lives inside each running "
                  "process, so a kill from here would reach nobody; set store.backend: redis "
                  "(and store.url) for the gateway and proxy, then run this again", 2)
        targets = " and ".join(t for t in (f"agent {agent}" if agent else "",
                                           f"session {session}" if session else "") if t)
        try:
            wall.store.ping()  # type: ignore[attr-defined]
            if lift:
                if not wall.lift_kill(session=session, agent=agent):
                    _fail(f"{targets}: no kill to lift (never revoked, or store.ttl passed)", 1)
            else:
                wall.kill(session=session, agent=agent)
        except StoreError as e:
            _fail(f"nothing was {'lifted' if lift else 'revoked'}: {e}", 1)
        note = f": {reason}" if reason else ""
        what = "kill lifted on " + targets if lift else targets + " revoked"
        wall.gate.record_event(wall.bare_state(agent or "(operator)", session or "-"),
                               "operator.lift_kill" if lift else "operator.kill",
                               what + " by an operator" + note, layer="operator")
        typer.echo(what if lift else f"revoked {targets} for {wall.policy.store.ttl:g}s")
    finally:
        wall.close()


@app.command("serve-token")
def serve_token(
    name: Annotated[str, typer.Option(help="who will hold the token")],
    scope: Annotated[list[str], typer.Option(help="decide, approve or audit (repeat)")],
) -> None:
    """Mint a bearer token for `shieldwall serve`: prints the token once and the policy line."""
    import hashlib
    import secrets as _secrets

    bad = [s_ for s_ in scope if s_ not in ("decide", "approve", "audit")]
    if bad:
        _fail(f"unknown scope(s) {bad}: use decide, approve or audit", 2)
    token = "swt_" + _secrets.token_urlsafe(32)
    typer.echo(f"token (shown once): {token}")
    typer.echo("add to the policy under server.tokens:")
    typer.echo(f'  - {{name: {name}, sha256: {hashlib.sha256(token.encode()).hexdigest()}, '
               f'scopes: [{", ".join(scope)}]}}')


def _queue(policy: Path) -> Any:
    from .approvals import ApprovalQueue
    from .policy.load import load_policy
    from .wall import open_approval_backend

    try:
        p = load_policy(policy)
    except PolicyError as e:
        _fail(str(e), 2)
    if p.approvals.store == "memory":
        _fail(f"{policy}: approvals.store is memory, so only the running process sees its requests; "
              "set approvals.store to sqlite or redis to resolve them from here", 2)
    return ApprovalQueue(backend=open_approval_backend(p, policy.resolve().parent))


@approvals_app.command("list")
def approvals_list(policy: PolicyOpt = DEFAULT_POLICY) -> None:
    """Pending requests, oldest first, as JSON lines."""
    for req in _queue(policy).pending():
        typer.echo(json.dumps(req.summary(), default=str))


@approvals_app.command("approve")
def approvals_approve(request_id: str, policy: PolicyOpt = DEFAULT_POLICY,
                      by: Annotated[str, typer.Option(help="who approves")] = "cli",
                      note: str = "") -> None:
    """Approve one request (it covers exactly the arguments it shows, once)."""
    try:
        _queue(policy).resolve(request_id, True, approver=by, note=note)
    except (KeyError, ValueError) as e:
        _fail(str(e), 1)
    typer.echo(f"{request_id}: approved")


@approvals_app.command("deny")
def approvals_deny(request_id: str, policy: PolicyOpt = DEFAULT_POLICY,
                   by: Annotated[str, typer.Option(help="who denies")] = "cli", note: str = "") -> None:
    """Refuse one request."""
    try:
        _queue(policy).resolve(request_id, False, approver=by, note=note)
    except (KeyError, ValueError) as e:
        _fail(str(e), 1)
    typer.echo(f"{request_id}: denied")


def main() -> None:
    _mount_rooms()
    app()


if __name__ == "__main__":
    main()
