"""OpenTelemetry export: checked with the SDK's in-memory exporter and with a real
OTLP/HTTP receiver on loopback (a tiny HTTP server in the test that decodes the
protobuf request with opentelemetry-proto)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from shieldwall.audit.otel import export_spans

from .conftest import make_entry


def records(n: int) -> list[tuple[int, dict[str, Any], bytes]]:
    return [(i, make_entry(i), hashlib.sha256(str(i).encode()).digest()) for i in range(n)]


def test_one_span_per_session_and_one_child_per_action() -> None:
    exp = InMemorySpanExporter()
    sent = export_spans(records(9), exp, log_id="log-1")
    spans = exp.get_finished_spans()
    assert sent == len(spans) == 9 + 3
    roots = [s for s in spans if s.parent is None]
    assert sorted(s.attributes["gen_ai.conversation.id"] for s in roots) == ["s0", "s1", "s2"]  # type: ignore[index]
    for r in roots:
        assert r.attributes["gen_ai.operation.name"] == "invoke_agent"  # type: ignore[index]
        kids = [s for s in spans if s.parent is not None and s.parent.span_id == r.context.span_id]
        assert len(kids) == 3
        assert all(k.context.trace_id == r.context.trace_id for k in kids)
        assert r.start_time <= min(k.start_time for k in kids)  # type: ignore[operator]
        assert r.end_time >= max(k.end_time for k in kids)  # type: ignore[operator]
    assert roots[0].resource.attributes["shieldwall.audit.log_id"] == "log-1"


def test_action_spans_carry_genai_and_shieldwall_attributes() -> None:
    exp = InMemorySpanExporter()
    export_spans(records(4), exp)
    by_seq = {s.attributes.get("shieldwall.audit.seq"): s for s in exp.get_finished_spans()}  # type: ignore[union-attr]
    deny = by_seq[0]
    assert deny.name == "execute_tool lookup"
    a = deny.attributes
    assert a is not None
    assert a["gen_ai.operation.name"] == "execute_tool"
    assert a["gen_ai.tool.name"] == "lookup"
    assert a["gen_ai.agent.name"] == "ops-bot"
    assert a["shieldwall.verdict"] == "deny"
    assert tuple(a["shieldwall.rules"]) == ("policy.tool_not_in_role",)  # type: ignore[arg-type]
    assert a["shieldwall.audit.leaf_hash"] == hashlib.sha256(b"0").hexdigest()
    assert '"order_id": "ORD-1000"' in str(a["gen_ai.tool.call.arguments"])
    assert deny.status.status_code == StatusCode.ERROR
    assert [e.name for e in deny.events] == ["shieldwall.finding"]
    assert by_seq[1].status.status_code != StatusCode.ERROR
    assert (deny.end_time - deny.start_time) == 500_000  # type: ignore[operator]  # duration_ms 0.5


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        type(self).got.append((self.path, self.headers.get("Content-Type"), req))
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Any]]]:
    _Receiver.got = []
    srv = HTTPServer(("127.0.0.1", 0), _Receiver)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1/traces", _Receiver.got
    srv.shutdown()
    srv.server_close()


def test_spans_reach_a_real_otlp_http_receiver(receiver: tuple[str, list[Any]]) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    url, got = receiver
    export_spans(records(6), OTLPSpanExporter(endpoint=url), service_name="sw-test")
    assert got and all(p == "/v1/traces" and ct == "application/x-protobuf" for p, ct, _ in got)
    spans = [s for _, _, req in got for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 6 + 3
    services = {a.value.string_value for _, _, req in got for rs in req.resource_spans
                for a in rs.resource.attributes if a.key == "service.name"}
    assert services == {"sw-test"}
    tool_spans = [s for s in spans if s.name.startswith("execute_tool")]
    attrs = {a.key: a.value for a in tool_spans[0].attributes}
    assert attrs["gen_ai.operation.name"].string_value == "execute_tool"
    assert "shieldwall.audit.seq" in attrs
    ids = {s.span_id for s in spans}
    assert all(s.parent_span_id in ids for s in tool_spans)
