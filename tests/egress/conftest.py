"""Fixtures for the egress tests (helpers live in egress_kit, importable by name)."""

from egress_kit import *  # noqa: F403 - re-export fixtures to pytest
