"""The stdio gateway, driven by the SDK's client through `shieldwall mcp wrap`."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp_helpers import (
    calls,
    gateway,
    server_cmd,
    stdio_session,
    text_of,
    write_policy,
)

pytestmark = pytest.mark.timeout(60)

POLICY = """
roles:
  reader:
    tools: [echo, add, fetch_page, big, crash]
tools:
  fetch_page:
    result: {trusted: false}
mcp:
  pin: "off"
  max_result_bytes: 65536
"""


def wrap(policy: Path, server: list[str], role: str = "reader", *extra: str) -> list[str]:
    return gateway("wrap", "--policy", str(policy), "--agent", "tester", "--role", role,
                   *extra, "--", *server)


def test_allowed_call_reaches_server_with_undeclared_args_stripped(tmp_path: Path, rec: Path) -> None:
    pol = write_policy(tmp_path, POLICY)

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("benign", rec))) as s:
                res = await s.call_tool("echo", {"text": "hello", "exfil": "secret-data"})
                assert not res.is_error
                assert text_of(res) == "hello"

    anyio.run(main)
    got = calls(rec)
    assert got == [{"method": "tools/call", "tool": "echo", "args": {"text": "hello"}}]


def test_denied_call_never_reaches_server_and_proxy_keeps_serving(tmp_path: Path, rec: Path) -> None:
    pol = write_policy(tmp_path, POLICY)

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("benign", rec))) as s:
                denied = await s.call_tool("delete_all", {})
                assert denied.is_error
                assert "policy.tool_not_in_role" in text_of(denied)
                assert denied.meta["shieldwall"]["rules"] == ["policy.tool_not_in_role"]
                bad = await s.call_tool("add", {"a": "one", "b": 2})
                assert bad.is_error and "args.invalid" in text_of(bad)
                ok = await s.call_tool("add", {"a": 1, "b": 2})
                assert text_of(ok) == "3"

    anyio.run(main)
    assert [c["tool"] for c in calls(rec)] == ["add"]
    assert calls(rec)[0]["args"] == {"a": 1, "b": 2}


def test_lists_are_filtered_and_resources_and_prompts_relayed(tmp_path: Path, rec: Path) -> None:
    pol = write_policy(tmp_path, POLICY)

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("benign", rec))) as s:
                # delete_all exists upstream but is not granted to reader: not listed
                assert sorted(t.name for t in (await s.list_tools()).tools) == ["add", "echo"]
                rs = await s.list_resources()
                assert [str(r.uri) for r in rs.resources] == ["file:///docs/readme.txt"]
                rd = await s.read_resource("file:///docs/readme.txt")
                assert rd.contents[0].text == "Shieldwall test resource."
                ps = await s.list_prompts()
                assert [p.name for p in ps.prompts] == ["greet"]
                pr = await s.get_prompt("greet")
                assert pr.messages[0].content.text == "Say hello politely."

    anyio.run(main)


def test_huge_result_is_truncated_to_the_cap(tmp_path: Path, rec: Path) -> None:
    pol = write_policy(tmp_path, POLICY)

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("leaky", rec))) as s:
                res = await s.call_tool("big", {"kb": 512})  # 512 KiB of text
                body = text_of(res)
                assert len(body.encode()) < 70_000
                assert "result truncated" in body

    anyio.run(main)


def test_server_crash_mid_call_is_reported_and_proxy_recovers(tmp_path: Path, rec: Path) -> None:
    pol = write_policy(tmp_path, POLICY)
    log = tmp_path / "gateway.log"

    async def main() -> None:
        with anyio.fail_after(50), log.open("w") as errlog:
            async with stdio_session(wrap(pol, server_cmd("leaky", rec)), errlog=errlog) as s:
                res = await s.call_tool("crash", {})
                assert res.is_error
                assert "down" in text_of(res) or "restart" in text_of(res)
                again = await s.call_tool("echo", {"text": "still here"})
                assert not again.is_error and text_of(again) == "still here"

    anyio.run(main)
    assert [c["tool"] for c in calls(rec)] == ["crash", "echo"]
    assert "restarting" in log.read_text()


def test_results_pass_the_result_layers(tmp_path: Path, rec: Path) -> None:
    """Untrusted results are scanned (an injection is refused: the detect room's default)
    and benign untrusted text comes back inside the session's spotlight boundary."""
    pytest.importorskip("shieldwall.detect.layer")
    pol = write_policy(tmp_path, """
roles:
  reader:
    tools: [fetch_page, echo]
tools:
  fetch_page:
    result: {trusted: false}
  echo:
    result: {trusted: false}
mcp:
  pin: "off"
""")

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("leaky", rec))) as s:
                res = await s.call_tool("fetch_page", {"url": "https://example.com"})
                assert res.is_error
                assert any(r.startswith("detect.injection") for r in res.meta["shieldwall"]["rules"])
                assert "ignore all previous instructions" not in text_of(res)
                plain = await s.call_tool("echo", {"text": "Quarterly numbers attached."})
                body = text_of(plain)
                assert not plain.is_error
                assert body.startswith("<<") and "source=echo" in body
                assert "Quarterly numbers attached." in body

    anyio.run(main)
    assert [c["tool"] for c in calls(rec)] == ["fetch_page", "echo"]


def test_call_waits_for_a_person_and_runs_once_approved(tmp_path: Path, rec: Path) -> None:
    from shieldwall.approvals import ApprovalQueue
    from shieldwall.policy.load import load_policy
    from shieldwall.wall import open_approval_backend

    pol = write_policy(tmp_path, f"""
roles:
  reader:
    tools: [echo, add]
tools:
  add:
    approval: {{reason: a person confirms each addition}}
mcp:
  pin: "off"
approvals:
  store: sqlite
  path: {tmp_path / 'approvals.db'}
  timeout: 30
""")
    queue = ApprovalQueue(backend=open_approval_backend(load_policy(pol), tmp_path))
    seen: list[dict[str, object]] = []

    async def approver() -> None:
        while True:
            pending = queue.pending()
            if pending:
                req = pending[0]
                seen.append({"tool": req.tool, "args": req.preview})
                queue.resolve(req.id, True, approver="test-person")
                return
            await anyio.sleep(0.1)

    async def main() -> None:
        with anyio.fail_after(50):
            async with stdio_session(wrap(pol, server_cmd("benign", rec))) as s:
                assert calls(rec) == []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(approver)
                    res = await s.call_tool("add", {"a": 2, "b": 40})
                assert not res.is_error, text_of(res)
                assert text_of(res) == "42"

    anyio.run(main)
    assert seen == [{"tool": "add", "args": {"a": 2, "b": 40}}]
    assert calls(rec) == [{"method": "tools/call", "tool": "add", "args": {"a": 2, "b": 40}}]


def test_secret_resolved_after_the_gate_and_redacted_from_the_result(tmp_path: Path, rec: Path) -> None:
    """The model passes a placeholder; the real key is put in only for the upstream call
    and is redacted when the server echoes it back (secrets room's result layer)."""
    pytest.importorskip("shieldwall.secrets.layer")
    key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    pol = write_policy(tmp_path, """
roles:
  reader:
    tools: [login]
secrets:
  grants:
    login: [billing/api_key]
mcp:
  pin: "off"
""")

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(wrap(pol, server_cmd("leaky", rec)),
                                     env={"SHIELDWALL_SECRET_BILLING_API_KEY": key}) as s:
                res = await s.call_tool("login", {"api_key": "{{secret:billing/api_key}}"})
                assert not res.is_error, text_of(res)
                assert key not in text_of(res)
                assert "[REDACTED]" in text_of(res) and "account 42" in text_of(res)
                raw = await s.call_tool("login", {"api_key": key})  # the live value itself
                assert raw.is_error and "secrets.live_value_in_args" in text_of(raw)

    anyio.run(main)
    assert calls(rec) == [{"method": "tools/call", "tool": "login", "args": {"api_key": key}}]


def test_a_2026_protocol_client_is_gated_too(tmp_path: Path, rec: Path) -> None:
    """The SDK's high-level Client negotiates the stateless 2026-07-28 protocol
    (server/discover, per-request envelope); the gateway serves that era as well."""
    import os
    import sys

    from mcp import Client, StdioServerParameters

    pol = write_policy(tmp_path, POLICY)
    argv = wrap(pol, server_cmd("benign", rec))
    params = StdioServerParameters(command=argv[0], args=argv[1:],
                                   env={"PYTHONPATH": os.pathsep.join(sys.path)})

    async def main() -> None:
        with anyio.fail_after(40):
            async with Client(params) as c:
                assert c.protocol_version == "2026-07-28"
                assert sorted(t.name for t in (await c.list_tools()).tools) == ["add", "echo"]
                ok = await c.call_tool("echo", {"text": "modern", "smuggled": True})
                assert text_of(ok) == "modern"
                denied = await c.call_tool("delete_all", {})
                assert denied.is_error and "policy.tool_not_in_role" in text_of(denied)

    anyio.run(main)
    assert calls(rec) == [{"method": "tools/call", "tool": "echo", "args": {"text": "modern"}}]
