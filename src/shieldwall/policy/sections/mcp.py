"""Policy section `mcp:` (see the mcp room for what it drives)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class McpSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
