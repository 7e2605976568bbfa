"""The detect room's layers, built from the policy's `detect:` section.

- ``detect.input`` (``ModelInput``): injection scan of user turns and documents.
- ``detect.result`` (``ToolResult``): injection scan of untrusted tool results; the
  policy chooses deny, ask or annotate on a finding.
- ``detect.spotlight`` (``ToolResult``, after flow labelling): wraps untrusted results in
  the session's random boundary (allow-with-changes).
- ``detect.output`` (``ModelOutput`` and ``ToolCall`` arguments): canary, secret, PII,
  exfiltration-URL, blob and system-prompt leaks.

Per-session state (canary, spotlighter, system-prompt shingles, live secret values)
lives in ``SessionState.extras["detect"]``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..actions import Action, Finding, ModelInput, ModelOutput, Severity, ToolCall, ToolResult, Verdict
from ..layers import ORDER_DETECT, ORDER_RESULT_DETECT, ORDER_RESULT_LABEL, WITHHELD_KEY, Layer, Outcome
from ..policy.sections.detect import DetectSection
from ..values import plain, strings
from . import canary as canary_mod
from . import encodings, injection, pii, secrets, urls
from .base import Hit
from .external import ExternalClassifier
from .leak import PromptLeakGuard
from .spotlight import Spotlighter

if TYPE_CHECKING:
    from ..session import SessionState
    from ..wall import Shieldwall

EXTRAS_KEY = "detect"
ORDER_SPOTLIGHT = ORDER_RESULT_LABEL + 5
_VERDICT = {"deny": Verdict.DENY, "ask": Verdict.ASK, "annotate": Verdict.ALLOW,
            "redact": Verdict.CHANGES}


@dataclass(slots=True)
class DetectState:
    canary: str
    spotlighter: Spotlighter
    leak_guard: PromptLeakGuard | None = None
    live: secrets.LiveSecrets = field(default_factory=secrets.LiveSecrets)


def state_for(session: SessionState) -> DetectState:
    st = session.extras.get(EXTRAS_KEY)
    if st is None:
        section: DetectSection = session.policy.detect
        st = DetectState(canary_mod.new_canary(), Spotlighter.new(section.results.spotlight_mode))
        session.extras[EXTRAS_KEY] = st
    assert isinstance(st, DetectState)
    return st


def prepare_system_prompt(session: SessionState, prompt: str) -> str:
    """Register ``prompt`` for leak detection and return it with the session's canary
    and the spotlighting convention appended (the text to send as the system prompt)."""
    st = state_for(session)
    section: DetectSection = session.policy.detect
    st.leak_guard = PromptLeakGuard.for_prompt(prompt, section.output.prompt_leak_threshold)
    parts = [prompt]
    if section.results.spotlight:
        parts.append(st.spotlighter.instructions())
    if section.output.canary:
        parts.append(canary_mod.canary_line(st.canary))
    return "\n\n".join(parts)


def register_secret_values(session: SessionState, values: list[str]) -> None:
    """Live secret values this session may hold; matched exactly in outputs and args."""
    st = state_for(session)
    for v in values:
        st.live.add(v)


def _finding(layer: str, hit: Hit, verdict: Verdict, what: str = "") -> Finding:
    msg = f"{what}: {hit.message}" if what else hit.message
    return Finding(layer, hit.rule, msg, verdict, evidence=hit.evidence, severity=hit.severity,
                   score=round(hit.score, 4), span=hit.span)


class _Base:
    name = "detect"
    order = ORDER_DETECT
    kinds: frozenset[str] = frozenset()

    def __init__(self, section: DetectSection, external: ExternalClassifier | None) -> None:
        self.section = section
        self.external = external

    def _injection(self, text: str, channel: str) -> tuple[injection.InjectionResult, list[Hit]]:
        inj = self.section.injection
        text = text[: self.section.max_scan_chars]
        res = injection.scan(text, use_model=inj.classifier, decode=inj.decode,
                             rule_threshold=inj.rule_threshold, channel=channel,
                             doc_model=inj.document_model, use_encoder=inj.encoder)
        flagged = res.score >= inj.threshold
        hits = [h for h in res.hits if h.rule.startswith("detect.injection.")] if flagged else []
        return res, hits

    def _external(self, text: str, channel: str) -> list[Hit]:
        if self.external is None or channel not in self.section.external.channels:
            return []
        return self.external.scan(text[: self.section.max_scan_chars])


def _invisible(res: injection.InjectionResult) -> list[Hit]:
    return [h for h in res.hits if h.rule in ("detect.ascii_smuggling", "detect.invisible_text",
                                              "detect.homoglyphs")]


class InputLayer(_Base):
    name = "detect.input"
    order = ORDER_DETECT
    kinds = frozenset({ModelInput.kind})

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if not isinstance(action, ModelInput):
            return None
        settings = self.section.input
        # Untrusted input is a document (e-mail, web page, retrieved file), not a prompt.
        res, hits = self._injection(action.text, "user" if action.trusted else "tool")
        v = _VERDICT[settings.trusted if action.trusted else settings.untrusted]
        what = f"{'trusted' if action.trusted else 'untrusted'} input from {action.source}"
        out = [_finding(self.name, h, v, what) for h in hits]
        out += [_finding(self.name, h, _VERDICT[settings.invisible_text], what) for h in _invisible(res)]
        out += [_finding(self.name, h, Verdict.DENY, what) for h in self._external(action.text, "input")]
        return Outcome(tuple(out)) if out else None


class ResultLayer(_Base):
    name = "detect.result"
    order = ORDER_RESULT_DETECT
    kinds = frozenset({ToolResult.kind})

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if not isinstance(action, ToolResult):
            return None
        if _trusted(session, action.tool) and not self.section.results.scan_trusted:
            return None
        text = "\n".join(strings(action.result))
        if not text:
            return None
        res, hits = self._injection(text, "tool")
        mode = self.section.results.on_injection
        what = f"result of {action.tool}"
        if hits and mode == "remove":
            removed = self._remove(action, session, what, hits)
            if removed is not None:
                return removed
            mode = "deny"  # the injection could not be isolated to strings: fail closed
        v = _VERDICT.get(mode, Verdict.DENY)
        truncated = len(text) > self.section.max_scan_chars
        out = [_finding(self.name, h, v, what) for h in hits]
        out += [_finding(self.name, h, Verdict.ALLOW, what) for h in res.advisory]
        if truncated:
            out.append(Finding(self.name, "detect.scan_truncated",
                               f"{what}: only the first {self.section.max_scan_chars} of "
                               f"{len(text)} characters were scanned", Verdict.ALLOW,
                               severity=Severity.INFO))
        out += [_finding(self.name, h, _VERDICT[self.section.input.invisible_text], what)
                for h in _invisible(res)]
        out += [_finding(self.name, h, Verdict.DENY, what) for h in self._external(text, "result")]
        return Outcome(tuple(out)) if out else None


    def _remove(self, action: ToolResult, session: SessionState, what: str,
                hits: list[Hit]) -> Outcome | None:
        """Withhold each string of the result that alone scans as injected; None when the
        injection cannot be isolated to strings (it spans them) or what is left still
        scans as injected after a few rounds.

        Each round scans first the strings that hold a rule's evidence (a rule fires in
        every flagged tool output), then, if none of those alone is flagged, every string;
        then the rest as a whole. A result of many strings so costs a few scans, not one
        per string, unless the evidence cannot be found in the raw strings."""
        removed: list[str] = []
        rules: set[str] = set()

        def walk(v: Any, pick: Callable[[str], bool], depth: int = 0) -> Any:
            if isinstance(v, str):
                if len(v) < 8 or not pick(v):
                    return v
                found = self._injection(v, "tool")[1]
                if not found:
                    return v
                removed.append(v)
                rules.update(h.rule for h in found)
                return WITHHELD_MARKER
            if depth > 32:
                return v
            if isinstance(v, dict):
                return {k: walk(x, pick, depth + 1) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return [walk(x, pick, depth + 1) for x in v]
            flat = plain(v)
            return v if flat is v else walk(flat, pick, depth + 1)

        current, now = action.result, hits
        for _ in range(4):
            evidence = tuple(h.evidence.lower() for h in now
                             if h.evidence and h.rule != "detect.injection.classifier")
            before = len(removed)
            if evidence:
                current = walk(current, _holding(evidence))
            if len(removed) == before:
                current = walk(current, lambda t: True)
            if len(removed) == before:
                return None  # no string alone is flagged: the injection spans strings
            now = self._injection("\n".join(strings(current)), "tool")[1]
            if not now:
                break
        else:
            return None
        session.extras[WITHHELD_KEY] = removed
        out = [_finding(self.name, h, Verdict.CHANGES, what) for h in hits]
        out.append(Finding(self.name, "detect.injection.withheld",
                           f"{what}: {len(removed)} string(s) that looked like injected instructions "
                           f"were withheld ({', '.join(sorted(rules))}); the rest was passed on",
                           Verdict.CHANGES, severity=Severity.HIGH))
        return Outcome(tuple(out), replace(action, result=current))


def _holding(evidence: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda t: any(e in t.lower() for e in evidence)


WITHHELD_MARKER = "[withheld by Shieldwall: this text looked like injected instructions]"


def _trusted(session: SessionState, tool: str) -> bool:
    spec = session.policy.tools.get(tool)
    return True if spec is None else spec.result.trusted


class SpotlightLayer(_Base):
    name = "detect.spotlight"
    order = ORDER_SPOTLIGHT
    kinds = frozenset({ToolResult.kind})

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if not isinstance(action, ToolResult) or _trusted(session, action.tool):
            return None
        spot = state_for(session).spotlighter
        minimum = self.section.results.min_spotlight_chars

        def wrap(v: Any, depth: int = 0) -> Any:
            if isinstance(v, str):
                return spot.wrap(v, source=action.tool) if len(v) >= minimum else v
            if depth > 32:
                return v
            if isinstance(v, dict):
                return {k: wrap(x, depth + 1) for k, x in v.items()}
            if isinstance(v, list | tuple):
                return type(v)(wrap(x, depth + 1) for x in v)
            return v

        new = wrap(action.result)
        if new == action.result:
            return None
        f = Finding(self.name, "detect.spotlighted",
                    f"result of {action.tool} is untrusted: wrapped in the session's boundary",
                    Verdict.CHANGES, severity=Severity.INFO)
        return Outcome((f,), replace(action, result=new))


_PLACEHOLDER = re.compile(r"\{\{\s*secret:[^}]*\}\}")


class OutputLayer(_Base):
    name = "detect.output"
    order = ORDER_DETECT
    kinds = frozenset({ModelOutput.kind, ToolCall.kind})

    def __init__(self, section: DetectSection, external: ExternalClassifier | None,
                 wall: Shieldwall | None = None) -> None:
        super().__init__(section, external)
        self.wall = wall

    def _leaks(self, text: str, session: SessionState, where: str,
               with_pii: bool = True, full: bool = True) -> tuple[list[Finding], list[Hit]]:
        """``full=False``: only the exact checks (canary, live secret values) — cheap enough
        for every tool call; the shape-based scans run on outputs and sink arguments."""
        o = self.section.output
        st = state_for(session)
        out: list[Finding] = []
        redact: list[Hit] = []
        text = text[: self.section.max_scan_chars]
        if o.canary:
            out += [_finding(self.name, h, Verdict.DENY, where) for h in canary_mod.find(text, st.canary)]
        if o.secrets:
            v = _VERDICT[o.secrets_verdict]
            found = st.live.scan(text) if len(st.live) else []
            if not found and self.wall is not None and self.wall.redact_text(text) != text:
                found = [Hit("detect.secret.live_value", "a live secret value in text",
                             evidence="[redacted]", severity=Severity.CRITICAL)]
            out += [_finding(self.name, h, Verdict.DENY, where) for h in found]
            if full:
                out += [_finding(self.name, h, v, where) for h in secrets.scan(_PLACEHOLDER.sub("", text))]
        if not full:
            return out, redact
        if o.pii and with_pii:
            hits = pii.scan(text, kinds=frozenset(o.pii))
            v = _VERDICT[o.pii_verdict]
            out += [_finding(self.name, h, v, where) for h in hits]
            if o.pii_verdict == "redact":
                redact += hits
        if o.exfil_urls:
            v = _VERDICT[o.exfil_verdict]
            out += [_finding(self.name, h, v, where) for h in urls.scan(text, o.allowed_hosts)]
        out += [_finding(self.name, h, _VERDICT[o.blobs], where) for h in encodings.blobs(text)]
        if o.prompt_leak and st.leak_guard is not None:
            out += [_finding(self.name, h, Verdict.DENY, where) for h in st.leak_guard.check(text)]
        return out, redact

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if isinstance(action, ModelOutput):
            findings, redact = self._leaks(action.text, session, "model output")
            findings += [_finding(self.name, h, Verdict.DENY, "model output")
                         for h in self._external(action.text, "output")]
            if not findings:
                return None
            new: Action | None = None
            if redact and max(f.verdict for f in findings) < Verdict.DENY:
                new = ModelOutput(redact_spans(action.text, redact))
            return Outcome(tuple(findings), new)
        mode = self.section.output.tool_args
        if isinstance(action, ToolCall) and mode not in (False, "off"):
            text = "\n".join(strings(action.args))
            if not text:
                return None
            full = mode in (True, "all") or action.tool in session.wall.compiled.sinks
            # PII in arguments is the tool's business (an e-mail tool takes addresses).
            findings, _ = self._leaks(text, session, f"arguments of {action.tool}", with_pii=False,
                                      full=full)
            return Outcome(tuple(findings)) if findings else None
        return None


def redact_spans(text: str, hits: list[Hit]) -> str:
    spans = sorted({h.span: h.rule for h in hits if h.span}.items(), reverse=True)
    for (s, e), rule in spans:
        text = text[:s] + f"[REDACTED:{rule.rsplit('.', 1)[-1]}]" + text[e:]
    return text


def external_from(section: DetectSection) -> ExternalClassifier | None:
    ext = section.external
    if not ext.enabled:
        return None
    key = os.environ.get(ext.api_key_env) if ext.api_key_env else None
    return ExternalClassifier(ext.base_url, ext.model, ext.format, ext.timeout, ext.threshold, key)


def _warm(section: DetectSection) -> None:
    """Load the models, compile the rule set and the detect-secrets plugins now: done lazily,
    the first scan of a process costs 0.2-0.4 s (the encoder's first run as much again) and
    would overrun the layer time budget."""
    from . import encoder, injection

    secrets.scan("warm up: password = 'x'")
    injection.scan("warm up the detector", use_encoder=section.injection.encoder)
    enc = encoder.default_encoder() if section.injection.encoder and section.injection.classifier else None
    if enc is not None:
        enc.logit("warm up the encoder")


def build(wall: Shieldwall) -> list[Layer]:
    section: DetectSection = wall.policy.detect
    if not section.enabled:
        return []
    ext = external_from(section)

    def spotlight(state: SessionState, text: str, source: str) -> str:
        return state_for(state).spotlighter.wrap(text, source=source)

    wall.set_spotlighter(spotlight)
    _warm(section)
    layers: list[Layer] = [InputLayer(section, ext), ResultLayer(section, ext),
                           OutputLayer(section, ext, wall)]
    if section.results.spotlight:
        layers.append(SpotlightLayer(section, ext))
    return layers
