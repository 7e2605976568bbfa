"""The flow layers: remember what results a session was shown (result side), and check
what leaves through a sink against it (sink side).

Result side (``ToolResult``, ``ModelInput``): labels each result from the policy and, on
commit, adds its fingerprints and target-like values to the session's flow store.
Sink side (``ToolCall`` of a sink tool, every ``Egress``): fingerprints the arguments,
looks them up (hash-set lookups; the seen data is never scanned), and applies the flow
rules, the lethal-trifecta rule and the provenance check on target arguments.

Provenance rule ids: ``flow.untrusted_target`` (seen only in untrusted content),
``flow.unseen_target`` (seen nowhere: invented or obfuscated), ``flow.target_not_in_input``
(seen in results but not named in the trusted input, for targets that must be). A session
whose store passed ``flow.store.max_entries`` gets ``flow.store_full`` on every sink.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
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
from ..layers import ORDER_FLOW, ORDER_RESULT_LABEL, WITHHELD_KEY, Layer, Outcome
from ..policy.constraints import host_matches
from ..policy.sections.flow import FlowRule, FlowSection
from ..values import plain as _plain
from ..values import strings
from .fingerprints import Fingerprinter, Settings
from .labels import label_for, label_name, rank
from .store import (
    OVERFLOW_KEY,
    FlowStore,
    Match,
    MemoryFlowStore,
    RedisFlowStore,
    links_in,
    span_candidates,
    target_candidates,
    target_keys,
    target_spans,
)

if TYPE_CHECKING:
    from ..session import SessionState
    from ..wall import Shieldwall

EXTRAS_KEY = "flow"
_ADDRESS_LIKE = re.compile(r"[@./:0-9]")
SEEN_KEY = "flow.recorded"  # digests of results already recorded in this session
_SEEN_MAX = 65536
_VERDICT = {"allow": Verdict.ALLOW, "ask": Verdict.ASK, "deny": Verdict.DENY}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# a target value, the verdicts when it was seen only in untrusted content, when it was
# seen nowhere, when it was seen in trusted results but not in the trusted input
Target = tuple[str, Verdict, Verdict, Verdict]




def split_fields(value: Any, fields: tuple[tuple[str, ...], ...]) -> tuple[list[str], list[str]]:
    """(strings under a trusted field, all other strings) of a result. A field is a key
    path (``("sender",)``, ``("meta", "owner")``) that matches the tail of the keys above
    a value, at any depth; everything under it (keys too) is the field's."""
    trusted: list[str] = []
    rest: list[str] = []

    def walk(v: Any, path: tuple[str, ...], inside: bool, depth: int) -> None:
        if depth > 32:
            return
        v = _plain(v) if not isinstance(v, str | bytes | bytearray | dict | list
                                           | tuple | set | frozenset | int | float) else v
        if isinstance(v, dict):
            for k, x in v.items():
                ks = str(k)
                p = (*path, ks)
                hit = inside or any(p[-len(f):] == f for f in fields if len(f) <= len(p))
                (trusted if inside else rest).extend(strings(k, depth + 1))
                walk(x, p, hit, depth + 1)
        elif isinstance(v, list | tuple | set | frozenset):
            for x in v:
                walk(x, path, inside, depth + 1)
        else:
            (trusted if inside else rest).extend(strings(v, depth + 1))

    walk(value, (), False, 0)
    return trusted, rest


class FlowContext:
    """What both layers share: the section, the fingerprinter, the store factory."""

    def __init__(self, section: FlowSection,
                 store_factory: Callable[[str], FlowStore] | None = None) -> None:
        self.section = section
        self.trusted_fields = {t: tuple(tuple(f.split(".")) for f in fs)
                               for t, fs in section.trusted_fields.items()}
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
                    return RedisFlowStore(sid, prefix=st.prefix, ttl=st.ttl, client=client,
                                          max_entries=st.max_entries)
            else:
                def store_factory(sid: str) -> FlowStore:
                    return MemoryFlowStore(st.max_entries)
        self._factory = store_factory
        # A shared store may hold taint another worker recorded: always consult it.
        self.shared = section.store.backend != "memory"

    def targets_in(self, text: str) -> set[str]:
        """Target keys of ``text``: tokens, addresses, URLs and multi-word spans."""
        sec = self.section
        return target_candidates(text) | span_candidates(text, sec.target_words,
                                                         sec.target_scan_tokens)

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

    def refused(self, action: Action, session: SessionState) -> None:
        """Untrusted content the gate refused (an injection caught by the detect room) is
        remembered as if it had been shown: the model did not see it, but a trusted tool
        may later echo the same stored text (an event's description), and its addresses
        must still count as the attacker's then. Trusted content refused is not vouched for."""
        if isinstance(action, ModelInput) and not action.trusted:
            self.commit(action, session)
        elif isinstance(action, ToolResult) and action.error is None:
            label = label_for(session.policy, action.tool)
            if not label.trusted:
                self.commit(action, session)
            elif WITHHELD_KEY in session.extras:
                # what the detect room withheld from a trusted result is still the
                # attacker's text, and must not wait for (and be filed under) the next result
                store = self.ctx.store(session)
                assert store is not None
                self._record_withheld(session, store, action.tool, label.rank)

    def commit(self, action: Action, session: SessionState) -> None:
        store = self.ctx.store(session)
        assert store is not None
        if isinstance(action, ModelInput):
            store.mark(untrusted=not action.trusted, targets=self.ctx.targets_in(action.text),
                       user=action.trusted)
            return
        if not isinstance(action, ToolResult) or action.error is not None:
            return
        label = label_for(session.policy, action.tool)
        self._record_withheld(session, store, action.tool, label.rank)
        fields = self.ctx.trusted_fields.get(action.tool)
        if label.trusted or not fields:
            text = "\n".join(strings(action.result))
            key = self._fresh(session, action.tool, label.rank, label.trusted, text)
            if key is None:
                return
            prints = self.ctx.fingerprinter.seen(text)
            targets = self.ctx.targets_in(text)
            if label.trusted and targets:
                targets = self._not_echoed(store, text, targets)
            store.record(action.tool, label.rank, label.trusted, prints, targets)
            self._kept(session, key)
            return
        # An untrusted result with system-written fields: targets found in those fields
        # count as trusted; every other string (and the fingerprints of all) as untrusted.
        own, rest = split_fields(action.result, fields)
        key = self._fresh(session, action.tool, label.rank, False, "\0".join(own) + "\0\0" + "\0".join(rest))
        if key is None:
            return
        rest_text = "\n".join(rest)
        prints = self.ctx.fingerprinter.seen("\n".join(own) + "\n" + rest_text)
        store.record(action.tool, label.rank, False, prints, self.ctx.targets_in(rest_text))
        if own:
            # each value alone: spans never run from one field value into the next
            keys: set[str] = set()
            for v in own:
                keys |= self.ctx.targets_in(v)
            store.mark(untrusted=False, targets=keys)
        self._kept(session, key)

    def _record_withheld(self, session: SessionState, store: FlowStore, tool: str, rank: int) -> None:
        """Text a result layer withheld from the model: still the attacker's content."""
        withheld: list[str] | None = session.extras.pop(WITHHELD_KEY, None)
        for text in withheld or ():
            if (key := self._fresh(session, tool, rank, False, text)) is not None:
                store.record(tool, rank, False, self.ctx.fingerprinter.seen(text), self.ctx.targets_in(text))
                self._kept(session, key)

    def _not_echoed(self, store: FlowStore, text: str, targets: set[str]) -> set[str]:
        """The targets a trusted result may vouch for. A trusted tool whose result repeats
        untrusted content (an event's description returned by the tool that added a
        participant, a file a tool wrote from a web page) does not make the addresses in
        that content trusted: a target seen so far only in untrusted content stays so when
        the trusted result also carries that untrusted text (taint laundering). A trusted
        result that names it independently (a contact list) still vouches for it."""
        untrusted, _ = store.flags()
        if not untrusted:
            return targets
        keys = list(targets)
        in_u, in_t, in_n = store.target_hits(keys)
        suspect = {k for k, u, t, n in zip(keys, in_u, in_t, in_n, strict=True) if u and not t and not n}
        if not suspect:
            return targets
        # What else the result shares with untrusted sources, the suspect values aside
        # (a contact list naming the address is no echo of the mail that named it too).
        # Only address-like values (with @ . / : or digits: addresses, URLs, hosts, numbers)
        # are taken out: plain words and word spans are the very text whose echo is looked for.
        addresses = sorted((k for k in suspect if _ADDRESS_LIKE.search(k) and not k.startswith("#")),
                           key=len, reverse=True)
        rest = text
        for k in addresses:
            rest = re.sub(re.escape(k), " ", rest, flags=re.IGNORECASE)
        floor = self.ctx.section.fingerprint.min_matches
        shorts = store.short_lengths()
        for m in store.match(self.ctx.fingerprinter.query(rest, shorts)):
            if not m.source.trusted and (m.exact or m.hits >= min(floor, max(1, m.source.grams))):
                return targets - suspect
        # An untrusted value that held an address and nothing else leaves nothing to
        # recognise its echo by: what it named stays untrusted whoever repeats it.
        for k in addresses:
            for m in store.match(self.ctx.fingerprinter.query(k, shorts)):
                if not m.source.trusted and (m.source.grams <= m.hits if m.source.grams else m.exact):
                    return targets - suspect
        return targets

    def _fresh(self, session: SessionState, tool: str, rank: int, trusted: bool,
               text: str) -> bytes | None:
        """This result's digest when it must be recorded; None when the same result (tool,
        label and text) was recorded in this session less than half the store's TTL ago:
        recording it again would add nothing (same fingerprints, targets and flags) and only
        grow the index (a session polling one tool would otherwise make every fingerprint's
        source list grow without end). Call :meth:`_kept` once the store has it."""
        key = hashlib.blake2b(f"{tool}\0{rank}\0{int(trusted)}\0".encode()
                              + text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        seen: dict[bytes, float] | None = session.extras.get(SEEN_KEY)
        t = None if seen is None else seen.get(key)
        if t is not None and time.monotonic() - t < self.ctx.section.store.ttl / 2:
            return None
        return key

    @staticmethod
    def _kept(session: SessionState, key: bytes) -> None:
        # only after the store took it: a failed write must be retried next time, not skipped
        seen: dict[bytes, float] = session.extras.setdefault(SEEN_KEY, {})
        if len(seen) < _SEEN_MAX or key in seen:
            seen[key] = time.monotonic()

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
        self.trifecta = _VERDICT.get(sec.trifecta.mode, Verdict.ALLOW)
        self.private_rank = rank(sec.trifecta.private)
        self.provenance = _VERDICT[sec.provenance]
        self.unseen = _VERDICT[sec.provenance_unseen]
        # per sink tool: (argument, links only, verdicts: untrusted only, unseen, not in
        # the input)
        self.targets: dict[str, tuple[tuple[str, bool, Verdict, Verdict, Verdict], ...]] = {
            t: tuple((n, c.links, _VERDICT[c.untrusted] if c.untrusted else self.provenance,
                      _VERDICT[c.unseen] if c.unseen else self.unseen,
                      _VERDICT[c.from_results])
                     for n, c in a.items())
            for t, a in sec.targets.items()}
        self.words = sec.target_words
        self.min_matches = sec.fingerprint.min_matches
        self.max_chars = sec.fingerprint.max_arg_chars
        self._redact = redact

    # ----------------------------------------------------------------- classify

    def _sink(self, action: Action) -> tuple[str, str, str, list[Target]] | None:
        """(sink name, class, text to check, targets) or None if not a sink."""
        if isinstance(action, ToolCall):
            if action.tool not in self.sinks:
                return None
            names = self.targets.get(action.tool, ())
            targets = [(v, u, un, fr) for n, links, u, un, fr in names if n in action.args
                       for s in strings(action.args[n])
                       for v in (links_in(s) if links else (s,))]
            # argument values only: the argument names are not data the call carries
            text = "\n".join(strings(list(action.args.values())))
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
            targets = ([(action.url, self.provenance, self.unseen, Verdict.ALLOW)]
                       if action.method.upper() in _BODY_METHODS else [])
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
            # the session has seen nothing: nothing can leak, but every target is unseen
            return self._unseen_only(sink, targets)
        if store.full():
            return Outcome((Finding(
                self.name, "flow.store_full",
                f"{sink}: this session's flow store is full (flow.store.max_entries); what "
                "it read since is not tracked, so no sink call is allowed; start a new "
                "session", Verdict.DENY, evidence=sink, severity=Severity.HIGH),))
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
        for value, if_untrusted, if_unseen, if_results in targets:
            if Verdict.ALLOW == if_untrusted == if_unseen == if_results:
                continue
            in_untrusted, in_trusted, in_input = self._origin(store, value)
            if in_untrusted and not in_trusted and if_untrusted != Verdict.ALLOW:
                findings.append(self._target_finding(
                    sink, value, "flow.untrusted_target", if_untrusted,
                    "appears only in untrusted content this session read (it may be an "
                    "attacker's); name it in the task or user input to allow"))
            elif not in_untrusted and not in_trusted and if_unseen != Verdict.ALLOW:
                findings.append(self._unseen_finding(sink, value, if_unseen))
            elif in_trusted and not in_input and if_results != Verdict.ALLOW:
                findings.append(self._target_finding(
                    sink, value, "flow.target_not_in_input", if_results,
                    "was not named in the user's request (it was picked from results); "
                    "this target needs the user to name it (targets.<tool>.<arg>."
                    "from_results)"))
        return Outcome(tuple(findings)) if findings else None

    # ----------------------------------------------------------------- provenance

    def _origin(self, store: FlowStore, value: str) -> tuple[bool, bool, bool]:
        """(seen in untrusted content, in trusted content, in the trusted input) for one
        target value: its exact forms (address, URL, host, token) or its word sequence."""
        keys = target_keys(value)
        spans, multi = target_spans(value, self.words)
        probe = [*keys, *spans, OVERFLOW_KEY] if multi else keys
        u, t, i = store.target_hits(probe)
        n = len(keys)
        in_u, in_t, in_i = any(u[:n]), any(t[:n]), any(i[:n])
        if multi:
            span_u, span_t, span_i = u[n:-1], t[n:-1], i[n:-1]
            in_u = in_u or (bool(span_u) and all(span_u))
            in_t = in_t or (bool(span_t) and all(span_t))
            in_i = in_i or (bool(span_i) and all(span_i))
            if not in_t and not in_u and u[-1]:
                # an untrusted result was longer than the span scan: the name may be in
                # the part not scanned, so it counts as untrusted (fail closed)
                in_u = True
        return in_u, in_t, in_i

    def _target_finding(self, sink: str, value: str, rule: str, verdict: Verdict,
                        why: str) -> Finding:
        shown = self._redact(value)[:200]
        return Finding(self.name, rule, f"{sink}: the destination {shown!r} {why}",
                       verdict, evidence=shown, severity=Severity.HIGH)

    def _unseen_finding(self, sink: str, value: str, verdict: Verdict) -> Finding:
        return self._target_finding(
            sink, value, "flow.unseen_target", verdict,
            "appears nowhere this session — not in the user's input, not in any result "
            "(invented or obfuscated); name it in the task or user input to allow "
            "(flow.provenance_unseen)")

    def _unseen_only(self, sink: str, targets: list[Target]) -> Outcome | None:
        findings = [self._unseen_finding(sink, v, un) for v, _u, un, _r in targets
                    if un != Verdict.ALLOW]
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
