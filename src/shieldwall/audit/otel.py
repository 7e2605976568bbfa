"""Export the audit trail as OpenTelemetry spans, so any OTLP collector (LangSmith,
Langfuse, Arize Phoenix, Jaeger ...) can show what agents did.

One span per session (``invoke_agent {agent}``) and one child span per entry. Names and
attributes follow the OpenTelemetry GenAI semantic conventions where one exists:
``gen_ai.operation.name`` (``invoke_agent`` / ``execute_tool``), ``gen_ai.agent.name``,
``gen_ai.conversation.id`` (the session), ``gen_ai.tool.name``,
``gen_ai.tool.call.arguments`` (the redacted arguments, as JSON). Everything
Shieldwall-specific is under ``shieldwall.*``: verdict, rules, event, audit seq and leaf
hash (so a span can be checked against the signed log). Each finding is a span event
``shieldwall.finding``; a denied action has status ERROR.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .store import entry_time

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

TOOL_KINDS = frozenset({"tool_call", "tool_result", "code_run"})


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _duration_ns(ms: Any) -> int:
    try:
        return max(0, round(float(ms) * 1_000_000))
    except (TypeError, ValueError):
        return 0


def _attrs(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != ""}


def export_spans(
    records: Iterable[tuple[int, dict[str, Any], bytes]],
    exporter: SpanExporter,
    *,
    service_name: str = "shieldwall",
    log_id: str | None = None,
) -> int:
    """Export ``(seq, entry, leaf_hash)`` records as spans; returns the spans sent."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    sessions: dict[str, list[tuple[int, dict[str, Any], bytes]]] = {}
    for rec in records:
        sessions.setdefault(str(rec[1].get("session") or "-"), []).append(rec)

    resource = Resource.create(_attrs({"service.name": service_name, "shieldwall.audit.log_id": log_id}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=512))
    tracer = provider.get_tracer("shieldwall.audit")
    now = time.time()
    sent = 0
    try:
        for session, recs in sessions.items():
            first = recs[0][1]
            times = [_ns(entry_time(e.get("time")) or now) for _, e, _ in recs]
            ends = [t + _duration_ns(e.get("duration_ms")) for t, (_, e, _) in zip(times, recs, strict=True)]
            agent = first.get("agent")
            root = tracer.start_span(
                f"invoke_agent {agent}" if agent else "invoke_agent",
                start_time=min(times),
                attributes=_attrs({
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": agent,
                    "gen_ai.conversation.id": session,
                    "shieldwall.role": first.get("role"),
                    "shieldwall.task": first.get("task"),
                    "shieldwall.audit.entries": len(recs),
                }),
            )
            ctx = trace.set_span_in_context(root)
            denied = 0
            for (seq, e, leaf_hash), t, end in zip(recs, times, ends, strict=True):
                kind = str(e.get("kind") or "action")
                tool = e.get("tool")
                is_tool = kind in TOOL_KINDS
                findings = [f for f in (e.get("findings") or []) if isinstance(f, dict)]
                rules = [str(f.get("rule")) for f in findings if f.get("rule")]
                args = e.get("args")
                span = tracer.start_span(
                    f"execute_tool {tool}" if is_tool and tool else f"{kind} {tool or ''}".strip(),
                    context=ctx,
                    start_time=t,
                    attributes=_attrs({
                        "gen_ai.operation.name": "execute_tool" if is_tool else None,
                        "gen_ai.tool.name": tool if is_tool else None,
                        "gen_ai.agent.name": agent,
                        "gen_ai.conversation.id": session,
                        "gen_ai.tool.call.arguments": json.dumps(args, sort_keys=True) if args is not None else None,
                        "shieldwall.action.kind": kind,
                        "shieldwall.target": tool if not is_tool else None,
                        "shieldwall.event": e.get("event"),
                        "shieldwall.verdict": e.get("verdict"),
                        "shieldwall.rules": rules or None,
                        "shieldwall.result_digest": e.get("result_digest"),
                        "shieldwall.duration_ms": e.get("duration_ms"),
                        "shieldwall.audit.seq": seq,
                        "shieldwall.audit.leaf_hash": leaf_hash.hex() if leaf_hash else None,
                    }),
                )
                for f in findings:
                    span.add_event("shieldwall.finding", attributes=_attrs({
                        "shieldwall.layer": f.get("layer"), "shieldwall.rule": f.get("rule"),
                        "shieldwall.message": f.get("message"), "shieldwall.verdict": f.get("verdict"),
                    }), timestamp=t)
                if e.get("verdict") == "deny":
                    denied += 1
                    span.set_status(Status(StatusCode.ERROR, "denied: " + ", ".join(rules)))
                span.end(end_time=max(end, t))
                sent += 1
            root.set_attribute("shieldwall.denied", denied)
            root.end(end_time=max(ends))
            sent += 1
    finally:
        provider.force_flush()
        provider.shutdown()
    return sent


def leaf_hash_of(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()
