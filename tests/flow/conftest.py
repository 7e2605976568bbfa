"""Fixtures for the flow tests (helpers live in ``flowkit.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flowkit import POLICY, Sent, make_wall

from shieldwall import Shieldwall


@pytest.fixture
def wall_and_sent(tmp_path: Path) -> tuple[Shieldwall, Sent]:
    return make_wall(tmp_path)


@pytest.fixture
def factory(tmp_path: Path) -> Callable[..., tuple[Shieldwall, Sent]]:
    def f(policy_text: str = POLICY, **kw: Any) -> tuple[Shieldwall, Sent]:
        return make_wall(tmp_path, policy_text, **kw)

    return f
