"""``shieldwall bench gate``: decision latency and throughput of the gate itself."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

_POLICY = """
version: 1
roles:
  reader:
    tools: [lookup, track, read_document]
    http_methods: [GET]
    db_scope: read-only
tools:
  lookup:
    args:
      order_id: {pattern: "ORD-[0-9]{4,10}"}
      limit: {minimum: 1, maximum: 100}
  track:
    args:
      order_id: {pattern: "ORD-[0-9]{4,10}"}
      limit: {minimum: 1, maximum: 100}
  read_document:
    args:
      path: {path: {roots: [docs]}}
  refund_order: {}
audit:
  path: audit.db
monitor:
  enabled: false  # the deny scenarios are a refusal burst: the kill switch would end the session
"""


def command(
    n: Annotated[int, typer.Option(help="timed decisions per scenario")] = 20000,
    out: Annotated[Path, typer.Option(help="folder for the markdown table")] = Path("benchmarks"),
) -> None:
    """Decision latency (p50/p99) and throughput, without and with the SQLite audit."""
    from rich.console import Console
    from rich.table import Table

    from .. import Denied, Shieldwall, ToolCall
    from ..policy.load import parse_policy
    from . import machine, summary, time_calls, write_markdown

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-gate-"))
    (tmp / "docs").mkdir()
    policy = parse_policy(_POLICY, "bench-gate.yaml")

    counter = iter(range(1 << 62))

    def lookup(order_id: str, limit: int = 10) -> str:
        return order_id

    def track(order_id: str, limit: int = 10) -> str:
        # a different result every call: the flow room fingerprints and indexes each one
        return f"{order_id}: parcel {next(counter)} left the depot, courier ETA {limit} days"

    rows: list[list[str]] = []
    table = Table(title="shieldwall bench gate")
    for col in ("scenario", "p50 µs", "p99 µs", "decisions/s", "× direct p50"):
        table.add_column(col)

    args: dict[str, Any] = {"order_id": "ORD-12345", "limit": 5}
    direct = summary(time_calls(lambda: lookup(**args), n))
    results: list[tuple[str, dict[str, float], float]] = [("direct function call", direct, 0.0)]

    def bench(label: str, audited: bool) -> None:
        wall = Shieldwall(policy, base_dir=tmp, audit=True if audited else False,
                          load_rooms=True)
        wall.tool(lookup)
        wall.tool(track)
        s = wall.session(agent="bench", role="reader")
        allow = ToolCall("lookup", args)
        deny = ToolCall("refund_order", {"order_id": "ORD-1"})

        def decide_allow() -> object:
            return s.decide(allow)

        def decide_deny() -> object:
            return s.decide(deny)

        def call_allow() -> object:
            return s.call("lookup", args)

        def call_distinct() -> object:
            return s.call("track", args)

        def call_deny() -> object:
            try:
                return s.call("refund_order", {"order_id": "ORD-1"})
            except Denied:
                return None

        for name, fn in ((f"decide allow {label}", decide_allow),
                         (f"decide deny {label}", decide_deny),
                         (f"call allowed tool {label}", call_allow),
                         (f"call allowed tool, new result each call {label}", call_distinct),
                         (f"call denied tool {label}", call_deny)):
            t0 = time.perf_counter()
            samples = time_calls(fn, n)
            flush = getattr(wall.audit, "flush", None)
            if flush is not None:
                flush()
            elapsed = time.perf_counter() - t0
            results.append((name, summary(samples), n / elapsed))
        wall.close()

    bench("(no audit)", False)
    bench("(SQLite audit)", True)
    for name, st, rate in results:
        ratio = st["p50_us"] / direct["p50_us"] if direct["p50_us"] else float("nan")
        row = [name, f"{st['p50_us']:.2f}", f"{st['p99_us']:.2f}",
               f"{rate:,.0f}" if rate else "-", f"{ratio:.1f}"]
        rows.append(row)
        table.add_row(*row)
    console.print(table)
    notes = [
        f"n = {n} timed calls per scenario after 200 warm-up calls; one process; {machine()}.",
        "decide = the gate's decision only (identity, policy, argument schema and constraints,",
        "budget and every room layer installed); call = decision + tool + result layers + outcome entry.",
        "`call allowed tool` returns the same result each time (recorded once by the flow room);",
        "`new result each call` returns a different text each time (fingerprinted and indexed each time).",
        "decisions/s includes the audit flush at the end of the scenario (durable writes).",
        "Targets (issue 2): p50 ≤ 20 µs and p99 ≤ 100 µs per decision without audit I/O;",
        "≥ 10,000 audited decisions per second.",
        "Reproduce: `shieldwall bench gate`.",
    ]
    path = write_markdown("gate", "Gate decision latency", ["scenario", "p50 µs", "p99 µs",
                          "decisions/s", "× direct p50"], rows, notes, out)
    console.print(f"wrote {path}")
