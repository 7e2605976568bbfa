"""``shieldwall proxy --workers N``: real worker processes, the real Redis on
127.0.0.1:6379 for the shared store, a real upstream HTTP server on loopback.

What must hold with several workers is what holds with one: a call budget is one budget,
a kill reaches every worker, the audit log stays one verifiable tree. Without a shared
store the command refuses to start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from egress_kit import Upstream

from shieldwall.egress.proxy import hash_token
from shieldwall.egress.workers import Supervisor

TOKEN = "swp_workers-token-0123456789abcdefghijklmnop"
CLI = [sys.executable, "-c", "from shieldwall.cli import main; main()"]


def _policy(tmp: Path, port: int, store: str, calls: int = 5,
            audit: str = "{path: audit.db}") -> Path:
    p = tmp / "shieldwall.yaml"
    p.write_text(f"""
version: 1
roles:
  reader: {{http_methods: [GET], budget: {{calls: {calls}}}}}
monitor: {{max_denials: 1000}}
egress:
  allow_hosts: ["127.0.0.1"]
  schemes: [http]
  ports: [{port}]
  allow_private: ["127.0.0.1"]
  proxy:
    listen: "127.0.0.1:0"
    credentials:
      - {{agent: bot, role: reader, token_sha256: "{hash_token(TOKEN)}"}}
audit: {audit}
{store}
""")
    return p


def _redis_store() -> str:
    return f'store: {{backend: redis, prefix: "swtest:{uuid.uuid4().hex}:"}}'


class Proxy:
    def __init__(self, policy: Path, *extra: str) -> None:
        self.log = policy.parent / "proxy.log"
        self.out = open(self.log, "wb")  # closed in stop()
        self.proc = subprocess.Popen([*CLI, "proxy", "--policy", str(policy), *extra],
                                     cwd=policy.parent, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
                return
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"proxy did not start: {self.text()}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> set[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return {int(x) for x in out.split()}

    def get(self, path: str, upstream: Upstream, token: str = TOKEN) -> tuple[int, str]:
        """One request on a new connection (new connections are what the kernel spreads
        over the workers)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(f"GET http://127.0.0.1:{upstream.port}{path} HTTP/1.1\r\n"
                      f"Proxy-Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        reason = re.search(r"(?im)^X-Shieldwall-Reason: (.*)$", head)
        return status, reason.group(1).strip() if reason else ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.out.close()

    def refusals_by_pid(self, rule: str) -> dict[int, int]:
        seen: dict[int, int] = {}
        for line in self.text().splitlines():
            m = re.match(r"\S+ \S+ (\d+) shieldwall\.egress\.proxy .*'refused'.*" + re.escape(rule), line)
            if m:
                seen[int(m.group(1))] = seen.get(int(m.group(1)), 0) + 1
        return seen


@pytest.fixture
def proxy_of(tmp_path: Path) -> Iterator[list[Proxy]]:
    started: list[Proxy] = []
    yield started
    for p in started:
        p.stop()


def _audit_rules(policy: Path) -> list[str]:
    from shieldwall.audit import open_store
    from shieldwall.policy.load import load_policy

    store = open_store(load_policy(policy).audit, policy.parent)
    try:
        return [row.rules for row in store.iter_rows()]
    finally:
        store.close()


PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def audit_section(request: pytest.FixtureRequest) -> Iterator[str]:
    """The workers' one audit log: an SQLite file, or PostgreSQL on 127.0.0.1:5432."""
    if request.param == "sqlite":
        yield "{path: audit.db}"
        return
    from shieldwall.audit.postgres_store import PostgresStore

    schema = f"swtest_{uuid.uuid4().hex[:12]}"
    yield f"{{store: postgres, dsn: '{PG_DSN}', pg_schema: {schema}}}"
    st = PostgresStore(PG_DSN, schema)
    st.drop()
    st.close()


@pytest.mark.redis
def test_workers_share_one_budget_one_kill_switch_and_one_audit_tree(
        tmp_path: Path, upstream: Upstream, proxy_of: list[Proxy], audit_section: str) -> None:
    policy = _policy(tmp_path, upstream.port, _redis_store(), calls=5, audit=audit_section)
    p = Proxy(policy, "--workers", "2")
    proxy_of.append(p)
    assert "(2 workers)" in p.text() and len(p.workers()) == 2
    answers = [p.get(f"/w{i}", upstream) for i in range(16)]
    # One budget of 5 calls, though the connections went to both workers: with a
    # budget per worker up to 10 would pass.
    assert [s for s, _ in answers] == [200] * 5 + [403] * 11
    assert {r for s, r in answers if s == 403} == {"budget.session_exhausted"}
    by_pid = p.refusals_by_pid("budget.session_exhausted")
    assert len(by_pid) == 2, f"the refusals should come from both workers: {by_pid}"
    assert len(upstream.seen) == 5

    # The kill switch from the command line reaches every worker.
    res = subprocess.run([*CLI, "kill", "--agent", "bot", "--reason", "probing", "--policy", str(policy)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    answers = [p.get(f"/k{i}", upstream) for i in range(12)]
    assert {(s, r) for s, r in answers} == {(403, "identity.revoked")}
    assert len(p.refusals_by_pid("identity.revoked")) == 2
    # Lifted after review: every worker lets the agent through to its (spent) budget.
    lift = [*CLI, "kill", "--lift", "--agent", "bot", "--policy", str(policy)]
    res = subprocess.run(lift, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "kill lifted on agent bot" in res.stdout, res.stderr
    answers = [p.get(f"/l{i}", upstream) for i in range(4)]
    assert {(s, r) for s, r in answers} == {(403, "budget.session_exhausted")}
    res = subprocess.run(lift, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "no kill to lift" in res.stderr
    assert p.stop() == 0
    assert p.workers() == set()

    # Both workers wrote to one log: it verifies, and holds every decision and the kill.
    res = subprocess.run([*CLI, "audit", "verify", "--policy", str(policy)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("ok: 34 entries"), res.stdout + res.stderr
    rules = _audit_rules(policy)
    assert sum("|budget.session_exhausted|" in r for r in rules) == 15
    assert sum("|identity.revoked|" in r for r in rules) == 12
    assert sum("|operator.kill|" in r for r in rules) == 1
    assert sum("|operator.lift_kill|" in r for r in rules) == 1


@pytest.mark.redis
def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
        tmp_path: Path, upstream: Upstream, proxy_of: list[Proxy]) -> None:
    sock = tmp_path / "p.sock"
    policy = _policy(tmp_path, upstream.port, _redis_store(), calls=1000)
    p = Proxy(policy, "--workers", "2", "--unix", str(sock))
    proxy_of.append(p)
    first = p.workers()
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (victim in p.workers() or len(p.workers()) < 2):
        time.sleep(0.05)
    now = p.workers()
    assert victim not in now and len(now) == 2
    assert "ended with signal 9: starting a new one" in p.text()
    time.sleep(1.0)  # the new worker builds its wall before it listens
    assert all(p.get(f"/r{i}", upstream)[0] == 200 for i in range(8))
    # The Unix socket is shared by the workers too.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(f"GET http://127.0.0.1:{upstream.port}/unix HTTP/1.1\r\n"
                  f"Proxy-Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert p.stop() == 0
    assert p.workers() == set()
    assert not any(_alive(pid) for pid in now)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_workers_refuse_to_start_without_a_shared_store(tmp_path: Path, upstream: Upstream) -> None:
    policy = _policy(tmp_path, upstream.port, "")
    res = subprocess.run([*CLI, "proxy", "--policy", str(policy), "--workers", "3"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "--workers 3 needs store.backend: redis" in res.stderr and "3x every budget" in res.stderr
    # An unreachable shared store is named at start-up, not discovered per request.
    policy = _policy(tmp_path, upstream.port, 'store: {backend: redis, url: "redis://127.0.0.1:1/0"}')
    res = subprocess.run([*CLI, "proxy", "--policy", str(policy), "--workers", "2"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "shared store is not reachable" in res.stderr
    # The kill switch from the command line needs it too: with the memory store it
    # would revoke inside its own process only.
    policy = _policy(tmp_path, upstream.port, "")
    res = subprocess.run([*CLI, "kill", "--agent", "bot", "--policy", str(policy)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "would reach nobody" in res.stderr


@pytest.mark.redis
def test_sighup_reloads_worker_by_worker_and_a_bad_file_leaves_them_running(
        tmp_path: Path, upstream: Upstream, proxy_of: list[Proxy]) -> None:
    policy = _policy(tmp_path, upstream.port, _redis_store(), calls=1000)
    sock = tmp_path / "p.sock"
    p = Proxy(policy, "--workers", "2", "--unix", str(sock))
    proxy_of.append(p)
    first = p.workers()
    second = "swp_second-agent-token-0123456789abcdefghij"
    assert p.get("/before", upstream)[0] == 200 and p.get("/before", upstream, second)[0] == 407

    # A new agent credential: the new workers take over, the old ones drain and exit.
    policy.write_text(policy.read_text().replace(
        "    credentials:\n",
        f'    credentials:\n      - {{agent: bot2, role: reader, token_sha256: "{hash_token(second)}"}}\n'))
    os.kill(p.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            "reloaded: 2 workers" in p.text() and len(p.workers()) == 2 and not p.workers() & first):
        time.sleep(0.05)
    now = p.workers()
    assert len(now) == 2 and not now & first, p.text()
    assert all(p.get(f"/after{i}", upstream, second)[0] == 200 for i in range(6))
    assert p.get("/after", upstream)[0] == 200
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the old workers left it open
        s.settimeout(10)
        s.connect(str(sock))
        s.sendall(f"GET http://127.0.0.1:{upstream.port}/unix HTTP/1.1\r\n"
                  f"Proxy-Authorization: Bearer {second}\r\nConnection: close\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 200")

    # A broken file is refused and the running workers stay, with the policy they have.
    policy.write_text(policy.read_text().replace("roles:", "roles: [oops"))
    os.kill(p.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "reload refused" not in p.text():
        time.sleep(0.05)
    assert "reload refused, the running workers stay" in p.text()
    assert p.workers() == now
    assert p.get("/still", upstream, second)[0] == 200
    assert p.stop() == 0


# --------------------------------------------------------------------------- supervisor


def _supervise_in_child(sup: Supervisor) -> int:
    """Run a Supervisor in a forked process (it installs signal handlers and reaps
    children, which must not happen inside pytest) and return its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = sup.run()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_supervisor_fails_when_a_worker_dies_before_it_is_ready() -> None:
    def child(index: int, ready_fd: int) -> int:
        if index == 1:
            return 7  # e.g. the policy's store or audit log could not be opened
        os.write(ready_fd, b"1")
        time.sleep(30)
        return 0

    assert _supervise_in_child(Supervisor(2, child, ready_timeout=20)) == 1


def test_supervisor_gives_up_on_workers_that_keep_dying(tmp_path: Path) -> None:
    starts = tmp_path / "starts"

    def child(index: int, ready_fd: int) -> int:
        with open(starts, "a") as f:
            f.write(f"{index}\n")
        os.write(ready_fd, b"1")
        time.sleep(0.05)
        return 1

    t0 = time.monotonic()
    assert _supervise_in_child(Supervisor(1, child, max_restarts=3, window=30)) == 1
    assert starts.read_text().split() == ["0"] * 4  # the first start and three restarts
    assert time.monotonic() - t0 < 20


# --------------------------------------------------------------------------- stopping


def _send(port: int, path: str, upstream: Upstream, keep: bool = True) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET http://127.0.0.1:{upstream.port}{path} HTTP/1.1\r\n"
              f"Proxy-Authorization: Bearer {TOKEN}\r\n"
              f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n".encode())
    return s


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    n = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.redis)])
def test_sigterm_drains_requests_in_flight_and_closes_idle_connections(
        tmp_path: Path, upstream: Upstream, proxy_of: list[Proxy], workers: int) -> None:
    """A deploy or a worker restart must not cut requests in flight: SIGTERM stops
    accepting, closes idle keep-alive connections, lets the running request finish (its
    response says Connection: close), then exits."""
    store = _redis_store() if workers > 1 else ""
    policy = _policy(tmp_path, upstream.port, store, calls=1000)
    p = Proxy(policy, "--workers", str(workers))
    proxy_of.append(p)
    idle = _send(p.port, "/first", upstream)
    assert _read_response(idle).startswith(b"HTTP/1.1 200")  # now idle, kept alive
    busy = _send(p.port, "/slow/1500", upstream)  # the upstream answers after 1.5 s
    deadline = time.monotonic() + 10
    while not any(x["path"] == "/slow/1500" for x in upstream.seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    p.proc.send_signal(signal.SIGTERM)
    idle.settimeout(1.2)  # closed by the drain well before the slow answer comes
    assert idle.recv(100) == b""
    refused = False
    deadline = time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", p.port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    assert refused, "the proxy still accepted connections after SIGTERM"
    answer = _read_response(busy)
    assert answer.startswith(b"HTTP/1.1 200") and b'"path": "/slow/1500"' in answer
    assert re.search(rb"(?im)^connection: close\r$", answer.partition(b"\r\n\r\n")[0] + b"\r")
    assert busy.recv(100) == b""  # and then the connection closes
    assert p.proc.wait(20) == 0
    idle.close()
    busy.close()
