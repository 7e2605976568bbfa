"""``shieldwall audit ...``: verify, prove, query and export the tamper-evident log.

The log is found from the policy file's ``audit:`` section (``--policy``, default
``shieldwall.yaml`` when present), or directly with ``--db FILE`` (SQLite) or
``--dsn DSN [--schema NAME]`` (PostgreSQL). Exit status: 0 ok, 1 the log does not verify
(or a proof fails), 2 usage or store error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..policy.sections.audit import AuditSection
    from .store import Store

app = typer.Typer(help="Verify, prove, query and export the tamper-evident audit log.",
                  no_args_is_help=True)

PolicyOpt = Annotated[Path | None, typer.Option("--policy", "-p", help="policy file (audit: section)")]
DbOpt = Annotated[Path | None, typer.Option("--db", help="SQLite audit database")]
DsnOpt = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="PostgreSQL schema")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="head-signing private key (PEM)")]
PubOpt = Annotated[list[Path] | None, typer.Option(
    "--pubkey", help="trusted public key (PEM); repeat for logs signed on several hosts")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _section(policy: Path | None, db: Path | None, dsn: str | None,
             schema: str | None) -> tuple[AuditSection, Path]:
    from ..policy.sections.audit import AuditSection

    section = AuditSection()
    base = Path.cwd()
    if policy is None and Path("shieldwall.yaml").exists() and db is None and dsn is None:
        policy = Path("shieldwall.yaml")
    if policy is not None:
        from ..errors import PolicyError
        from ..policy.load import load_policy

        try:
            section = load_policy(policy).audit
        except PolicyError as exc:
            _fail(str(exc))
        base = policy.resolve().parent
    updates: dict[str, Any] = {}
    if db is not None:
        updates.update(store="sqlite", path=str(db.resolve()))
    if dsn is not None:
        updates.update(store="postgres", dsn=dsn)
    if schema is not None:
        updates["pg_schema"] = schema
    if updates:
        section = section.model_copy(update=updates)
    return section, base


def _store(section: AuditSection, base: Path) -> Store:
    from . import open_store

    if section.store == "sqlite" and not (base / section.path).exists():
        _fail(f"no audit log at {base / section.path}")
    try:
        return open_store(section, base)
    except Exception as exc:
        _fail(f"cannot open the audit store: {exc}")
        raise


def _key_path(section: AuditSection, base: Path, key: Path | None) -> Path:
    if key is not None:
        return key
    p = Path(section.key_path)
    if p.is_absolute():
        return p
    # a log given by --db keeps its key beside it (.shieldwall/...)
    if section.store == "sqlite" and Path(section.path).is_absolute():
        return Path(section.path).parent / p.name
    return base / p


def _public_keys(section: AuditSection, base: Path, key: Path | None, pubkey: list[Path] | None) -> Any:
    from .signing import HeadSigner, keyring, load_public_key

    if pubkey:
        try:
            return keyring(*(load_public_key(p.read_bytes()) for p in pubkey))
        except (OSError, ValueError) as exc:
            _fail(f"cannot read a public key: {exc}")
    path = _key_path(section, base, key)
    if not path.exists():
        _fail(f"no signing key at {path}; give the log's public key with --pubkey")
    return keyring(HeadSigner.load_or_create(path).public_key)


def _signer(section: AuditSection, base: Path, key: Path | None) -> Any:
    from .signing import HeadSigner

    path = _key_path(section, base, key)
    return HeadSigner.load_or_create(path) if path.exists() else None


@app.command()
def verify(
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    key: KeyOpt = None, pubkey: PubOpt = None,
    trusted_head: Annotated[list[Path] | None, typer.Option(
        "--trusted-head", help="a head kept elsewhere (JSON from `audit head`); repeatable")] = None,
    deep: Annotated[bool, typer.Option(help="also check canonical form and query columns")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Recompute every hash and head; report the first tampered entry. Exit 1 if any."""
    from .signing import TreeHead
    from .verify import verify_store

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    keys = _public_keys(section, base, key, pubkey)
    trusted = []
    for p in trusted_head or []:
        try:
            trusted.append(TreeHead.from_dict(json.loads(p.read_text())))
        except ValueError as exc:
            _fail(f"{p}: {exc}")
    report = verify_store(store, keys, trusted_heads=trusted, check_columns=deep)
    store.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.secho(report.summary(), fg=typer.colors.GREEN if report.ok else typer.colors.RED)
        for prob in report.problems[:20]:
            typer.echo(f"  - {prob.kind}: {prob.message}")
        if len(report.problems) > 20:
            typer.echo(f"  ... and {len(report.problems) - 20} more")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def prove(
    seq: Annotated[int, typer.Argument(help="sequence number of the entry")],
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    key: KeyOpt = None,
) -> None:
    """Print an inclusion proof (JSON) for entry SEQ against a signed tree head."""
    from .proofs import ProofError, inclusion_document

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    try:
        doc = inclusion_document(store, seq, signer=_signer(section, base, key))
    except ProofError as exc:
        _fail(str(exc), 1)
    finally:
        store.close()
    typer.echo(json.dumps(doc, indent=2))


@app.command()
def consistency(
    old: Annotated[int, typer.Argument(help="older tree size")],
    new: Annotated[int, typer.Argument(help="newer tree size")],
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    key: KeyOpt = None,
) -> None:
    """Print a consistency proof (JSON): the log at OLD is a prefix of the log at NEW."""
    from .proofs import ProofError, consistency_document

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    try:
        doc = consistency_document(store, old, new, signer=_signer(section, base, key))
    except ProofError as exc:
        _fail(str(exc), 1)
    finally:
        store.close()
    typer.echo(json.dumps(doc, indent=2))


@app.command("check-proof")
def check_proof(
    proof: Annotated[Path, typer.Argument(help="proof document (JSON) from prove / consistency")],
    pubkey: Annotated[Path, typer.Option("--pubkey", help="the log's public key (PEM)")],
) -> None:
    """Verify a proof document with only the log's public key. Exit 1 if it fails."""
    from .proofs import ProofError, verify_consistency_document, verify_inclusion_document

    doc = json.loads(proof.read_text())
    try:
        if doc.get("type") == "shieldwall.audit.consistency":
            verify_consistency_document(doc, pubkey.read_bytes())
            typer.echo(f"ok: size {doc['old_size']} is a prefix of size {doc['new_size']}")
        else:
            entry = verify_inclusion_document(doc, pubkey.read_bytes())
            typer.echo(f"ok: entry {doc['seq']} is in the log of size {doc['tree_size']}")
            typer.echo(json.dumps(entry, sort_keys=True))
    except ProofError as exc:
        _fail(f"proof does not verify: {exc}", 1)


@app.command()
def head(
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    key: KeyOpt = None,
    sign: Annotated[bool, typer.Option(help="sign a new head now (else print the newest)")] = True,
) -> None:
    """Sign a tree head now and print it (JSON); keep it elsewhere to pin the log."""
    from .log import MerkleAuditLog
    from .signing import HeadSigner

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    if not sign:
        heads = store.heads()
        store.close()
        if not heads:
            _fail("no signed head yet", 1)
        typer.echo(json.dumps(heads[-1].to_dict(), indent=2))
        return
    log = MerkleAuditLog(store, HeadSigner.load_or_create(_key_path(section, base, key)))
    h = log.sign_head()
    log.close()
    typer.echo(json.dumps(h.to_dict(), indent=2))


@app.command()
def pubkey(
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    key: KeyOpt = None,
    out: Annotated[Path | None, typer.Option(help="write the PEM here")] = None,
) -> None:
    """Print the log's public key (PEM) and key id; verifiers need only this."""
    from .signing import HeadSigner

    section, base = _section(policy, db, dsn, schema)
    signer = HeadSigner.load_or_create(_key_path(section, base, key))
    pem = signer.public_pem()
    if out is not None:
        out.write_bytes(pem)
        typer.echo(f"key id {signer.key_id} written to {out}", err=True)
    else:
        sys.stdout.write(pem.decode("ascii"))
        typer.echo(f"key id {signer.key_id}", err=True)


def _parse_time(v: str | None) -> float | None:
    if v is None:
        return None
    from .store import entry_time

    try:
        return float(v)
    except ValueError:
        t = entry_time(v)
        if t is None:
            _fail(f"not a time: {v!r} (use ISO 8601 or seconds since the epoch)")
        return t


@app.command()
def query(
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    session: Annotated[str | None, typer.Option(help="session id")] = None,
    agent: Annotated[str | None, typer.Option(help="agent name")] = None,
    tool: Annotated[str | None, typer.Option(help="tool (or target)")] = None,
    verdict: Annotated[str | None, typer.Option(help="allow | allow-with-changes | ask | deny")] = None,
    rule: Annotated[str | None, typer.Option(help="rule id of any finding")] = None,
    kind: Annotated[str | None, typer.Option(help="action kind")] = None,
    event: Annotated[str | None, typer.Option(help="decision | outcome")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 or epoch seconds")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 or epoch seconds")] = None,
    limit: Annotated[int, typer.Option(help="at most this many entries")] = 100,
    newest_first: Annotated[bool, typer.Option(help="newest entries first")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Entries matching every filter, as a table or JSON lines."""
    from .store import Query
    from .view import query_entries

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    q = Query(session=session, agent=agent, tool=tool, verdict=verdict, rule=rule, kind=kind,
              event=event, since=_parse_time(since), until=_parse_time(until), limit=limit,
              descending=newest_first)
    hits = list(query_entries(store, q))
    store.close()
    if as_json:
        for seq, entry in hits:
            typer.echo(json.dumps({"seq": seq, "entry": entry}, sort_keys=True, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"audit entries ({len(hits)})")
    for col in ("seq", "time", "session", "agent", "event", "kind", "tool", "verdict", "rules"):
        table.add_column(col)
    from .view import row_cells

    for seq, entry in hits:
        table.add_row(*row_cells(seq, entry))
    Console().print(table)


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl | otlp")] = "jsonl",
    policy: PolicyOpt = None, db: DbOpt = None, dsn: DsnOpt = None, schema: SchemaOpt = None,
    out: Annotated[Path | None, typer.Option(help="jsonl: file to write (default stdout)")] = None,
    endpoint: Annotated[str, typer.Option(help="otlp: OTLP/HTTP traces endpoint")] =
        "http://127.0.0.1:4318/v1/traces",
    service_name: Annotated[str, typer.Option(help="otlp: service.name")] = "shieldwall",
    start: Annotated[int, typer.Option(help="first seq")] = 0,
    end: Annotated[int | None, typer.Option(help="stop before this seq")] = None,
) -> None:
    """Export entries as JSON lines, or as OpenTelemetry spans over OTLP/HTTP."""
    from .canonical import parse_leaf

    section, base = _section(policy, db, dsn, schema)
    store = _store(section, base)
    if fmt == "jsonl":
        from .view import export_jsonl

        fh = out.open("w", encoding="utf-8") if out else sys.stdout
        try:
            n = export_jsonl(store, fh, start, end)
        finally:
            if out:
                fh.close()
            store.close()
        typer.echo(f"exported {n} entries", err=True)
    elif fmt == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        from .otel import export_spans

        records = [(seq, parse_leaf(bytes(leaf))[0], bytes(lh)) for seq, leaf, lh in store.iter_leaves(start, end)]
        n = export_spans(records, OTLPSpanExporter(endpoint=endpoint), service_name=service_name,
                         log_id=store.log_id)
        store.close()
        typer.echo(f"exported {n} spans to {endpoint}", err=True)
    else:
        _fail("--format must be jsonl or otlp")
