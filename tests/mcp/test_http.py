"""`shieldwall mcp serve`: Streamable HTTP, bearer token per agent, optional mutual TLS,
upstream a command or an HTTP MCP server."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import calls, gateway, server_cmd, text_of, write_policy

from mcp import Client, ClientSession
from shieldwall.bench.mcp import free_port, wait_port
from shieldwall.bench.mcp import stop_process as stop

pytestmark = pytest.mark.timeout(90)

READER_TOKEN = "swt_reader-token-for-tests-0123456789"
NOBODY_TOKEN = "swt_nobody-token-for-tests-0123456789"


def _h(t: str) -> str:
    return hashlib.sha256(t.encode()).hexdigest()


POLICY = f"""
roles:
  reader:
    tools: [echo, add]
  nobody:
    tools: []
mcp:
  pin: "off"
  tokens:
    - {{sha256: "{_h(READER_TOKEN)}", agent: alice, role: reader}}
    - {{sha256: "{_h(NOBODY_TOKEN)}", agent: mallory, role: nobody}}
"""


def _start(tmp: Path, upstream: list[str], port: int, *extra: str,
           policy: str = POLICY) -> subprocess.Popen[Any]:
    pol = write_policy(tmp, policy)
    log = (tmp / "serve.log").open("w")
    return subprocess.Popen(gateway("serve", "--policy", str(pol), "--port", str(port), *extra,
                                    *upstream), stdout=log, stderr=subprocess.STDOUT)


def _ready(tmp: Path, proc: subprocess.Popen[Any], port: int) -> subprocess.Popen[Any]:
    try:
        wait_port(port, proc)
    except Exception:
        stop(proc)
        raise RuntimeError((tmp / "serve.log").read_text()) from None
    return proc


def _serve(tmp: Path, upstream: list[str], port: int, *extra: str,
           policy: str = POLICY) -> subprocess.Popen[Any]:
    return _ready(tmp, _start(tmp, upstream, port, *extra, policy=policy), port)


@pytest.fixture
def served(tmp_path: Path, rec: Path) -> Iterator[str]:
    port = free_port()
    proc = _serve(tmp_path, ["--", *server_cmd("benign", rec)], port)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


async def _session_calls(url: str, token: str, client: httpx2.AsyncClient | None = None
                         ) -> tuple[list[str], Any, Any]:
    hc = client or httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with hc, streamable_http_client(url, http_client=hc) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        names = sorted(t.name for t in (await s.list_tools()).tools)
        ok = await s.call_tool("echo", {"text": "over http", "smuggled": 1})
        denied = await s.call_tool("delete_all", {})
        return names, ok, denied


def test_missing_or_wrong_token_is_refused(served: str, rec: Path) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "delete_all", "arguments": {}}}
    hdrs = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(served, json=body, headers=hdrs).status_code == 401
    wrong = {**hdrs, "Authorization": "Bearer swt_not-a-real-token"}
    r = httpx.post(served, json=body, headers=wrong)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    basic = {**hdrs, "Authorization": "Basic " + READER_TOKEN}
    assert httpx.post(served, json=body, headers=basic).status_code == 401
    assert calls(rec) == []


def test_token_maps_to_agent_and_role(served: str, rec: Path) -> None:
    async def main() -> None:
        with anyio.fail_after(40):
            names, ok, denied = await _session_calls(served, READER_TOKEN)
            assert names == ["add", "echo"]
            assert text_of(ok) == "over http"
            assert denied.is_error and "policy.tool_not_in_role" in text_of(denied)
            names, ok, _ = await _session_calls(served, NOBODY_TOKEN)
            assert names == []
            assert ok.is_error and "policy.tool_not_in_role" in text_of(ok)
            # the SDK's high-level Client speaks the stateless 2026-07-28 protocol
            hdr = {"Authorization": f"Bearer {READER_TOKEN}"}
            async with httpx2.AsyncClient(headers=hdr) as hc, Client(
                    streamable_http_client(served, http_client=hc)) as c:
                assert c.protocol_version == "2026-07-28"
                assert text_of(await c.call_tool("echo", {"text": "modern"})) == "modern"
                assert (await c.call_tool("delete_all", {})).is_error

    anyio.run(main)
    assert calls(rec) == [
        {"method": "tools/call", "tool": "echo", "args": {"text": "over http"}},
        {"method": "tools/call", "tool": "echo", "args": {"text": "modern"}}]


def test_upstream_may_be_an_http_mcp_server(tmp_path: Path, rec: Path) -> None:
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen(server_cmd("benign", rec, "--http", str(up_port)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(up_port, upstream)
        proc = _serve(tmp_path, ["--url", f"http://127.0.0.1:{up_port}/mcp"], port)
        try:
            async def main() -> None:
                with anyio.fail_after(40):
                    names, ok, denied = await _session_calls(
                        f"http://127.0.0.1:{port}/mcp", READER_TOKEN)
                    assert names == ["add", "echo"] and text_of(ok) == "over http"
                    assert denied.is_error
            anyio.run(main)
        finally:
            stop(proc)
    finally:
        stop(upstream)
    assert [c["tool"] for c in calls(rec)] == ["echo"]


# --------------------------------------------------------------------------- mutual TLS


def _certs(d: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject: str, pub: Any, issuer: str, signer: Any, *, ca: bool = False,
             san: x509.GeneralName | None = None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return b.sign(signer, hashes.SHA256())

    import ipaddress

    ca_key, srv_key, cli_key, rogue_key = key(), key(), key(), key()
    ca = cert("test-ca", ca_key.public_key(), "test-ca", ca_key, ca=True)
    srv = cert("127.0.0.1", srv_key.public_key(), "test-ca", ca_key,
               san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cli = cert("agent-alice", cli_key.public_key(), "test-ca", ca_key)
    rogue = cert("agent-rogue", rogue_key.public_key(), "agent-rogue", rogue_key)
    out: dict[str, Path] = {}

    def write(label: str, data: bytes) -> None:
        p = d / f"{label}.pem"
        p.write_bytes(data)
        out[label] = p

    pem = serialization.Encoding.PEM
    write("ca", ca.public_bytes(pem))
    for label, c, k in (("server", srv, srv_key), ("client", cli, cli_key),
                        ("rogue", rogue, rogue_key)):
        write(label, c.public_bytes(pem))
        write(label + "-key", k.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return out


def test_mutual_tls_requires_a_client_certificate(tmp_path: Path, rec: Path) -> None:
    c = _certs(tmp_path)
    port = free_port()
    proc = _serve(tmp_path, ["--tls-cert", str(c["server"]), "--tls-key", str(c["server-key"]),
                             "--client-ca", str(c["ca"]), "--", *server_cmd("benign", rec)], port)
    url = f"https://127.0.0.1:{port}/mcp"
    try:
        def ctx(cert: str | None) -> ssl.SSLContext:
            s = ssl.create_default_context(cafile=str(c["ca"]))
            if cert:
                s.load_cert_chain(str(c[cert]), str(c[cert + "-key"]))
            return s

        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        for who in (None, "rogue"):  # no certificate; a certificate the CA did not sign
            with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
                with httpx.Client(verify=ctx(who)) as hc:
                    hc.post(url, json=body, headers={"Authorization": f"Bearer {READER_TOKEN}"})

        async def main() -> None:
            with anyio.fail_after(40):
                hc = httpx2.AsyncClient(verify=ctx("client"),
                                        headers={"Authorization": f"Bearer {READER_TOKEN}"})
                names, ok, _ = await _session_calls(url, READER_TOKEN, hc)
                assert names == ["add", "echo"] and text_of(ok) == "over http"

        anyio.run(main)
        # a valid certificate does not replace the bearer token
        with httpx.Client(verify=ctx("client")) as hc:
            assert hc.post(url, json=body).status_code == 401
    finally:
        stop(proc)
    assert [x["tool"] for x in calls(rec)] == ["echo"]


# --------------------------------------------------------------------------- other servers


def test_rug_pull_and_crash_over_http(tmp_path: Path, rec: Path) -> None:
    """Drift blocks over HTTP too (list_changed reaches the client on its GET stream), and
    a server that dies mid-call is reported and restarted."""
    import mcp.types as mt

    from shieldwall.mcp.pin import LockFile, ToolManifest

    rug_rec, leak_rec = tmp_path / "rug.jsonl", tmp_path / "leak.jsonl"
    policy = POLICY.replace("tools: [echo, add]", "tools: [echo, get_weather, get_time, crash]")
    lf = LockFile(tmp_path / "shieldwall.lock")
    lf.pin("rugpull-server", "1.0.0", [
        ToolManifest("get_weather", "Get the weather for a city.", {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ToolManifest("get_time", "Get the time.", {"type": "object", "properties": {},
                                                   "required": []})])
    lf.save()
    rug_port, leak_port = free_port(), free_port()
    (tmp_path / "leaky").mkdir()
    rug = _start(tmp_path, ["--", *server_cmd("rugpull", rug_rec)], rug_port,
                 policy=policy.replace('pin: "off"', "pin: enforce"))
    leak = _start(tmp_path / "leaky", ["--", *server_cmd("leaky", leak_rec)], leak_port,
                  policy=policy)
    try:  # both start at once
        _ready(tmp_path, rug, rug_port)
        _ready(tmp_path / "leaky", leak, leak_port)
    except Exception:
        stop(rug)
        stop(leak)
        raise
    changed = anyio.Event()

    async def on_message(msg: Any) -> None:
        if isinstance(msg, mt.ToolListChangedNotification):
            changed.set()

    async def main() -> None:
        hdr = {"Authorization": f"Bearer {READER_TOKEN}"}
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(headers=hdr) as hc, streamable_http_client(
                    f"http://127.0.0.1:{rug_port}/mcp", http_client=hc) as (r, w), \
                    ClientSession(r, w, message_handler=on_message) as s:
                await s.initialize()
                assert sorted(t.name for t in (await s.list_tools()).tools) == [
                    "get_time", "get_weather"]
                assert text_of(await s.call_tool("get_weather", {"city": "Rome"})) == "Sunny in Rome"
                with anyio.fail_after(20):
                    await changed.wait()
                assert [t.name for t in (await s.list_tools()).tools] == ["get_time"]
                blocked = await s.call_tool("get_weather", {"city": "Rome"})
                assert blocked.is_error and "mcp.manifest_drift" in text_of(blocked)
            async with httpx2.AsyncClient(headers=hdr) as hc, streamable_http_client(
                    f"http://127.0.0.1:{leak_port}/mcp", http_client=hc) as (r, w), \
                    ClientSession(r, w) as s:
                await s.initialize()
                crashed = await s.call_tool("crash", {})
                assert crashed.is_error and "down" in text_of(crashed)
                assert text_of(await s.call_tool("echo", {"text": "back"})) == "back"

    try:
        anyio.run(main)
    finally:
        stop(rug)
        stop(leak)
    assert [c["tool"] for c in calls(rug_rec)] == ["get_weather"]
    assert [c["tool"] for c in calls(leak_rec)] == ["crash", "echo"]


def test_what_the_upstream_says_on_its_own_reaches_only_its_session(tmp_path: Path, rec: Path) -> None:
    """Each HTTP client session has its own upstream connection: a log message or a
    sampling request the server sends while serving one session never reaches another."""
    import mcp.types as mt

    policy = POLICY.replace("tools: [echo, add]", "tools: [shout, summarize, roots]")
    port = free_port()
    proc = _serve(tmp_path, ["--", *server_cmd("asker", rec)], port, policy=policy)
    url = f"http://127.0.0.1:{port}/mcp"
    logs: dict[str, list[str]] = {"a": [], "b": []}
    sampled: dict[str, list[str]] = {"a": [], "b": []}

    def client(who: str) -> dict[str, Any]:
        async def logging(params: mt.LoggingMessageNotificationParams) -> None:
            logs[who].append(str(params.data))

        async def sampling(context: Any, params: mt.CreateMessageRequestParams) -> mt.CreateMessageResult:
            sampled[who].append(params.messages[0].content.text)
            return mt.CreateMessageResult(role="assistant", model="m",
                                          content=mt.TextContent(type="text", text=f"summary for {who}"))

        async def roots(context: Any) -> mt.ListRootsResult:
            return mt.ListRootsResult(roots=[mt.Root(uri=f"file:///home/{who}")])

        return {"logging_callback": logging, "sampling_callback": sampling, "list_roots_callback": roots}

    async def until(cond: Any) -> None:
        with anyio.fail_after(15):
            while not cond():
                await anyio.sleep(0.02)

    async def main() -> None:
        hdr = {"Authorization": f"Bearer {READER_TOKEN}"}
        with anyio.fail_after(60):
            async with httpx2.AsyncClient(headers=hdr) as ha, streamable_http_client(
                    url, http_client=ha) as (ra, wa), ClientSession(ra, wa, **client("a")) as a, \
                    httpx2.AsyncClient(headers=hdr) as hb, streamable_http_client(
                    url, http_client=hb) as (rb, wb), ClientSession(rb, wb, **client("b")) as b:
                await a.initialize()
                await b.initialize()
                assert text_of(await a.call_tool("shout", {"text": "for a only"})) == "shouted"
                await until(lambda: logs["a"])
                assert text_of(await b.call_tool("shout", {"text": "for b only"})) == "shouted"
                await until(lambda: logs["b"])
                res = await a.call_tool("summarize", {"text": "a's notes"})
                assert text_of(res) == "model said: summary for a"
                assert text_of(await b.call_tool("roots", {})) == "file:///home/b"

    try:
        anyio.run(main)
    finally:
        stop(proc)
    assert logs == {"a": ["for a only"], "b": ["for b only"]}
    assert sampled == {"a": ["Summarize this document:\na's notes"], "b": []}


def test_a_session_upstream_ends_with_its_session(tmp_path: Path, rec: Path) -> None:
    """The server process a client session got is stopped when that session ends."""
    port = free_port()
    proc = _serve(tmp_path, ["--", *server_cmd("benign", rec)], port)

    def children() -> int:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        return len(out.stdout.split())

    async def until(n: int) -> None:
        with anyio.fail_after(15):
            while children() != n:
                await anyio.sleep(0.05)

    async def main() -> None:
        await until(1)  # the shared connection's server
        for _ in range(2):
            _, ok, _ = await _session_calls(f"http://127.0.0.1:{port}/mcp", READER_TOKEN)
            assert text_of(ok) == "over http"
            await until(1)  # the session's own server is gone again

    try:
        anyio.run(main)
    finally:
        stop(proc)
    assert [c["tool"] for c in calls(rec)] == ["echo", "echo"]


def test_wrap_serves_an_http_upstream_over_stdio(tmp_path: Path, rec: Path) -> None:
    """`wrap --url`: a stdio client, an HTTP MCP server (the SDK-based gateway)."""
    from mcp_helpers import stdio_session

    up_port = free_port()
    upstream = subprocess.Popen(server_cmd("benign", rec, "--http", str(up_port)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pol = write_policy(tmp_path, POLICY)
    argv = gateway("wrap", "--policy", str(pol), "--agent", "alice", "--role", "reader",
                   "--url", f"http://127.0.0.1:{up_port}/mcp")

    async def main() -> None:
        with anyio.fail_after(40):
            async with stdio_session(argv) as s:
                assert sorted(t.name for t in (await s.list_tools()).tools) == ["add", "echo"]
                ok = await s.call_tool("echo", {"text": "via url", "smuggled": 1})
                assert text_of(ok) == "via url"
                denied = await s.call_tool("delete_all", {})
                assert denied.is_error and "policy.tool_not_in_role" in text_of(denied)

    try:
        wait_port(up_port, upstream)
        anyio.run(main)
    finally:
        stop(upstream)
    assert calls(rec) == [{"method": "tools/call", "tool": "echo", "args": {"text": "via url"}}]
