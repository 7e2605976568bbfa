"""Policy section `flow:` (see the flow room for what it drives)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FlowSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
