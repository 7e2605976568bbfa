"""``shieldwall sandbox doctor | run``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Sandboxed code execution: check backends, run code.",
                  no_args_is_help=True)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Which sandbox backends work here, how strong each is, and why not."""
    from rich.console import Console
    from rich.table import Table

    from .backends import doctor as run_doctor

    lines = run_doctor()
    if as_json:
        typer.echo(json.dumps([{"backend": d.name, "available": d.available,
                                "detail": d.detail, "strength": d.strength,
                                "guarantees": sorted(d.guarantees)} for d in lines], indent=2))
        return
    t = Table(title="shieldwall sandbox doctor")
    for col in ("backend", "available", "strength", "detail"):
        t.add_column(col)
    for d in lines:
        t.add_row(d.name, "[green]yes[/]" if d.available else "[red]no[/]", str(d.strength),
                  d.detail)
    Console().print(t)
    from .backends import select
    from .types import SandboxError

    try:
        typer.echo(f"auto selects: {select().name}")
    except SandboxError as e:
        typer.echo(f"auto selects: nothing ({e})")


@app.command()
def run(
    argv: Annotated[list[str] | None, typer.Argument(help="command to run (after --)")] = None,
    code: Annotated[str | None, typer.Option("--code", "-c", help="Python source")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Python file")] = None,
    backend: Annotated[str, typer.Option(help="auto, bwrap, gvisor, wasm, process")] = "auto",
    allow_weak: Annotated[bool, typer.Option(help="permit the process backend")] = False,
    wall: Annotated[float, typer.Option(help="wall-clock seconds")] = 10.0,
    cpu: Annotated[float, typer.Option(help="CPU seconds")] = 5.0,
    memory: Annotated[str, typer.Option(help="memory limit, e.g. 256M")] = "256M",
    pids: Annotated[int, typer.Option(help="process limit")] = 64,
    disk: Annotated[str, typer.Option(help="work directory quota")] = "64M",
    workspace: Annotated[str | None, typer.Option(help="named persistent workspace")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Run code or a command in a sandbox; exits with its exit code."""
    from ..policy.sections.sandbox import parse_size
    from .api import Sandbox
    from .types import Limits, SandboxError

    if file is not None:
        code = file.read_text()
    if code is None and not argv:
        typer.secho("give --code, --file or a command after --", fg="red", err=True)
        raise typer.Exit(2)
    limits = Limits(wall_s=wall, cpu_s=cpu, memory_bytes=parse_size(memory), pids=pids,
                    disk_bytes=parse_size(disk))
    try:
        # one run and the process ends: nothing to pre-make for a next one
        with Sandbox(limits, backend=backend, allow_weak=allow_weak, workspace=workspace,
                     premake=False) as sb:
            r = sb.run_code(code) if code is not None else sb.run(argv or [])
    except SandboxError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(r.to_dict(), indent=2))
    else:
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        if r.error:
            typer.secho(f"[{r.backend}] {r.error.value}: {r.message}", fg="yellow", err=True)
    raise typer.Exit(r.exit_code if r.exit_code is not None else 124)
