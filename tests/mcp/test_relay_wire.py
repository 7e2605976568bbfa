"""`shieldwall mcp wrap` on the wire: a client that writes JSON-RPC lines by hand, to pin
down what the SDK's client never does (odd ids, batches, garbage) against the relay."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp_helpers import calls, gateway, recorded, server_cmd, write_policy

pytestmark = pytest.mark.timeout(60)

POLICY = """
roles:
  reader:
    tools: [echo, add]
mcp:
  pin: "off"
"""


class Wire:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    def send(self, msg: Any) -> None:
        assert self.proc.stdin is not None
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
        self.proc.stdin.write(data + b"\n")

    async def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        assert line, "the gateway closed its stdout"
        return json.loads(line)

    async def answers(self, n: int) -> dict[Any, dict[str, Any]]:
        """The next ``n`` responses by id (notifications skipped)."""
        out: dict[Any, dict[str, Any]] = {}
        while len(out) < n:
            m = await self.recv()
            if "id" in m and "method" not in m:
                out[json.dumps(m["id"])] = m
        return out


async def _open(tmp_path: Path, rec: Path) -> Wire:
    pol = write_policy(tmp_path, POLICY)
    argv = gateway("wrap", "--policy", str(pol), "--agent", "t", "--role", "reader", "--",
                   *server_cmd("benign", rec))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return Wire(proc)


async def _close(w: Wire) -> int:
    assert w.proc.stdin is not None
    w.proc.stdin.close()
    return await asyncio.wait_for(w.proc.wait(), 20)


def test_client_ids_of_any_kind_come_back_as_sent(tmp_path: Path, rec: Path) -> None:
    """The relay renumbers requests toward the server (its own listing uses ids too);
    the client gets its own ids back, whatever their type, even when they clash with
    each other across types or with the gateway's."""

    async def main() -> None:
        w = await _open(tmp_path, rec)
        w.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "wire", "version": "0"}}})
        init = await w.recv()
        assert init["id"] == 1 and init["result"]["serverInfo"]["name"] == "benign-server"
        assert init["result"]["capabilities"]["tools"]["listChanged"] is True
        w.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        ids: list[Any] = [1, "1", 0, -7, 2**53, "x" * 40]
        for i, rid in enumerate(ids):
            w.send({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": f"call {i}"}}})
        got = await w.answers(len(ids))
        for i, rid in enumerate(ids):
            res = got[json.dumps(rid)]["result"]
            assert res["content"][0]["text"] == f"call {i}", (rid, res)
        # a 2025-03-26 batch; one member denied by the gate, one relayed untouched
        w.send([{"jsonrpc": "2.0", "id": "b1", "method": "tools/call",
                 "params": {"name": "delete_all", "arguments": {}}},
                {"jsonrpc": "2.0", "id": "b2", "method": "ping"}])
        got = await w.answers(2)
        assert got['"b1"']["result"]["isError"] is True
        assert "policy.tool_not_in_role" in got['"b1"']["result"]["content"][0]["text"]
        assert got['"b2"']["result"] == {}
        w.send(b"{this is not json")
        err = await w.recv()
        assert err["id"] is None and err["error"]["code"] == -32700
        w.send({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                "params": {"name": "add", "arguments": {"a": 40, "b": 2}}})
        assert (await w.recv())["result"]["content"][0]["text"] == "42"
        assert await _close(w) == 0

    asyncio.run(main())
    assert [c["tool"] for c in calls(rec)] == ["echo"] * 6 + ["add"]


def test_a_cancelled_call_is_cancelled_at_the_server_and_not_answered(tmp_path: Path, rec: Path) -> None:
    async def main() -> None:
        pol = write_policy(tmp_path, 'roles:\n  reader:\n    tools: [slow, shout]\nmcp:\n  pin: "off"\n')
        argv = gateway("wrap", "--policy", str(pol), "--agent", "t", "--role", "reader", "--",
                       *server_cmd("asker", rec))
        w = Wire(await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}))
        w.send({"jsonrpc": "2.0", "id": "i", "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "wire", "version": "0"}}})
        assert (await w.recv())["id"] == "i"
        w.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        w.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 30}}})
        for _ in range(200):  # until the call has reached the server
            if calls(rec):
                break
            await asyncio.sleep(0.05)
        w.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 5, "reason": "user gave up"}})
        w.send({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                "params": {"name": "shout", "arguments": {"text": "next"}}})
        while True:  # the log notification may come first; no answer to 5 ever does
            m = await w.recv()
            assert m.get("id") != 5, m
            if m.get("id") == 6:
                assert m["result"]["content"][0]["text"] == "shouted"
                break
        for _ in range(200):  # the server stops the tool (before the gateway closes)
            if {"method": "cancelled", "tool": "slow"} in recorded(rec):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the server never heard of the cancellation")
        assert await _close(w) == 0

    asyncio.run(main())
