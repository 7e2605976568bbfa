"""Malformed policy files fail with the file, line and key; the schema is exported."""

from __future__ import annotations

import json

import pytest

from shieldwall import PolicyError
from shieldwall.policy.load import load_policy, parse_policy, policy_json_schema


@pytest.mark.parametrize("text,where", [
    ("roles:\n  reader:\n    tools: [a]\n    db_scope: everything\n", "p.yaml:4: roles.reader.db_scope"),
    ("roles:\n  reader:\n    toolz: [a]\n", "p.yaml:3: roles.reader.toolz: unknown key"),
    ("roles:\n  r: {tools: [a]}\ntasks:\n  t: {role: ghost}\n", "unknown role 'ghost'"),
    ("tools:\n  t:\n    args:\n      x: {pattern: '([a-z'}\n", "p.yaml:4: tools.t.args.x.pattern"),
    ("roles:\n  r: {tools: [a]}\n  r: {tools: [b]}\n", "p.yaml:3: invalid YAML: duplicate key"),
    ("roles: [\n", "p.yaml:2: invalid YAML"),
    ("- just\n- a list\n", "p.yaml:1: the policy must be a mapping"),
    ("tasks:\n  t: {lifetime: soon}\n", "p.yaml:2: tasks.t.lifetime"),
    ("roles:\n  r:\n    http_methods: [GET, YEET]\n", "p.yaml:3: roles.r.http_methods[1]"),
    ("version: 2\n", "p.yaml:1: version"),
    ("roles:\n  r:\n    tools: ['rm -rf']\n", "invalid tool name"),
])
def test_malformed_policies_name_file_line_key(text, where):
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "p.yaml")
    assert where in str(e.value)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(PolicyError, match=r"not found.*policy example"):
        load_policy(tmp_path / "nope.yaml")


def test_empty_policy_denies_everything(tmp_path):
    from shieldwall import ShieldwallError

    from .conftest import make_wall

    w = make_wall(parse_policy(""), tmp_path)
    with pytest.raises(ShieldwallError):
        w.session(agent="a", role="reader")


def test_example_policy_validates_and_schema_exports():
    from importlib import resources

    text = resources.files("shieldwall.examples").joinpath("shieldwall.yaml").read_text()
    p = parse_policy(text)
    assert set(p.roles) == {"reader", "operator", "admin"}
    schema = json.loads(policy_json_schema())
    assert "roles" in schema["properties"] and schema["additionalProperties"] is False


def test_schema_validates_example_with_jsonschema():
    from importlib import resources

    import jsonschema
    import yaml

    schema = json.loads(policy_json_schema())
    data = yaml.safe_load(resources.files("shieldwall.examples").joinpath("shieldwall.yaml").read_text())
    jsonschema.validate(data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"roles": {"r": {"db_scope": "root"}}}, schema)
