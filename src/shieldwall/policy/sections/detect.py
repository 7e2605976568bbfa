"""Policy section `detect:` (see the detect room for what it drives)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DetectSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
