"""Peer-scanner worker for ``shieldwall bench detect`` (runs in the peers' own venv).

Reads JSON lines ``{"id": ..., "text": ...}`` on stdin and writes one JSON line per text
and scanner: ``{"id", "scanner", "flag", "score", "ms"}``; a scanner that cannot load is
reported once as ``{"scanner", "error"}``. Standard library only here: the peers are
imported inside, from whatever venv runs this file. Never imports shieldwall.

    .venv-peers/bin/python src/shieldwall/bench/detect_peers.py --rebuff-every 20 < texts.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Configuration for the peers whose scanners need a word list: LLM Guard's BanSubstrings and
# Regex ship no prompt-injection list, so they get common injection phrases (the bench's
# own choice, listed in benchmarks/detect.md). LlamaFirewall's REGEX uses its defaults.
BAN_SUBSTRINGS = [
    "ignore previous instructions", "ignore all previous instructions", "ignore the above",
    "disregard previous instructions", "ignore your instructions", "system prompt",
    "developer mode", "do anything now", "jailbreak", "you are now", "new instructions",
]
REGEXES = [
    r"(?i)\b(ignore|disregard|forget)\s+(all\s+)?(the\s+)?(previous|prior|above|earlier)\s+(instructions|prompts|rules)",
    r"(?i)\b(reveal|print|show|repeat)\s+(your|the)\s+(system\s+prompt|instructions)",
    r"(?i)\byou\s+are\s+now\s+(DAN|in\s+developer\s+mode)",
]

Scanner = Callable[[str], tuple[bool, float]]


def llm_guard_scanners() -> dict[str, Scanner]:
    from llm_guard.input_scanners import (  # type: ignore[import-not-found]
        BanSubstrings,
        InvisibleText,
        Regex,
        Secrets,
    )

    made: dict[str, Any] = {
        "llm-guard/InvisibleText": InvisibleText(),
        "llm-guard/Secrets": Secrets(),
        "llm-guard/BanSubstrings": BanSubstrings(substrings=BAN_SUBSTRINGS, match_type="str",
                                                 case_sensitive=False),
        "llm-guard/Regex": Regex(patterns=REGEXES, is_blocked=True),
    }

    def wrap(sc: Any) -> Scanner:
        def run(text: str) -> tuple[bool, float]:
            _, valid, risk = sc.scan(text)
            return (not valid), float(risk)
        return run

    return {k: wrap(v) for k, v in made.items()}


def llamafirewall_scanners() -> dict[str, Scanner]:
    from llamafirewall import (  # type: ignore[import-not-found]
        LlamaFirewall,
        Role,
        ScanDecision,
        ScannerType,
        UserMessage,
    )

    out: dict[str, Scanner] = {}
    for st in (ScannerType.HIDDEN_ASCII, ScannerType.REGEX):
        fw = LlamaFirewall(scanners={Role.USER: [st]})

        def run(text: str, fw: Any = fw) -> tuple[bool, float]:
            r = fw.scan(UserMessage(content=text))
            return r.decision != ScanDecision.ALLOW, float(r.score)

        out[f"llamafirewall/{st.name}"] = run
    return out


def rebuff_scanner() -> dict[str, Scanner]:
    # Only the heuristic module: the full SDK pins langchain/openai versions that
    # conflict here, and its other checks need an LLM and a vector store.
    spec = importlib.util.find_spec("rebuff")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("rebuff is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "detect_pi_heuristics.py"
    mspec = importlib.util.spec_from_file_location("rebuff_heuristics", path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    threshold = 0.75  # Rebuff's default max_heuristic_score

    def run(text: str) -> tuple[bool, float]:
        s = float(mod.detect_prompt_injection_using_heuristic_on_input(text))
        return s > threshold, s

    return {"rebuff/heuristic": run}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuff-every", type=int, default=20, help="run Rebuff on every Nth text")
    ap.add_argument("--rebuff-max-chars", type=int, default=4000)
    args = ap.parse_args()
    scanners: dict[str, Scanner] = {}
    for name, loader in (("llm-guard", llm_guard_scanners), ("llamafirewall", llamafirewall_scanners),
                         ("rebuff", rebuff_scanner)):
        try:
            scanners.update(loader())
        except Exception as e:  # a peer that cannot load is reported, not fatal
            print(json.dumps({"scanner": name, "error": f"{type(e).__name__}: {e}"}), flush=True)
    for line in sys.stdin:
        item = json.loads(line)
        text, idx = item["text"], item["id"]
        for name, run in scanners.items():
            if name.startswith("rebuff/"):
                if idx % args.rebuff_every or len(text) > args.rebuff_max_chars:
                    continue
            t0 = time.perf_counter()
            try:
                flag, score = run(text)
                rec: dict[str, Any] = {"id": idx, "scanner": name, "flag": bool(flag), "score": score}
            except Exception as e:
                rec = {"id": idx, "scanner": name, "flag": None, "error": f"{type(e).__name__}: {e}"}
            rec["ms"] = (time.perf_counter() - t0) * 1000
            print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
