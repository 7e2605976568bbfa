from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    """Where a test server records the requests it received."""
    return tmp_path / "received.jsonl"
