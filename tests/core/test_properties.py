"""Property tests: nothing outside a role's grant is ever allowed."""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shieldwall import ToolCall, Verdict
from shieldwall.policy.constraints import confine_path
from shieldwall.policy.load import parse_policy

from .conftest import make_wall

TOOLS = [f"t{i}" for i in range(8)]

names = st.sampled_from(TOOLS)


@st.composite
def policies(draw):
    roles = {}
    for r in ("r0", "r1", "r2"):
        roles[r] = sorted(draw(st.sets(names, max_size=6)))
    tasks = {}
    for t in ("k0", "k1"):
        allow = draw(st.none() | st.sets(names, max_size=6))
        deny = draw(st.sets(names, max_size=3))
        tasks[t] = (None if allow is None else sorted(allow), sorted(deny))
    return roles, tasks


def _yaml(roles, tasks):
    out = ["roles:"]
    for r, tools in roles.items():
        out.append(f"  {r}: {{tools: [{', '.join(tools)}]}}")
    out.append("tasks:")
    for t, (allow, deny) in tasks.items():
        a = "" if allow is None else f"allow: [{', '.join(allow)}], "
        out.append(f"  {t}: {{{a}deny: [{', '.join(deny)}]}}")
    return "\n".join(out) + "\n"


_tmp = Path(tempfile.mkdtemp())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.sampled_from(["r0", "r1", "r2"]), st.sampled_from([None, "k0", "k1"]),
       st.lists(st.sampled_from([*TOOLS, "other", "admin_tool"]), min_size=1, max_size=10))
def test_no_action_outside_grant_is_allowed(pol, role, task, calls):
    roles, tasks = pol
    wall = make_wall(parse_policy(_yaml(roles, tasks)), _tmp)
    granted = set(roles[role])
    if task is not None:
        allow, deny = tasks[task]
        if allow is not None:
            granted &= set(allow)
        granted -= set(deny)
    with wall.session(agent="a", role=role, task=task) as s:
        for tool in calls:
            d = s.decide(ToolCall(tool, {}))
            assert (d.verdict != Verdict.DENY) == (tool in granted), (tool, granted)


segments = st.sampled_from(["..", ".", "docs", "a", "b", "", "secret.txt", "..%2f", "...", "x/.."])


@settings(max_examples=300, deadline=None)
@given(st.lists(segments, min_size=1, max_size=6))
def test_confined_paths_never_escape(parts):
    root = _tmp / "root"
    (root / "a").mkdir(parents=True, exist_ok=True)
    value = "/".join(parts)
    got = confine_path(value, [root])
    real_root = os.path.realpath(root)
    if got is not None:
        assert str(got) == real_root or str(got).startswith(real_root + os.sep)
    expected = os.path.realpath(os.path.join(real_root, value))
    inside = expected == real_root or expected.startswith(real_root + os.sep)
    assert (got is not None) == inside


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=40))
def test_url_checker_never_allows_foreign_host(s):
    from urllib.parse import urlsplit

    from shieldwall.policy.constraints import _url_checker
    from shieldwall.policy.model import UrlConstraint

    chk = _url_checker("t", "u", UrlConstraint(schemes=["https"], hosts=["api.example.com"]))
    url = "https://" + s
    if chk(url) is None:
        assert urlsplit(url).hostname == "api.example.com"
