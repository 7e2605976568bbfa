"""``shieldwall identity``: agent keys and signed assertions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Agent keys (Ed25519) and signed agent assertions.", no_args_is_help=True)


@app.command()
def keygen(out: Annotated[Path, typer.Option(help="private key file to create (mode 0600)")]) -> None:
    """Create an agent key; print the public key to pin in agents.NAME.public_key."""
    from . import AgentKey

    if out.exists():
        typer.secho(f"{out} exists; refusing to overwrite a key", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(AgentKey.load_or_create(out).public_b64())


@app.command("assert")
def make_assertion(
    key: Annotated[Path, typer.Option(help="the signer's private key file")],
    issuer: Annotated[str, typer.Option(help="the signing agent's name")],
    role: Annotated[str, typer.Option(help="the role to act in")],
    agent: Annotated[str | None, typer.Option(help="act for another agent (delegation)")] = None,
    task: Annotated[str | None, typer.Option(help="task scope")] = None,
    ttl: Annotated[float, typer.Option(help="seconds the assertion is valid")] = 60.0,
    audience: Annotated[str, typer.Option(help="who may accept it")] = "shieldwall",
) -> None:
    """Print a signed assertion (a JWT) that a gateway accepts once."""
    from . import AgentKey

    if not key.exists():
        typer.secho(f"{key}: no such key file (create one with `shieldwall identity keygen`)",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(AgentKey.load_or_create(key).assertion(issuer=issuer, agent=agent, role=role, task=task,
                                                      ttl=ttl, audience=audience))
