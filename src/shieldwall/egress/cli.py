"""``shieldwall proxy``: run the egress forward proxy, or mint a proxy credential."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from ..policy.model import Policy

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
    workers: Annotated[int | None, typer.Option(
        min=1, max=256, help="worker processes, one event loop each (default: "
        "egress.proxy.workers); more than one needs store.backend: redis")] = None,
) -> None:
    """Serve the proxy. Agents authenticate with Proxy-Authorization (Basic agent:token or
    Bearer token) against egress.proxy.credentials; refusals are 403 with
    X-Shieldwall-Reason."""
    if ctx.invoked_subcommand is not None:
        return
    import logging
    import secrets

    from ..errors import PolicyError
    from ..policy.load import load_policy
    from .proxy import ProxyIdentity

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(message)s")
    try:
        pol = load_policy(policy)
    except PolicyError as e:
        _fail(str(e))
    settings = pol.egress.proxy
    n = workers if workers is not None else settings.workers
    if not settings.credentials:
        typer.secho("egress.proxy.credentials is empty: every request will get 407 "
                    "(mint one with `shieldwall proxy token`)", fg=typer.colors.YELLOW, err=True)
    tcp = None if no_tcp else (listen or settings.listen)
    sock = unix or settings.unix_socket
    if tcp is None and sock is None:
        _fail("nothing to listen on: --no-tcp needs --unix (or egress.proxy.unix_socket)")
    ident = None
    if unix_agent is not None:
        if unix_role is None or sock is None:
            _fail("--unix-agent needs --unix-role and a Unix socket (--unix)")
        ident = ProxyIdentity(unix_agent, unix_role, unix_task)
    if n > 1:
        _check_shared(pol, policy, n)
    run_id = secrets.token_hex(4)

    def ready(bound: list[str]) -> None:
        more = f" ({n} workers)" if n > 1 else ""
        typer.echo("shieldwall proxy listening on " + ", ".join(bound) + more)

    if n == 1:
        raise typer.Exit(_serve_one(policy, tcp, sock, ident, run_id, ready))
    from .proxy import reserve_port, unix_listener
    from .workers import Supervisor

    held: socket.socket | None = None
    unix_sock: socket.socket | None = None
    try:
        if tcp is not None:
            held, tcp = reserve_port(tcp)
        if sock is not None:
            unix_sock = unix_listener(sock)
    except (OSError, ValueError) as e:
        _fail(str(e))
    bound = [b for b in (tcp, sock) if b]

    def child(index: int, ready_fd: int) -> int:
        def up(_: list[str]) -> None:
            try:
                os.write(ready_fd, b"1")
                os.close(ready_fd)
            except OSError:  # the supervisor stopped waiting: serving matters, not the byte
                pass

        return _serve_one(policy, tcp, None, ident, run_id, up, reuse_port=True,
                          unix_sock=unix_sock)

    # Workers stop by draining (egress.proxy.drain_timeout): wait that long, and a little
    # more, before a worker that has not stopped is killed.
    sup = Supervisor(n, child, ready=lambda: ready(bound), grace=settings.drain_timeout + 5,
                     check=lambda: _reload_problem(policy, n))
    code = sup.run()
    for s_ in (held, unix_sock):
        if s_ is not None:
            s_.close()
    if code:
        _fail("the proxy stopped: its workers failed (see the log above)", code)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _check_shared(pol: Policy, path: Path, n: int) -> None:
    """Workers enforce one policy only if what they count is shared: refuse to start
    otherwise (each worker would grant the whole budget, and a kill would reach one)."""
    problem = _shared_problem(pol, path, n)
    if problem:
        _fail(problem)


def _shared_problem(pol: Policy, path: Path, n: int) -> str | None:
    from ..stores import StoreError, open_counter_store

    if pol.store.backend != "redis":
        return (f"{path}: --workers {n} needs store.backend: redis. Call budgets, rate limits "
                "and the kill switch are counted in the store, and with the memory store each "
                f"worker would keep its own ({n}x every budget, a kill reaching one worker). "
                "Set store.backend: redis and store.url, or run one worker.")
    try:
        open_counter_store(pol.store).ping()  # type: ignore[attr-defined]
    except StoreError as e:
        return f"{path}: --workers {n}: the shared store is not reachable: {e}"
    return None


def _reload_problem(path: Path, n: int) -> str | None:
    """Why the policy file as it now stands cannot replace the running one (SIGHUP)."""
    from ..errors import PolicyError
    from ..policy.load import load_policy

    try:
        pol = load_policy(path)
    except PolicyError as e:
        return str(e)
    return _shared_problem(pol, path, n)


def _serve_one(policy: Path, tcp: str | None, sock: str | None, ident: Any, run_id: str,
               ready: Any, *, reuse_port: bool = False,
               unix_sock: socket.socket | None = None) -> int:
    """One proxy process (or one worker): its own wall, proxy and event loop, until
    SIGTERM or SIGINT. Returns the exit status."""
    import asyncio
    import gc
    import logging
    import signal

    from ..errors import PolicyError
    from ..policy.load import load_policy
    from ..wall import Shieldwall
    from .layer import egress_policy
    from .proxy import EgressProxy, audit_early_refusals, new_event_loop, session_decider
    from .proxy import serve as run

    try:
        pol = load_policy(policy)
    except PolicyError as e:
        typer.secho(str(e), fg=typer.colors.RED, err=True)
        return 2
    # The proxy reports no audit sequence numbers, so its appends never wait for the
    # log's writer lock, which its workers (and other processes) share.
    pol = pol.model_copy(update={"audit": pol.audit.model_copy(update={"sequence": "commit"})})
    wall = Shieldwall(pol, base_dir=policy.resolve().parent)
    settings = wall.policy.egress.proxy
    proxy = EgressProxy(egress_policy(wall), session_decider(wall, run_id), settings=settings,
                        event=lambda e: logging.getLogger("shieldwall.egress.proxy").info("%s", e),
                        refused=audit_early_refusals(wall))
    loop, _ = new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Start-up objects (policy, detectors, models) never die: keep them out of the
    # collector's full passes, which would otherwise pause every connection.
    gc.collect()
    gc.freeze()
    try:
        loop.run_until_complete(run(proxy, tcp, sock, ready, unix_identity=ident,
                                    reuse_port=reuse_port, unix_sock=unix_sock, stop=stop))
    except OSError as e:
        typer.secho(f"cannot listen: {e}", fg=typer.colors.RED, err=True)
        return 2
    finally:
        loop.close()
        wall.close()
    return 0


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
