"""Policy section `secrets:` (see the secrets room for what it drives)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SecretsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
