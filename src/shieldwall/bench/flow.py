"""``shieldwall bench flow``: cost of the taint check per sink call as a session's seen
data grows, and redaction throughput with 10 and 1,000 live secrets.

Baselines measured in the same run: for the taint check, scanning the normalised seen
text for every 6-token window of the sink argument (what a check without an index
does); for redaction, a loop of ``str.replace`` over every form of every secret, and an
RE2 alternation of all forms.
"""

# ruff: noqa: B023 - the timed closures run inside the loop iteration that defines them
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

_POLICY = """
version: 1
roles:
  bench: {tools: [read_doc, send_email]}
tools:
  read_doc: {result: {sensitivity: confidential}}
  send_email: {sink: true}
flow:
  targets: {send_email: [to]}
"""

_SIZES = {"1 KB": 1_000, "10 KB": 10_000, "100 KB": 100_000, "1 MB": 1_000_000,
          "10 MB": 10_000_000}


def _vocab(rnd: random.Random, n: int = 20000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rnd.choice(letters) for _ in range(rnd.randint(2, 10))) for _ in range(n)]


def _text(rnd: random.Random, vocab: list[str], chars: int) -> str:
    # Zipf-like word choice, sentences with punctuation and digits: document-shaped text
    words: list[str] = []
    size = 0
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    while size < chars:
        batch = rnd.choices(vocab, weights=weights, k=2000)
        for i, w in enumerate(batch):
            if i % 17 == 16:
                w += "."
            elif i % 41 == 40:
                w = str(rnd.randint(0, 99999))
            words.append(w)
            size += len(w) + 1
            if size >= chars:
                break
    return " ".join(words)[:chars]


def command(
    max_size: Annotated[str, typer.Option(help="largest seen size: 1 KB ... 10 MB")] = "10 MB",
    calls: Annotated[int, typer.Option(help="timed sink checks per size")] = 300,
    out: Annotated[Path, typer.Option(help="folder for the markdown table")] = Path("benchmarks"),
) -> None:
    """Taint check p50/p99 per sink call vs seen data; redaction MB/s vs live secrets."""
    import base64

    from rich.console import Console
    from rich.table import Table

    from .. import Shieldwall, ToolCall, ToolResult
    from ..flow.fingerprints import tokens
    from ..flow.layer import EXTRAS_KEY, FlowResultLayer, FlowSinkLayer
    from ..policy.load import parse_policy
    from ..secrets.redact import Redactor, forms_of
    from . import machine, percentile, time_calls

    console = Console()
    rnd = random.Random(7)
    vocab = _vocab(rnd)
    sizes = []
    for label, n in _SIZES.items():
        sizes.append((label, n))
        if label.replace(" ", "").lower() == max_size.replace(" ", "").lower():
            break
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-flow-"))
    policy = parse_policy(_POLICY, "bench-flow.yaml")

    # ----------------------------------------------------------------- taint check
    taint_rows: list[list[str]] = []
    t1 = Table(title="taint check per sink call (flow layer)")
    for col in ("seen data", "results", "fingerprints", "index p50 µs", "index p99 µs",
                "leak p50 µs", "scan baseline p50 µs", "record s"):
        t1.add_column(col)
    # a fresh 2 KB e-mail body in words the seen documents never use (every lookup misses)
    body = _text(random.Random(99), [w + "q" for w in _vocab(random.Random(98), 5000)], 2000)
    for label, n in sizes:
        wall = Shieldwall(policy, base_dir=tmp, audit=False, load_rooms=False)
        from ..flow import layer as flow_layer

        layers = flow_layer.build(wall)
        for la in layers:
            wall.gate.add(la)
        res_layer = next(la for la in layers if isinstance(la, FlowResultLayer))
        sink_layer = next(la for la in layers if isinstance(la, FlowSinkLayer))
        s = wall.session(agent="bench", role="bench")
        chunk = min(n, 100_000)
        seen_parts = [_text(random.Random(1000 + i), vocab, chunk)
                      for i in range(max(1, n // chunk))]
        t0 = time.perf_counter()
        for part in seen_parts:
            res_layer.commit(ToolResult("read_doc", {}, part), s.state)
        record_s = time.perf_counter() - t0
        store = s.state.extras[EXTRAS_KEY]
        nfp = len(getattr(store, "_grams", {}))
        clean = ToolCall("send_email", {"to": "a@example.com", "body": body})
        src = seen_parts[len(seen_parts) // 2]
        leak_text = src[len(src) // 2: len(src) // 2 + 300]
        leak = ToolCall("send_email", {"to": "a@example.com",
                                       "body": body[:1500] + " " + leak_text})
        assert sink_layer.check(clean, s.state) is None, "benign body matched"
        leaked = sink_layer.check(leak, s.state)
        assert leaked is not None and leaked.findings, "leak not detected"
        k = max(30, min(calls, 2000))
        idx = time_calls(lambda: sink_layer.check(clean, s.state), k, warmup=10)
        lk = time_calls(lambda: sink_layer.check(leak, s.state), max(30, k // 3), warmup=5)
        seen_norm = " ".join(tokens("\n".join(seen_parts)))
        btoks = tokens(leak.args["body"])
        windows = [" ".join(btoks[i:i + 6]) for i in range(0, max(1, len(btoks) - 5))]

        def scan() -> bool:
            return any(w in seen_norm for w in windows)

        reps = max(3, min(30, int(2e6 / max(1, n))))
        base = time_calls(scan, reps, warmup=1)
        row = [label, str(len(seen_parts)), f"{nfp:,}",
               f"{percentile(idx, 50) * 1e6:.0f}", f"{percentile(idx, 99) * 1e6:.0f}",
               f"{percentile(lk, 50) * 1e6:.0f}", f"{percentile(base, 50) * 1e6:,.0f}",
               f"{record_s:.2f}"]
        taint_rows.append(row)
        t1.add_row(*row)
        s.close()
    console.print(t1)

    # ----------------------------------------------------------------- redaction
    red_rows: list[list[str]] = []
    t2 = Table(title="redaction throughput (1 MB text)")
    for col in ("live secrets", "forms", "matcher MB/s", "str.replace loop MB/s",
                "RE2 alternation MB/s", "RE2 first pass s", "redacted"):
        t2.add_column(col)
    text_base = _text(random.Random(5), vocab, 1_000_000)
    for n_secrets in (10, 1000):
        r2 = random.Random(n_secrets)
        values = ["sk_live_" + "".join(r2.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz0123456789")
                                       for _ in range(24)) for _ in range(n_secrets)]
        red = Redactor()
        for v in values:
            red.add(v)
        forms = sorted({f for v in values for f in forms_of(v) if len(f) >= 4},
                       key=len, reverse=True)
        # plant a few secrets (plain and base64) in the text
        pieces = [text_base[i:i + 100_000] for i in range(0, len(text_base), 100_000)]
        text = ""
        for i, p in enumerate(pieces):
            v = values[i % len(values)]
            text += p + " " + (v if i % 2 else base64.b64encode(v.encode()).decode()) + " "
        mb = len(text.encode()) / 1e6
        red.redact("warm up")
        tm = time_calls(lambda: red.redact(text), 5, warmup=1)
        hits = red.redact(text).count("[REDACTED]")

        def loop() -> str:
            out = text
            for f in forms:
                out = out.replace(f, "[REDACTED]")
            return out

        tl = time_calls(loop, 3, warmup=0)
        re2_rate = re2_first = "n/a"
        try:
            import re2

            opts = re2.Options()
            opts.max_mem = 256 << 20
            rx = re2.compile("|".join(re2.escape(f) for f in forms), opts)
            t_first = time.perf_counter()
            rx.sub("[REDACTED]", text)  # first pass builds the DFA
            re2_first = f"{time.perf_counter() - t_first:.2f}"
            tr = time_calls(lambda: rx.sub("[REDACTED]", text), 2, warmup=0)
            re2_rate = f"{mb / percentile(tr, 50):.1f}"
        except Exception as e:  # pragma: no cover - optional comparison
            re2_rate = f"failed ({type(e).__name__})"
        row = [str(n_secrets), f"{len(forms):,}", f"{mb / percentile(tm, 50):.1f}",
               f"{mb / percentile(tl, 50):.1f}", re2_rate, re2_first, str(hits)]
        red_rows.append(row)
        t2.add_row(*row)
    console.print(t2)

    # ----------------------------------------------------------------- markdown
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["# shieldwall bench flow", "", f"Machine: {machine()}  ", f"Date: {date}  ",
             "Command: `shieldwall bench flow" + (f" --max-size '{max_size}'"
                                                  if max_size != "10 MB" else "") + "`", "",
             "## Taint check per sink call", "",
             "A 2 KB e-mail body checked by the flow sink layer against everything the "
             "session has read (confidential results of 100 KB each). *index*: a body "
             "that shares nothing (every lookup misses); *leak*: the same body with 300 "
             "characters copied from one result. *scan baseline*: searching the "
             "normalised seen text for each 6-token window of the body — the cost without "
             "an index. *record*: time to fingerprint and store all results (paid once, "
             "when results arrive).", "",
             "| " + " | ".join(c.header for c in t1.columns) + " |",  # type: ignore[misc]
             "|" + "|".join("---" for _ in t1.columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in taint_rows]
    lines += ["", "Target: sink check ≤ 1 ms p50 with 1 MB seen. The index p50 stays flat "
              "as seen data grows; the scan grows linearly. p99 and MB/s figures carry "
              "scheduling noise when the machine is shared (compare runs on an idle "
              "machine).", "",
              "## Redaction throughput", "",
              "1 MB of text with 10 planted secrets (plain and base64). *forms*: every "
              "value's plain, base64 (three alignments, URL-safe), hex, percent and JSON "
              "forms. Baselines: a loop of `str.replace` over every form; one RE2 "
              "alternation of every form (google-re2, max_mem 256 MiB; timed after a first "
              "pass that builds its DFA — that first pass is shown separately; with the "
              "default 8 MiB budget its DFA runs out of memory and falls back to a far "
              "slower engine on every pass).", "",
              "| " + " | ".join(c.header for c in t2.columns) + " |",  # type: ignore[misc]
              "|" + "|".join("---" for _ in t2.columns) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in red_rows]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "flow.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    console.print(f"wrote {path}")
