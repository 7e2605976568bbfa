"""``shieldwall secrets ...``: manage the encrypted secrets file and the token key.

Values are read from standard input, never from the command line (shell history,
``ps``), and never printed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..policy.sections.secrets import SecretsSection
    from .backends import FileBackend

app = typer.Typer(help="Encrypted secrets file and token-broker key.", no_args_is_help=True)
PolicyOpt = Annotated[Path, typer.Option("--policy", "-p", help="policy file")]


def _section(policy: Path) -> tuple[SecretsSection, Path]:
    from ..policy.load import load_policy

    p = load_policy(policy)
    return p.secrets, policy.resolve().parent


def _file_backend(policy: Path) -> tuple[FileBackend, Path]:
    from .backends import FileBackend

    section, base = _section(policy)
    f = section.file
    if f is None:
        typer.secho("the policy has no secrets.file section", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    return FileBackend(base / f.path, key_file=base / f.key_file, key_env=f.key_env), base / f.key_file


@app.command()
def init(policy: PolicyOpt = Path("shieldwall.yaml")) -> None:
    """Create the key file of the encrypted secrets file (mode 0600)."""
    from .backends import FileBackend

    _, key_file = _file_backend(policy)
    if Path(key_file).exists():
        typer.echo(f"{key_file} exists; left as is")
        return
    FileBackend.generate_key(key_file)
    typer.echo(f"wrote {key_file} (keep it out of version control)")


@app.command("set")
def set_(ref: Annotated[str, typer.Argument(help="name/key")],
         policy: PolicyOpt = Path("shieldwall.yaml")) -> None:
    """Store the value read from standard input under ``name/key``."""
    from .placeholders import parse_ref

    backend, _ = _file_backend(policy)
    value = sys.stdin.read().rstrip("\n")
    if not value:
        typer.secho("no value on standard input", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    backend.put(parse_ref(ref), value)
    typer.echo(f"stored {ref} (use it as {{{{secret:{ref}}}}})")


@app.command("list")
def list_(policy: PolicyOpt = Path("shieldwall.yaml")) -> None:
    """References stored in the encrypted file (no values)."""
    backend, _ = _file_backend(policy)
    for name, keys in sorted(backend._load().items()):
        for key in sorted(keys):
            typer.echo(f"{name}/{key}")


@app.command("public-key")
def public_key(policy: PolicyOpt = Path("shieldwall.yaml")) -> None:
    """The token broker's Ed25519 public key (PEM), for services that verify tokens."""
    from .tokens import load_or_create_key, public_pem

    section, base = _section(policy)
    key = load_or_create_key(base / section.tokens.key_file)
    typer.echo(public_pem(key.public_key()).decode().strip())
