"""Policy section `flow:` — which labelled data may reach which sinks.

Drives the flow room (``shieldwall.flow``). Tool results are labelled by
``tools.<name>.result`` (sensitivity, trusted); a tool marked ``sink: true`` (or named in
``sinks`` here) and every egress request is checked against what the session has seen.

Label rules use *most specific* semantics: data labelled L meets the rule with the highest
``from`` that is ≤ L (so ``internal → external: deny`` plus ``confidential → external:
ask`` asks for confidential and restricted data, and denies internal data).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Label = Literal["public", "internal", "confidential", "restricted"]
SinkClass = Literal["external", "internal"]
FlowVerdict = Literal["allow", "ask", "deny"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FlowRule(_Strict):
    """One blocked (or allowed) flow. Name a source (``from`` label or ``from_tool``) and a
    destination (``to`` sink class or ``to_tool``)."""

    from_: Label | None = Field(default=None, alias="from", description="data label (at least)")
    from_tool: str | None = Field(default=None, description="data that came from this tool")
    to: SinkClass | None = Field(default=None, description="sink class")
    to_tool: str | None = Field(default=None, description="this sink tool")
    action: FlowVerdict = "deny"

    @model_validator(mode="after")
    def _sides(self) -> FlowRule:
        if self.from_ is None and self.from_tool is None:
            raise ValueError("a flow rule needs `from` (a label) or `from_tool`")
        if self.to is None and self.to_tool is None:
            raise ValueError("a flow rule needs `to` (external/internal) or `to_tool`")
        return self


def _default_rules() -> list[FlowRule]:
    return [
        FlowRule.model_validate({"from": "internal", "to": "external", "action": "ask"}),
        FlowRule.model_validate({"from": "confidential", "to": "external", "action": "deny"}),
    ]


class Trifecta(_Strict):
    """The lethal trifecta (untrusted input + private data + external communication)."""

    mode: Literal["off", "ask", "deny"] = Field(
        default="ask", description="what an external sink call gets once both were seen")
    private: Label = Field(default="confidential", description="lowest label that counts as private")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false


class Fingerprinting(_Strict):
    k: int = Field(default=3, ge=1, le=16, description="tokens per n-gram")
    window: int = Field(default=4, ge=1, le=64, description="winnowing window (n-grams)")
    min_matches: int = Field(
        default=2, ge=1, description="shared n-gram fingerprints needed to call a source copied")
    dense_tokens: int = Field(
        default=512, ge=0,
        description="results up to this many tokens keep every n-gram (no winnowing)")
    min_chars: int = Field(default=8, ge=1, description="shorter values are not remembered")
    secret_span_chars: int = Field(
        default=16, ge=8, description="key-like runs this long match on their own (exact span)")
    decode: bool = Field(default=True, description="also check base64/hex/URL-decoded forms")
    max_arg_chars: int = Field(
        default=1_000_000, ge=1024, description="longer sink arguments are refused, not scanned")


class FlowStore(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "shieldwall:flow:"
    ttl: float = Field(default=86400.0, gt=0, description="seconds a session's taint is kept")
    max_entries: int = Field(
        default=4_000_000, ge=1000,
        description="index entries (fingerprints + target keys) one session may hold; past "
        "it nothing more is remembered and every sink call is refused (flow.store_full): "
        "forgetting taint to make room would let old data leak, so the store fails closed")


class TargetCheck(_Strict):
    """Provenance verdicts for one target argument."""

    untrusted: FlowVerdict | None = Field(
        default=None, description="seen only in untrusted content (None: flow.provenance)")
    unseen: FlowVerdict | None = Field(
        default=None, description="seen nowhere this session (None: flow.provenance_unseen)")
    links: bool = Field(
        default=False,
        description="the argument is free text (a mail body): each link in it (URL or "
        "www. host) is checked as a target, not the whole value — whoever reads the "
        "text will follow them")
    from_results: FlowVerdict = Field(
        default="allow",
        description="seen in trusted results but not in the trusted input (the user's "
        "request): e.g. a booking of a catalogue entry the user did not name")


def _target_map(v: object) -> object:
    """``targets.<tool>`` is a list of argument names (global verdicts) or a map from
    argument name to a verdict (for untrusted origin) or to ``{untrusted, unseen}``."""
    if isinstance(v, list):
        return {str(n): {} for n in v}
    if isinstance(v, dict):
        return {str(n): {"untrusted": c} if isinstance(c, str) else ({} if c is None else c)
                for n, c in v.items()}
    return v


class FlowSection(_Strict):
    enabled: bool = True
    rules: list[FlowRule] = Field(default_factory=_default_rules)
    sinks: dict[str, SinkClass] = Field(
        default_factory=dict,
        description="sink class per tool (tools with sink: true default to external)")
    internal_hosts: list[str] = Field(
        default_factory=list, description="egress hosts that count as internal sinks")
    trifecta: Trifecta = Field(default_factory=Trifecta)
    targets: dict[str, dict[str, TargetCheck]] = Field(
        default_factory=dict,
        description="per sink tool, the arguments that name where data goes (to, url, "
        "channel): a list of names, or name -> verdict / {untrusted: V, unseen: V}")
    provenance: FlowVerdict = Field(
        default="deny", description="a target taken from untrusted data gets this verdict")
    provenance_unseen: FlowVerdict = Field(
        default="allow",
        description="a target seen nowhere this session (not in the user's input, not in "
        "any result: invented or obfuscated) gets this verdict")
    trusted_fields: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per tool, result fields whose values the system writes (a mail's "
        "sender, an event's participants, a file's shared_with): targets found there count "
        "as trusted even when the rest of the result is third-party text. A name matches "
        "that key at any depth; a dotted path (a.b) matches nested keys")
    target_words: int = Field(
        default=6, ge=1, le=16,
        description="targets of up to this many words (hotel or company names) are matched "
        "as word sequences against what the session read")
    target_scan_tokens: int = Field(
        default=2_000, ge=0,
        description="words per result scanned for multi-word targets (each adds up to "
        "target_words - 1 index entries). A multi-word target not found in trusted text "
        "counts as untrusted once any untrusted result was longer than this (the name may "
        "sit in the part not scanned)")

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, v: object) -> object:
        if isinstance(v, dict):
            return {k: _target_map(x) for k, x in v.items()}
        return v
    untrusted_default: bool = Field(
        default=True, description="results of tools the policy does not describe are untrusted")
    fingerprint: Fingerprinting = Field(default_factory=Fingerprinting)
    store: FlowStore = Field(default_factory=FlowStore)
