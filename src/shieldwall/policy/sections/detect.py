"""Policy section `detect:` — content scanning of what enters and leaves the model.

The detect room (``shieldwall.detect.layer``) reads it. Inputs (user turns, documents,
tool results) are scanned for injected instructions; outputs (model replies, tool-call
arguments) for canary, secret, PII, exfiltration-URL and system-prompt leaks. An empty
section gives the defaults below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OnFinding = Literal["deny", "ask", "annotate"]
PiiKind = Literal["card", "iban", "email", "phone"]
Channel = Literal["input", "result", "output"]


def _default_pii() -> list[PiiKind]:
    return ["card", "iban"]


def _default_channels() -> list[Channel]:
    return ["input", "result"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InjectionSettings(_Strict):
    threshold: float = Field(default=0.5, gt=0, lt=1,
                             description="combined score (0.5 = the model card's 1%-FPR threshold)")
    rule_threshold: float = Field(default=0.7, gt=0, lt=1,
                                  description="noisy-or of heuristic rule weights")
    classifier: bool = Field(default=True, description="use the shipped n-gram classifier")
    decode: bool = Field(default=True, description="decode base64/hex/url/rot13 and rescan")
    encoder: bool = Field(
        default=False,
        description="in user prompts, let the shipped ONNX encoder settle the texts the n-gram classifier "
        "is unsure of (about 12% of prompts; ~20 ms each on one core; needs the detect-encoder extra). "
        "On the held-out test splits it lifts recall from 83% to 90% at 0.8% FPR; off by default because "
        "out of distribution it flags twice as many benign user prompts (3.0% against 1.5%) and needs "
        "onnxruntime (benchmarks/detect.md)")
    document_model: bool = Field(
        default=False,
        description="in tool results and documents let the document-channel classifier decide alone "
        "(more recall; out of distribution it also flags many clean documents, see benchmarks/detect.md); "
        "off: the prompt classifier counts there only when a heuristic rule agrees")


class InputSettings(_Strict):
    """`ModelInput` actions (user turns and documents given to the model)."""

    trusted: OnFinding = Field(default="annotate",
                               description="on injection in trusted input (the user's own turn)")
    untrusted: OnFinding = Field(default="deny", description="on injection in untrusted input")
    invisible_text: OnFinding = Field(default="annotate",
                                      description="on zero-width/bidi/tag characters")


class ResultSettings(_Strict):
    """`ToolResult` actions of tools whose result is marked `trusted: false`."""

    on_injection: Literal["deny", "ask", "annotate", "remove"] = Field(
        default="deny", description="deny: refuse the whole result; remove: withhold each "
        "string of the result that alone looks injected (a visible marker takes its place) and "
        "pass the rest, refusing the result when the injection cannot be isolated; ask; annotate")
    scan_trusted: bool = Field(default=False, description="also scan results of trusted tools")
    spotlight: bool = Field(default=True, description="wrap untrusted results in random delimiters")
    spotlight_mode: Literal["delimit", "datamark", "encode"] = "delimit"
    min_spotlight_chars: int = Field(default=1, ge=0, description="shorter strings are left as is")


class OutputSettings(_Strict):
    """`ModelOutput` actions and the arguments of `ToolCall` actions."""

    canary: bool = Field(default=True, description="deny when the session canary appears")
    secrets: bool = Field(default=True, description="detect-secrets plugins + live values")
    secrets_verdict: OnFinding = "deny"
    pii: list[PiiKind] = Field(default_factory=_default_pii)
    pii_verdict: Literal["deny", "ask", "annotate", "redact"] = "redact"
    exfil_urls: bool = Field(default=True, description="markdown/HTML images and data-carrying links")
    allowed_hosts: list[str] = Field(default_factory=list,
                                     description="hosts images and links may point to")
    exfil_verdict: OnFinding = "deny"
    blobs: OnFinding = Field(default="annotate", description="long high-entropy runs in replies")
    prompt_leak: bool = Field(default=True, description="overlap with the system prompt")
    prompt_leak_threshold: float = Field(default=0.25, gt=0, le=1)
    tool_args: Literal["all", "sinks", "off"] | bool = Field(
        default="sinks",
        description="scan tool-call arguments for leaks: 'all' tools, only 'sinks' (tools marked "
        "sink: true; other tools still get the cheap canary and live-secret checks), or 'off'")


class ExternalSettings(_Strict):
    """An external classifier behind an OpenAI-compatible endpoint. Off by default."""

    enabled: bool = False
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "meta-llama/Llama-Guard-3-1B"
    format: Literal["llama_guard", "prompt_guard"] = "llama_guard"
    timeout: float = Field(default=0.2, gt=0, description="seconds; keep below the layer budget")
    threshold: float = Field(default=0.5, gt=0, lt=1)
    api_key_env: str | None = Field(default=None, description="environment variable with a key")
    channels: list[Channel] = Field(default_factory=_default_channels)


class DetectSection(_Strict):
    enabled: bool = True
    injection: InjectionSettings = Field(default_factory=InjectionSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    results: ResultSettings = Field(default_factory=ResultSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    external: ExternalSettings = Field(default_factory=ExternalSettings)
    max_scan_chars: int = Field(
        default=65_536, ge=1024,
        description="characters scanned per text; the rest is not read (a finding says so). "
        "About 1 ms per 2 KB: keep the scan inside gate.layer_budget_ms")
