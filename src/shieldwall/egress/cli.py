"""``shieldwall proxy``: run the egress forward proxy, or mint a proxy credential."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="The egress forward proxy: every request an agent's tools or sandbox make goes "
    "through the gate. Run without a subcommand to serve.",
    invoke_without_command=True,
    add_completion=False,
)


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    policy: Annotated[Path, typer.Option("--policy", "-p", help="policy file")] = Path("shieldwall.yaml"),
    listen: Annotated[str | None, typer.Option(help="host:port (default: egress.proxy.listen)")] = None,
    unix: Annotated[str | None, typer.Option(help="also listen on this Unix socket")] = None,
    no_tcp: Annotated[bool, typer.Option("--no-tcp", help="listen on the Unix socket only")] = False,
    unix_agent: Annotated[str | None, typer.Option(
        help="the Unix socket is this agent's door (bound into its sandbox): no token needed")] = None,
    unix_role: Annotated[str | None, typer.Option(help="role for --unix-agent")] = None,
    unix_task: Annotated[str | None, typer.Option(help="task for --unix-agent")] = None,
) -> None:
    """Serve the proxy. Agents authenticate with Proxy-Authorization (Basic agent:token or
    Bearer token) against egress.proxy.credentials; refusals are 403 with
    X-Shieldwall-Reason."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from ..errors import PolicyError
    from ..wall import Shieldwall
    from .layer import egress_policy
    from .proxy import (
        EgressProxy,
        ProxyIdentity,
        audit_early_refusals,
        new_event_loop,
        session_decider,
    )
    from .proxy import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        wall = Shieldwall.from_policy(policy)
    except PolicyError as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    settings = wall.policy.egress.proxy
    if not settings.credentials:
        typer.secho("egress.proxy.credentials is empty: every request will get 407 "
                    "(mint one with `shieldwall proxy token`)", fg=typer.colors.YELLOW, err=True)
    pol = egress_policy(wall)
    proxy = EgressProxy(pol, session_decider(wall), settings=settings,
                        event=lambda e: logging.getLogger("shieldwall.egress.proxy").info("%s", e),
                        refused=audit_early_refusals(wall))
    tcp = None if no_tcp else (listen or settings.listen)
    sock = unix or settings.unix_socket
    ident = None
    if unix_agent is not None:
        if unix_role is None or sock is None:
            typer.secho("--unix-agent needs --unix-role and a Unix socket (--unix)",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        ident = ProxyIdentity(unix_agent, unix_role, unix_task)

    def ready(bound: list[str]) -> None:
        typer.echo("shieldwall proxy listening on " + ", ".join(bound))

    loop, _ = new_event_loop()
    import gc

    # Start-up objects (policy, detectors, models) never die: keep them out of the
    # collector's full passes, which would otherwise pause every connection.
    gc.collect()
    gc.freeze()
    try:
        loop.run_until_complete(run(proxy, tcp, sock, ready, unix_identity=ident))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
        wall.close()


@app.command()
def token(
    agent: Annotated[str, typer.Option(help="agent name the credential stands for")],
    role: Annotated[str, typer.Option(help="role its requests are decided under")],
    task: Annotated[str | None, typer.Option(help="task, if the agent runs one")] = None,
) -> None:
    """Mint a proxy credential: prints the token (give it to the agent) and the line for
    egress.proxy.credentials (only the hash goes into the policy)."""
    from .proxy import mint_token

    tok, digest = mint_token()
    typer.echo(f"token: {tok}")
    typer.echo("policy (egress.proxy.credentials):")
    extra = f", task: {task}" if task else ""
    typer.echo(f"  - {{agent: {agent}, role: {role}{extra}, token_sha256: \"{digest}\"}}")
