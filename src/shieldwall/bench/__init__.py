"""Reproducible benchmarks behind ``shieldwall bench NAME``.

Each module ``bench/<name>.py`` exposes ``command(...)`` with typer-annotated options; it
prints a table, writes ``benchmarks/<name>.md`` and measures its baseline in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BENCHES: tuple[str, ...] = ("gate", "audit", "detect", "flow", "sandbox", "egress", "mcp",
                            "agentdojo")


def machine() -> str:
    return (f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = min(len(s) - 1, max(0, round(q / 100.0 * (len(s) - 1))))
    return s[k]


def time_calls(fn: Callable[[], object], n: int, *, warmup: int = 200) -> list[float]:
    """Per-call wall time in seconds for ``n`` calls (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    out = []
    perf = time.perf_counter
    for _ in range(n):
        t = perf()
        fn()
        out.append(perf() - t)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_us": percentile(samples, 50) * 1e6,
        "p99_us": percentile(samples, 99) * 1e6,
        "mean_us": statistics.fmean(samples) * 1e6 if samples else float("nan"),
    }


def write_markdown(name: str, title: str, header: list[str], rows: list[list[str]],
                   notes: list[str], out_dir: Path | None = None) -> Path:
    out_dir = out_dir or Path("benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# {title}", "", f"Machine: {machine()}  ", f"Date: {date}", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines += notes
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
