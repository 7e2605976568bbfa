"""The egress layer: the gate asks it about every ``Egress`` action (and every call of the
built-in ``http_request`` tool); on model output it takes out links to hosts that are not
allowed. ``build(wall)`` is how the wall gets it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..actions import Action, Egress, Finding, ModelOutput, Severity, ToolCall, Verdict
from ..layers import ORDER_EGRESS, Layer, Outcome
from .http_tool import TOOL_NAME
from .markdown import strip_disallowed_urls
from .policy import LAYER, EgressPolicy

if TYPE_CHECKING:
    from ..session import SessionState
    from ..wall import Shieldwall


def tool_call_as_egress(call: ToolCall) -> Egress:
    """The request an ``http_request`` tool call would make (its first hop)."""
    a = call.args
    headers = a.get("headers") or {}
    body = a.get("body") or ""
    return Egress(
        method=str(a.get("method") or "GET").upper(),
        url=str(a.get("url") or ""),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        body=body.encode("utf-8") if isinstance(body, str) else bytes(body),
    )


class EgressLayer:
    """Destination, method, size and content checks for outbound requests."""

    name = LAYER
    order = ORDER_EGRESS
    kinds = frozenset({Egress.kind, ToolCall.kind, ModelOutput.kind})

    def __init__(
        self,
        policy: EgressPolicy,
        live_secrets: Callable[[], Iterable[str]] | None = None,
        tool_name: str = TOOL_NAME,
        output_urls: str = "links",
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.policy = policy
        self.live_secrets = live_secrets
        self.redact = redact
        self.tool_name = tool_name
        self.output_urls = output_urls

    def check(self, action: Action, session: SessionState) -> Outcome | None:
        if isinstance(action, Egress):
            req = action
        elif isinstance(action, ToolCall):
            if action.tool != self.tool_name:
                return None
            req = tool_call_as_egress(action)
        elif isinstance(action, ModelOutput):
            return self._output(action)
        else:
            return None
        methods = getattr(getattr(session, "effective", None), "http_methods", None)
        findings = self.policy.check(req, session.role, self.live_secrets, methods=methods)
        if self.redact is not None and self.policy.section.inspect.secrets and not any(
            f.rule == "egress.secret_in_request" for f in findings
        ):
            f = self._redactor_finding(req)
            if f is not None:
                findings.append(f)
        return Outcome(tuple(findings)) if findings else None

    def _redactor_finding(self, req: Egress) -> Finding | None:
        """The secrets room's redactor knows every live value (and its encodings): text it
        would change carries one."""
        assert self.redact is not None
        parts = [("url", req.url)] + [(f"header {k}", v) for k, v in req.headers.items()
                                      if k.lower() not in self.policy.inspector.ignore]
        if req.body:
            parts.append(("body", req.body.decode("latin-1")))
        for where, text in parts:
            if text and self.redact(text) != text:
                return Finding(
                    LAYER, "egress.secret_in_request",
                    f"a live secret found in the request {where} (by the secrets room's "
                    "redactor); secrets may not leave through egress",
                    Verdict.DENY, evidence=f"{where}: live secret", severity=Severity.CRITICAL,
                )
        return None

    def _output(self, action: ModelOutput) -> Outcome | None:
        if self.output_urls == "off" or ("://" not in action.text and "www." not in action.text):
            return None
        text, removed = strip_disallowed_urls(
            action.text, self.policy.allows, images_only=self.output_urls == "images"
        )
        if not removed:
            return None
        hosts = sorted({_host(r.url) for r in removed})
        f = Finding(
            LAYER, "egress.url_removed",
            f"{len(removed)} link(s)/image(s) to hosts not in egress.allow_hosts were removed "
            "from the model output",
            Verdict.CHANGES, evidence=", ".join(hosts)[:200], severity=Severity.MEDIUM,
        )
        return Outcome((f,), ModelOutput(text))


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1][:80]


def egress_policy(wall: Any) -> EgressPolicy:
    """The wall's egress policy (one per wall: its DNS pins are shared by the layer, the
    proxy and the ``http_request`` tool)."""
    for layer in getattr(getattr(wall, "gate", None), "layers", []):
        if isinstance(layer, EgressLayer):
            return layer.policy
    return EgressPolicy.from_policy(wall.policy)


def build(wall: Shieldwall) -> list[Layer]:
    policy = EgressPolicy.from_policy(wall.policy)

    def live_secrets() -> Iterable[str]:
        # Looked up per call: the secrets room may install (or rotate) it after us.
        fn = getattr(wall, "live_secrets", None)
        return fn() if callable(fn) else ()

    layer = EgressLayer(policy, live_secrets=live_secrets,
                        output_urls=wall.policy.egress.output_urls,
                        redact=lambda text: wall.redact_text(text))
    if TOOL_NAME in wall.policy.tools and TOOL_NAME not in wall.tools:
        # The policy names the built-in tool: provide it (a later @wall.tool replaces it).
        register_http_tool(wall, policy=policy)
    return [layer]


def register_http_tool(wall: Shieldwall, name: str = TOOL_NAME,
                       policy: EgressPolicy | None = None) -> None:
    """Register the built-in ``http_request`` tool on ``wall`` (grant it to roles in the
    policy like any tool; the egress layer checks each call against ``egress:``).
    ``build`` does this by itself when the policy's ``tools:`` names ``http_request``."""
    from ..tools import spec_from_function
    from .http_tool import http_request_tool

    pol = policy if policy is not None else egress_policy(wall)
    wall.register_tool(spec_from_function(http_request_tool(pol), name))
