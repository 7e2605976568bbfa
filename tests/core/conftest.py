from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from shieldwall import Shieldwall
from shieldwall.audit import MemoryAuditLog
from shieldwall.policy.load import parse_policy


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "faq.md").write_text("returns within 30 days")
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "a.md").write_text("nested")
    (tmp_path / "secret.txt").write_text("top secret")
    text = resources.files("shieldwall.examples").joinpath("shieldwall.yaml").read_text("utf-8")
    (tmp_path / "shieldwall.yaml").write_text(text)
    return tmp_path


@pytest.fixture
def example_policy(example_dir: Path):
    return parse_policy((example_dir / "shieldwall.yaml").read_text(), "shieldwall.yaml")


def make_wall(policy, base: Path, **kw) -> Shieldwall:
    kw.setdefault("audit", MemoryAuditLog())
    kw.setdefault("load_rooms", False)
    wall = Shieldwall(policy, base_dir=base, **kw)
    docs = base / "docs"

    @wall.tool
    def read_document(path: str) -> str:
        return (docs / path).read_text()

    @wall.tool
    def search_knowledge_base(query: str) -> list[str]:
        return [query]

    @wall.tool
    def query_db(sql: str) -> str:
        return "rows"

    @wall.tool
    def update_order_status(order_id: str, status: str) -> str:
        return f"{order_id}:{status}"

    @wall.tool
    def send_email(to: str, subject: str, body: str) -> str:
        return "sent"

    @wall.tool
    def refund_order(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    @wall.tool
    def provision_server(size: str, region: str) -> str:
        return "ok"

    return wall


@pytest.fixture
def wall(example_policy, example_dir: Path) -> Shieldwall:
    return make_wall(example_policy, example_dir)


@pytest.fixture(autouse=True)
def _no_leftover(tmp_path: Path):
    yield
    shutil.rmtree(tmp_path / ".shieldwall", ignore_errors=True)
