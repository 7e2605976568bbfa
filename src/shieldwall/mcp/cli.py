"""``shieldwall mcp ...``: wrap (stdio proxy), serve (HTTP), pin, scan, token."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Put the gate in front of any MCP server; pin and scan tool manifests.",
                  no_args_is_help=True)

PolicyOpt = Annotated[Path, typer.Option("--policy", "-p", help="policy file")]
LockOpt = Annotated[Path | None, typer.Option("--lock", help="lock file (default: the "
                                              "policy's mcp.lock, next to the policy)")]
CommandArg = Annotated[list[str] | None, typer.Argument(
    help="the real server's command, after --", show_default=False)]
UrlOpt = Annotated[str | None, typer.Option("--url", help="upstream Streamable HTTP MCP URL")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _policy(path: Path) -> Any:
    from ..errors import PolicyError
    from ..policy.load import load_policy

    try:
        return load_policy(path)
    except PolicyError as e:
        _fail(str(e))


def _first_error(e: BaseException) -> BaseException:
    """The first leaf of an exception group (task groups wrap what their tasks raise)."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def _run(fn: Any) -> None:
    """``anyio.run(fn)``; a Shieldwall error ends the command with its message."""
    import anyio

    from ..errors import ShieldwallError

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM unwinds like Ctrl-C, so the upstream is stopped and the audit log flushed
    # (uvicorn re-raises the signal it caught once it has shut down)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        anyio.run(fn)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as g:
        leaf = _first_error(g)
        if isinstance(leaf, ShieldwallError):
            _fail(str(leaf), 1)
        if isinstance(leaf, KeyboardInterrupt):
            return
        raise


def lock_path(policy_path: Path, policy: Any, override: Path | None) -> Path:
    if override is not None:
        return override
    p = Path(policy.mcp.lock)
    return p if p.is_absolute() else policy_path.resolve().parent / p


def _spec(command: list[str] | None, url: str | None, policy: Any | None = None) -> Any:
    from ..errors import ShieldwallError
    from .upstream import UpstreamSpec

    sandbox = bool(policy is not None and policy.mcp.sandbox)
    options: dict[str, Any] = {}
    if sandbox and policy is not None:
        m = policy.mcp
        options = {"ro_paths": list(m.sandbox_ro_paths), "rw_paths": list(m.sandbox_rw_paths),
                   "network": m.sandbox_network, "proxy_socket": m.sandbox_proxy_socket,
                   "limits": dict(m.sandbox_limits)}
    try:
        return UpstreamSpec(command=list(command or ()), url=url, sandbox=sandbox,
                            sandbox_options=options)
    except ShieldwallError as e:
        _fail(f"{e}: give the server command after -- or --url")


def build(policy_path: Path, policy: Any, lock: Path | None, mode: str | None = None) -> Any:
    """The Shieldwall with the pin layer, and the pin state it reads."""
    from ..wall import Shieldwall
    from .pin import LockFile, PinLayer, PinState

    try:
        lf = LockFile.load(lock_path(policy_path, policy, lock))
    except (ValueError, json.JSONDecodeError) as e:
        _fail(f"cannot read lock file: {e}")
    pins = PinState(lf, mode or policy.mcp.pin)
    wall = Shieldwall(policy, base_dir=policy_path.resolve().parent, extra_layers=[PinLayer(pins)])
    if policy.approvals.store != "memory":
        from ..approvals import QueueApprover

        # a person answers from another face (`shieldwall approvals approve ID`) while the
        # MCP call waits; with the in-memory store nobody could, so no answer = deny
        wall.approver = QueueApprover(wall.approvals)
    return wall, pins


@app.command(context_settings={"allow_interspersed_args": False})
def wrap(
    command: CommandArg = None,
    policy: PolicyOpt = Path("shieldwall.yaml"),
    agent: Annotated[str, typer.Option(help="agent name the calls are made as")] = "mcp-client",
    role: Annotated[str, typer.Option(help="role from the policy")] = "",
    task: Annotated[str | None, typer.Option(help="task from the policy")] = None,
    lock: LockOpt = None,
    url: UrlOpt = None,
) -> None:
    """Stdio proxy: the MCP client launches this in place of the server.

    Example: shieldwall mcp wrap --policy shieldwall.yaml --agent bot --role reader --
    npx -y @modelcontextprotocol/server-everything
    """

    from ..errors import ShieldwallError
    from .proxy import GatedProxy, Identity
    from .relay import StdioRelay
    from .relay import serve as serve_relay

    if not role:
        _fail("--role is required")
    pol = _policy(policy)
    spec = _spec(command, url, pol)
    wall, pins = build(policy, pol, lock)
    ident = Identity(agent, role, task)
    options = {"max_result_bytes": pol.mcp.max_result_bytes, "restarts": pol.mcp.restarts,
               "call_timeout": pol.mcp.call_timeout}
    # a command upstream: the lean relay; an HTTP upstream: the SDK's client behind it
    gw: StdioRelay | GatedProxy
    try:
        if spec.command:
            gw = StdioRelay(wall, spec, pins, ident, **options)
        else:
            gw = GatedProxy(wall, spec, pins, identity=ident, **options)
    except ShieldwallError as e:
        _fail(str(e))
    try:
        if isinstance(gw, StdioRelay):
            serve_relay(gw)
        else:
            _run(gw.serve_stdio)
    except ShieldwallError as e:
        _fail(str(e), 1)
    finally:
        gw.close()
        wall.close()


@app.command()
def serve(
    command: CommandArg = None,
    policy: PolicyOpt = Path("shieldwall.yaml"),
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8808,
    path: Annotated[str, typer.Option(help="endpoint path")] = "/mcp",
    url: UrlOpt = None,
    lock: LockOpt = None,
    tls_cert: Annotated[Path | None, typer.Option(help="server certificate (PEM)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="server private key (PEM)")] = None,
    client_ca: Annotated[Path | None, typer.Option(
        help="CA bundle for client certificates: enables mutual TLS (cert required)")] = None,
) -> None:
    """Expose the gated server over Streamable HTTP with a bearer token per agent."""

    from ..errors import ShieldwallError
    from .http import HttpSettings, load_tokens, serve_http

    pol = _policy(policy)
    spec = _spec(command, url, pol)
    try:
        tokens = load_tokens(pol.mcp, policy.resolve().parent)
    except (OSError, ValueError) as e:
        _fail(f"cannot read tokens: {e}")
    if not tokens:
        _fail("no bearer tokens configured: add mcp.tokens to the policy "
              "(`shieldwall mcp token --agent A --role R` makes one)")
    if (tls_cert is None) != (tls_key is None):
        _fail("--tls-cert and --tls-key go together")
    if client_ca is not None and tls_cert is None:
        _fail("mutual TLS (--client-ca) needs --tls-cert and --tls-key")
    wall, pins = build(policy, pol, lock)
    settings = HttpSettings(host=host, port=port, path=path,
                            certfile=str(tls_cert) if tls_cert else None,
                            keyfile=str(tls_key) if tls_key else None,
                            client_ca=str(client_ca) if client_ca else None)
    try:
        _run(lambda: serve_http(wall, spec, pins, tokens, pol.mcp, settings))
    except ShieldwallError as e:
        _fail(str(e), 1)
    finally:
        wall.close()


@app.command()
def pin(
    command: CommandArg = None,
    policy: PolicyOpt = Path("shieldwall.yaml"),
    lock: LockOpt = None,
    url: UrlOpt = None,
) -> None:
    """List the server's tools and record them in the lock file (review the diff first)."""
    import anyio

    from .pin import LockFile, ToolManifest, compare
    from .upstream import list_all_tools, open_session

    pol = _policy(policy)
    spec = _spec(command, url, pol)
    path = lock_path(policy, pol, lock)

    async def listing() -> tuple[str, str, list[ToolManifest]]:
        async with open_session(spec, client_name="shieldwall-pin") as (cs, init):
            tools = await list_all_tools(cs)
        info = init.server_info
        return str(info.name), str(info.version or ""), [ToolManifest.from_mcp(t) for t in tools]

    try:
        name, version, tools = anyio.run(listing)
    except Exception as e:
        from .proxy import _describe

        _fail(f"could not list the server's tools: {_describe(e)}", 1)
    lf = LockFile.load(path)
    changes = compare(name, lf.servers.get(name), tools)
    for f in changes.values():
        typer.echo(f"[{f.rule}] {f.message}", err=True)
    gone = set(lf.servers[name].tools) - {t.name for t in tools} if name in lf.servers else set()
    for g in sorted(gone):
        typer.echo(f"tool {g!r} is no longer offered; removed from the lock", err=True)
    lf.pin(name, version, tools)
    lf.save()
    typer.echo(f"pinned {len(tools)} tools of {name} {version} in {path}")


@app.command()
def scan(
    config: Annotated[Path, typer.Argument(help="MCP client config JSON ({\"mcpServers\": ...})")],
    as_json: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
    max_description: Annotated[int, typer.Option(help="description length limit")] = 2048,
    timeout: Annotated[float, typer.Option(help="seconds per server")] = 30.0,
    sandbox: Annotated[bool, typer.Option(help="start each (command) server inside the bwrap sandbox: "
                                          "no network, no host files beyond its own")] = False,
) -> None:
    """Start each configured server, list its tools, report tool-poisoning signs.
    Exit 0 clean, 1 findings, 2 a server could not be scanned."""
    import anyio

    from .scan import scan_config

    try:
        servers, findings = anyio.run(
            lambda: scan_config(config, max_description=max_description, timeout=timeout,
                                sandbox=sandbox))
    except (OSError, ValueError) as e:
        _fail(f"cannot read {config}: {e}")
    errors = [s for s in servers if s.error]
    if as_json:
        typer.echo(json.dumps({
            "servers": [{"name": s.name, "tools": [t.name for t in s.tools], "error": s.error}
                        for s in servers],
            "findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=sys.stdout)
        for s in servers:
            state = f"error: {s.error}" if s.error else f"{len(s.tools)} tools"
            console.print(f"[bold]{s.name}[/bold]: {state}")
        if findings:
            table = Table(title="tool-poisoning findings")
            for col in ("server", "tool", "rule", "severity", "evidence"):
                table.add_column(col)
            for f in findings:
                table.add_row(f.server, f.tool, f.rule, f.severity.name.lower(), f.evidence)
            console.print(table)
        else:
            console.print("no tool-poisoning signs found")
    if findings:
        raise typer.Exit(1)
    if errors:
        raise typer.Exit(2)


@app.command()
def token(
    agent: Annotated[str, typer.Option(help="agent the token identifies")],
    role: Annotated[str, typer.Option(help="role the agent takes")],
    task: Annotated[str | None, typer.Option(help="task (optional)")] = None,
) -> None:
    """Make a bearer token for `shieldwall mcp serve`; prints the token once and the
    policy entry (its hash) to paste under mcp.tokens."""
    import hashlib
    import secrets

    tok = "swt_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"sha256": hashlib.sha256(tok.encode()).hexdigest(),
                             "agent": agent, "role": role}
    if task:
        entry["task"] = task
    typer.echo(f"token (give it to the agent; it is not stored): {tok}")
    typer.echo("policy entry (mcp.tokens):")
    typer.echo("  - " + json.dumps(entry))
