"""The flow layers: remember what results a session was shown (result side), and check
what leaves through a sink against it (sink side).

Result side (``ToolResult``, ``ModelInput``): labels each result from the policy and, on
commit, adds its fingerprints and target-like values to the session's flow store.
Sink side (``ToolCall`` of a sink tool, every ``Egress``): fingerprints the arguments,
looks them up (hash-set lookups; the seen data is never scanned), and applies the flow
rules, the lethal-trifecta rule and the provenance check on target arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit

from ..actions import (
    Action,
    Egress,
    Finding,
    ModelInput,
    Severity,
    ToolCall,
    ToolResult,
    Verdict,
)
from ..layers import ORDER_FLOW, ORDER_RESULT_LABEL, Layer, Outcome
from ..policy.constraints import host_matches
from ..policy.sections.flow import FlowRule, FlowSection
from .fingerprints import Fingerprinter, Settings
from .labels import label_for, label_name, rank
from .store import FlowStore, Match, MemoryFlowStore, RedisFlowStore, target_candidates, target_keys

if TYPE_CHECKING:
    from ..session import SessionState
    from ..wall import Shieldwall

EXTRAS_KEY = "flow"
_VERDICT = {"allow": Verdict.ALLOW, "ask": Verdict.ASK, "deny": Verdict.DENY}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def strings(value: Any, depth: int = 0) -> Iterator[str]:
    """Every string (and number) inside a JSON-like value."""
    if depth > 32:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes | bytearray):
        yield bytes(value).decode("utf-8", "replace")
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from strings(v, depth + 1)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


class FlowContext:
    """What both layers share: the section, the fingerprinter, the store factory."""

    def __init__(self, section: FlowSection,
                 store_factory: Callable[[str], FlowStore] | None = None) -> None:
        self.section = section
        fp = section.fingerprint
        self.fingerprinter = Fingerprinter(Settings(
            k=fp.k, window=fp.window, dense_tokens=fp.dense_tokens, min_chars=fp.min_chars,
            span_chars=fp.secret_span_chars, decode=fp.decode))
        if store_factory is None:
            st = section.store
            if st.backend == "redis":
                import redis

                client = redis.Redis.from_url(st.url, socket_timeout=1.0,
                                              socket_connect_timeout=1.0)

                def store_factory(sid: str) -> FlowStore:
                    return RedisFlowStore(sid, prefix=st.prefix, ttl=st.ttl, client=client)
            else:
                def store_factory(sid: str) -> FlowStore:
                    return MemoryFlowStore()
        self._factory = store_factory
        # A shared store may hold taint another worker recorded: always consult it.
        self.shared = section.store.backend != "memory"

    def store(self, session: SessionState, create: bool = True) -> FlowStore | None:
        st: FlowStore | None = session.extras.get(EXTRAS_KEY)
        if st is None and create:
            st = session.extras[EXTRAS_KEY] = self._factory(session.id)
        return st


class FlowResultLayer:
    """Labels results and remembers them (on commit: only what the model was shown)."""

    name = "flow.result"
    order = ORDER_RESULT_LABEL
    kinds = frozenset({ToolResult.kind, ModelInput.kind})

    def __init__(self, ctx: FlowContext) -> None:
        self.ctx = ctx

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        return None

    def commit(self, action: Action, session: SessionState) -> None:
        store = self.ctx.store(session)
        assert store is not None
        if isinstance(action, ModelInput):
            store.mark(untrusted=not action.trusted, targets=target_candidates(action.text))
            return
        if not isinstance(action, ToolResult) or action.error is not None:
            return
        label = label_for(session.policy, action.tool)
        text = "\n".join(strings(action.result))
        prints = self.ctx.fingerprinter.seen(text)
        store.record(action.tool, label.rank, label.trusted, prints, target_candidates(text))


class FlowSinkLayer:
    """Checks what a sink call or an egress request carries against the session's store."""

    name = "flow"
    order = ORDER_FLOW
    kinds = frozenset({ToolCall.kind, Egress.kind})

    def __init__(self, ctx: FlowContext, sinks: frozenset[str],
                 redact: Callable[[str], str] = lambda s: s) -> None:
        self.ctx = ctx
        sec = ctx.section
        self.sinks = sinks | frozenset(sec.sinks)
        self.sink_class = {t: sec.sinks.get(t, "external") for t in self.sinks}
        self.rules: tuple[FlowRule, ...] = tuple(sec.rules)
        self.targets = {t: tuple(a) for t, a in sec.targets.items()}
        self.trifecta = _VERDICT.get(sec.trifecta.mode, Verdict.ALLOW)
        self.private_rank = rank(sec.trifecta.private)
        self.provenance = _VERDICT[sec.provenance]
        self.min_matches = sec.fingerprint.min_matches
        self.max_chars = sec.fingerprint.max_arg_chars
        self._redact = redact

    # ----------------------------------------------------------------- classify

    def _sink(self, action: Action) -> tuple[str, str, str, list[str]] | None:
        """(sink name, class, text to check, target values) or None if not a sink."""
        if isinstance(action, ToolCall):
            if action.tool not in self.sinks:
                return None
            names = self.targets.get(action.tool, ())
            targets = [s for n in names if n in action.args for s in strings(action.args[n])]
            text = "\n".join(strings(action.args))
            return action.tool, self.sink_class[action.tool], text, targets
        if isinstance(action, Egress):
            try:
                host = (urlsplit(action.url).hostname or "").lower()
            except ValueError:
                host = ""
            internal = bool(host) and any(
                host_matches(host, p) for p in self.ctx.section.internal_hosts)
            parts = [unquote_plus(action.url), *action.headers.values(),
                     action.body.decode("utf-8", "replace")]
            targets = [action.url] if action.method.upper() in _BODY_METHODS else []
            return "egress", "internal" if internal else "external", "\n".join(parts), targets
        return None

    # ----------------------------------------------------------------- rules

    def _rule_verdict(self, m: Match, sink: str, cls: str) -> tuple[Verdict, FlowRule | None]:
        src = m.source
        fitting = [r for r in self.rules
                   if (r.from_ is None or rank(r.from_) <= src.rank)
                   and (r.from_tool is None or r.from_tool == src.tool)
                   and (r.to is None or r.to == cls)
                   and (r.to_tool is None or r.to_tool == sink)]
        labelled = [r for r in fitting if r.from_ is not None]
        chosen = [r for r in fitting if r.from_ is None]
        if labelled:
            top = max(rank(r.from_) for r in labelled if r.from_ is not None)
            chosen += [r for r in labelled if r.from_ is not None and rank(r.from_) == top]
        best: tuple[Verdict, FlowRule | None] = (Verdict.ALLOW, None)
        for r in chosen:
            v = _VERDICT[r.action]
            if v > best[0]:
                best = (v, r)
        return best

    @staticmethod
    def _rule_id(r: FlowRule) -> str:
        if r.from_ is not None:
            return f"flow.{r.from_}_to_{r.to or 'tool'}"
        return "flow.tool_rule"

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        found = self._sink(action)
        if found is None:
            return None
        sink, cls, text, targets = found
        store = self.ctx.store(session, create=self.ctx.shared)
        if store is None:
            return None  # the session has seen nothing: nothing can leak
        if len(text) > self.max_chars:
            return Outcome((Finding(
                self.name, "flow.too_large",
                f"{sink}: {len(text)} characters is more than the flow check scans "
                f"(flow.fingerprint.max_arg_chars = {self.max_chars}); refused",
                Verdict.DENY, severity=Severity.MEDIUM),))
        findings: list[Finding] = []
        prints = self.ctx.fingerprinter.query(text, store.short_lengths())
        for m in store.match(prints):
            if not (m.exact or m.hits >= min(self.min_matches, max(1, m.source.grams))):
                continue
            verdict, rule = self._rule_verdict(m, sink, cls)
            if rule is None or verdict == Verdict.ALLOW:
                continue
            label = label_name(m.source.rank)
            how = "an exact span" if m.exact else f"{m.hits} shared fingerprints"
            findings.append(Finding(
                self.name, self._rule_id(rule),
                f"{sink} ({cls} sink) would carry {label} data from a {m.source.tool} "
                f"result ({how}); the flow rule says {rule.action}",
                verdict, evidence=f"{m.source.tool}#{m.source.id} ({label}) → {sink}",
                severity=Severity.HIGH if verdict == Verdict.DENY else Severity.MEDIUM))
        if cls == "external":
            untrusted, top = store.flags()
            if self.trifecta != Verdict.ALLOW and untrusted and top >= self.private_rank:
                findings.append(Finding(
                    self.name, "flow.lethal_trifecta",
                    f"{sink}: this session has read untrusted content and "
                    f"{label_name(top)} data; external communication now needs "
                    + ("approval" if self.trifecta == Verdict.ASK else "a new session")
                    + " (flow.trifecta.mode)",
                    self.trifecta, evidence=sink, severity=Severity.HIGH))
        if self.provenance != Verdict.ALLOW:
            for value in targets:
                keys = target_keys(value)
                in_untrusted, in_trusted = store.target_origin(keys)
                if in_untrusted and not in_trusted:
                    findings.append(Finding(
                        self.name, "flow.untrusted_target",
                        f"{sink}: the destination {self._redact(value)[:200]!r} appears only in "
                        "untrusted content this session read (it may be an attacker's); "
                        "name it in the task or user input to allow",
                        self.provenance, evidence=self._redact(value)[:200],
                        severity=Severity.HIGH))
        return Outcome(tuple(findings)) if findings else None


def build_layers(section: FlowSection, sinks: frozenset[str],
                 store_factory: Callable[[str], FlowStore] | None = None,
                 redact: Callable[[str], str] = lambda s: s) -> list[Layer]:
    ctx = FlowContext(section, store_factory)
    return [FlowResultLayer(ctx), FlowSinkLayer(ctx, sinks, redact)]


def build(wall: Shieldwall) -> list[Layer]:
    section = wall.policy.flow
    if not section.enabled:
        return []
    return build_layers(section, wall.compiled.sinks, redact=wall.redact_text)
