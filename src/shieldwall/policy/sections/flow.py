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


class FlowSection(_Strict):
    enabled: bool = True
    rules: list[FlowRule] = Field(default_factory=_default_rules)
    sinks: dict[str, SinkClass] = Field(
        default_factory=dict,
        description="sink class per tool (tools with sink: true default to external)")
    internal_hosts: list[str] = Field(
        default_factory=list, description="egress hosts that count as internal sinks")
    trifecta: Trifecta = Field(default_factory=Trifecta)
    targets: dict[str, list[str]] = Field(
        default_factory=dict,
        description="per sink tool, the arguments that name where data goes (to, url, channel)")
    provenance: FlowVerdict = Field(
        default="deny", description="a target taken from untrusted data gets this verdict")
    untrusted_default: bool = Field(
        default=True, description="results of tools the policy does not describe are untrusted")
    fingerprint: Fingerprinting = Field(default_factory=Fingerprinting)
    store: FlowStore = Field(default_factory=FlowStore)
