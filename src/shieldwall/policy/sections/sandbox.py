"""Policy section `sandbox:` (see the sandbox room for what it drives)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SandboxSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
