"""Real MCP servers that Shieldwall did not write: PyPI `mcp-server-time` and npm
`@modelcontextprotocol/server-everything` (the MCP project's reference servers).

They live outside the project venv (peer tools get their own environment):
    python -m venv .venv-mcppeers && .venv-mcppeers/bin/pip install mcp-server-time
    mkdir .venv-npm-peers && cd .venv-npm-peers && npm install @modelcontextprotocol/server-everything
Each test is skipped when its server is not installed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest
from mcp_helpers import gateway, stdio_session, text_of, write_policy

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]
TIME = ROOT / ".venv-mcppeers" / "bin" / "mcp-server-time"
EVERYTHING = ROOT / ".venv-npm-peers" / "node_modules" / ".bin" / "mcp-server-everything"


def _need(p: Path) -> None:
    if not p.exists():
        pytest.skip(f"{p.name} is not installed (see this module's docstring)")


def test_mcp_server_time_through_the_gateway(tmp_path: Path) -> None:
    _need(TIME)
    pol = write_policy(tmp_path, """
roles:
  clock:
    tools: [get_current_time]
tools:
  get_current_time:
    args:
      timezone: {enum: [UTC, Europe/Oslo]}
mcp:
  pin: tofu
""")
    argv = gateway("wrap", "--policy", str(pol), "--agent", "a", "--role", "clock", "--",
                   str(TIME))

    async def main() -> None:
        with anyio.fail_after(60):
            async with stdio_session(argv) as s:
                assert [t.name for t in (await s.list_tools()).tools] == ["get_current_time"]
                res = await s.call_tool("get_current_time", {"timezone": "UTC", "x": "y"})
                assert not res.is_error, text_of(res)
                assert json.loads(text_of(res))["timezone"] == "UTC"
                off_list = await s.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
                assert off_list.is_error and "args." in text_of(off_list)
                other = await s.call_tool("convert_time", {
                    "source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"})
                assert other.is_error and "policy.tool_not_in_role" in text_of(other)

    anyio.run(main)
    lock = json.loads((tmp_path / "shieldwall.lock").read_text())
    (server,) = lock["servers"].values()  # tofu pinned the real server's manifest
    assert set(server["tools"]) == {"get_current_time", "convert_time"}


def test_server_everything_through_the_gateway(tmp_path: Path) -> None:
    _need(EVERYTHING)
    pol = write_policy(tmp_path, """
roles:
  dev:
    tools: [echo, get-sum, get-env, trigger-long-running-operation]
tools:
  get-env:
    approval: {reason: "environment may hold secrets"}
mcp:
  pin: tofu
""")
    argv = gateway("wrap", "--policy", str(pol), "--agent", "a", "--role", "dev", "--",
                   str(EVERYTHING))

    async def main() -> None:
        with anyio.fail_after(60):
            async with stdio_session(argv) as s:
                names = sorted(t.name for t in (await s.list_tools()).tools)
                assert names == ["echo", "get-env", "get-sum", "trigger-long-running-operation"]
                echo = await s.call_tool("echo", {"message": "hi", "extra": 1})
                assert not echo.is_error and "hi" in text_of(echo)
                total = await s.call_tool("get-sum", {"a": 2, "b": 3})
                assert "5" in text_of(total)
                env = await s.call_tool("get-env", {})  # needs approval; nobody answers
                assert env.is_error and "approval." in text_of(env)
                tiny = await s.call_tool("get-tiny-image", {})
                assert tiny.is_error and "policy.tool_not_in_role" in text_of(tiny)
                progress: list[float] = []

                async def on_progress(p: float, total: float | None, msg: str | None) -> None:
                    progress.append(p)

                done = await s.call_tool("trigger-long-running-operation",
                                         {"duration": 1, "steps": 2}, progress_callback=on_progress)
                assert not done.is_error
                assert progress == [1.0, 2.0]  # the server's progress reaches this request
                res = await s.list_resources()
                assert res.resources
                prompts = await s.list_prompts()
                assert prompts.prompts

    anyio.run(main)


def test_scan_of_the_reference_servers_is_clean(tmp_path: Path) -> None:
    _need(TIME)
    _need(EVERYTHING)
    cfg = tmp_path / "mcp.json"
    cfg.write_text(json.dumps({"mcpServers": {"time": {"command": str(TIME)},
                                              "everything": {"command": str(EVERYTHING)}}}))
    out = subprocess.run(gateway("scan", "--json", str(cfg)), capture_output=True, text=True,
                         timeout=80)
    report = json.loads(out.stdout)
    assert [s["error"] for s in report["servers"]] == [None, None]
    assert report["findings"] == [] and out.returncode == 0
