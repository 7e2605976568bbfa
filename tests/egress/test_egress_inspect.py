"""Content inspection: secrets (live and well-known), their encodings, blobs, size."""

from __future__ import annotations

import base64
import json
import os
import re
from urllib.parse import quote

import pytest
from egress_kit import make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.actions import Egress, Verdict
from shieldwall.egress.inspect import KEY_FORMATS, Inspector, secret_needles
from shieldwall.policy.sections.egress import InspectionSettings

LIVE = "db-pass-Zq8rT2vLw9Xk"
AWS = "AKIA" + "QYLPMN5HHHFPZAM2"  # documented-format key id (not a real key)
GH = "ghp_" + "x7R2kLmN9pQ4sT6vW8yZ1aB3cD5eF7gH9iJ0"


def rules(url: str = "http://allowed.test/", body: bytes = b"", headers: dict[str, str] | None = None,
          live: list[str] | None = None, **section) -> list[str]:
    p = make_policy(**section)
    act = Egress("POST", url, headers or {}, body)
    return [f.rule for f in p.check(act, "operator", live_secrets=(lambda: live) if live else None)]


def test_live_secret_in_body_is_refused() -> None:
    assert rules(body=json.dumps({"note": f"password is {LIVE}"}).encode(), live=[LIVE]) == [
        "egress.secret_in_request"]


@pytest.mark.parametrize("encode", [
    lambda s: base64.b64encode(s.encode()).decode(),
    lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    lambda s: base64.b64encode(b"prefix:" + s.encode()).decode(),
    lambda s: base64.b64encode(b"xy" + s.encode() + b"trailer").decode(),
    lambda s: s.encode().hex(),
    lambda s: s.encode().hex().upper(),
    lambda s: quote(s, safe=""),
    lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    lambda s: quote(quote(s, safe=""), safe=""),
])
def test_encoded_live_secret_is_refused(encode) -> None:
    enc = encode(LIVE)
    assert rules(body=f"data={enc}".encode(), live=[LIVE]) == ["egress.secret_in_request"]
    assert rules(url=f"http://allowed.test/search?q={enc}", live=[LIVE]) == [
        "egress.secret_in_request"]


def test_secret_in_query_string_and_header_is_refused() -> None:
    assert rules(url=f"http://allowed.test/?k={LIVE}", live=[LIVE]) == ["egress.secret_in_request"]
    assert rules(url=f"http://allowed.test/x?token={AWS}") == ["egress.secret_in_request"]
    assert rules(headers={"X-Note": GH}) == ["egress.secret_in_request"]


@pytest.mark.parametrize("secret", [
    AWS,
    GH,
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "sk_live_" + "51HxYzAbCdEfGhIjKlMnOpQr",
    "AIza" + "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEow",
    "glpat-" + "aB3dE5fG7hI9jK1lM3nO",
    "sk-ant-api03-" + "a" * 90,
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
])
def test_well_known_key_formats_are_refused_plain_base64_and_hex(secret: str) -> None:
    assert rules(body=f"x={secret}".encode()) == ["egress.secret_in_request"]
    assert rules(body=base64.b64encode(secret.encode())) == ["egress.secret_in_request"]
    assert rules(body=secret.encode().hex().encode()) == ["egress.secret_in_request"]


def test_evidence_never_contains_the_secret() -> None:
    p = make_policy()
    body = base64.b64encode(LIVE.encode())
    fs = p.check(Egress("POST", "http://allowed.test/", {}, body), "operator", live_secrets=lambda: [LIVE])
    text = json.dumps([f.to_dict() for f in fs])
    assert LIVE not in text and body.decode() not in text
    assert "live secret (base64)" in text


def test_long_random_base64_blob_is_refused() -> None:
    blob = base64.b64encode(os.urandom(600)).decode()
    assert rules(body=json.dumps({"data": blob}).encode()) == ["egress.blob_in_request"]
    q = base64.urlsafe_b64encode(os.urandom(90)).decode()
    assert rules(url=f"http://allowed.test/?d={q}") == ["egress.blob_in_request"]
    h = os.urandom(60).hex()
    assert rules(url=f"http://allowed.test/{h}") == ["egress.blob_in_request"]


def test_blob_verdict_can_be_ask() -> None:
    p = make_policy(inspect={"blob_verdict": "ask"})
    blob = base64.b64encode(os.urandom(600))
    fs = p.check(Egress("POST", "http://allowed.test/", {}, blob), "operator")
    assert [(f.rule, f.verdict) for f in fs] == [("egress.blob_in_request", Verdict.ASK)]


@pytest.mark.parametrize("body", [
    b"The quick brown fox jumps over the lazy dog. " * 200,
    json.dumps({"items": [{"id": i, "name": f"item-{i}", "sku": f"SKU{i:08d}"} for i in range(300)]}).encode(),
    b"a" * 100_000,
    ("/very-long-slug-" + "-".join(["word"] * 100)).encode(),
    b"commit 3f786850e387550fdab836ed7e6dc881de23001b sha256 " + b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
])
def test_ordinary_bodies_pass(body: bytes) -> None:
    assert rules(body=body, live=[LIVE]) == []


def test_ordinary_urls_pass() -> None:
    for url in ("http://allowed.test/repos/o/r/commits/3f786850e387550fdab836ed7e6dc881de23001b",
                "http://allowed.test/search?q=weather+in+paris&lang=en",
                "http://allowed.test/items/550e8400-e29b-41d4-a716-446655440000"):
        assert rules(url=url) == [], url


def test_inspection_can_be_switched_off() -> None:
    assert rules(body=AWS.encode(), inspect={"secrets": False}) == []
    assert rules(body=base64.b64encode(os.urandom(600)), inspect={"blobs": False}) == []


def test_ignored_header_is_not_inspected() -> None:
    assert rules(headers={"Authorization": f"Bearer {GH}"}, inspect={"ignore_headers": ["Authorization"]}) == []


def test_short_live_values_are_ignored() -> None:
    assert rules(body=b"id=1234", live=["1234"]) == []


def test_body_beyond_inspection_limit_is_refused() -> None:
    insp = Inspector(InspectionSettings(max_inspect_bytes=1000))
    assert [f.rule for f in insp.inspect("http://a/", {}, b"a" * 1001)] == ["egress.too_large"]


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=8, max_size=40),
       st.binary(max_size=20), st.binary(max_size=20))
@settings(max_examples=200, deadline=None)
def test_base64_of_a_live_secret_anywhere_in_a_payload_is_found(secret: str, pre: bytes, post: bytes) -> None:
    payload = base64.b64encode(pre + secret.encode() + post)
    insp = Inspector()
    fs = insp.inspect("http://a/", {}, b"v=" + payload, lambda: [secret])
    assert [f.rule for f in fs] == ["egress.secret_in_request"]


def test_needles_cover_plain_hex_and_base64() -> None:
    forms = set(secret_needles(LIVE).values())
    assert forms == {"plain", "hex", "base64"}


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=80),
    st.text(alphabet="AKIAghp_xoxb-sk-eyJ.0123456789abcdefXYZ+/=%:-_ ", max_size=80).map(str.encode),
    st.sampled_from([AWS, GH, LIVE, "a" * 15, "a" * 16, "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"]).map(
        str.encode)))
def test_the_one_scan_prefilters_never_hide_a_key_format_or_an_encoded_run(text: bytes) -> None:
    # A text the combined scan passes over is not looked at again for key formats,
    # encoded runs or blobs: it must hold none of them (RE2 form and short-text form).
    from shieldwall.egress import inspect as ins

    for pre in (ins._KEY_OR_RUN, ins._KEY_OR_RUN_SHORT):
        if pre.search(text) is None:
            assert ins._KEYS.search(text) is None
            assert ins._B64_RUN.search(text) is None


@pytest.mark.parametrize("name", [name for name, _ in KEY_FORMATS])
def test_the_short_text_prefilter_finds_every_key_format(name: str) -> None:
    from shieldwall.egress import inspect as ins

    rx = dict(KEY_FORMATS)[name].encode()

    @settings(max_examples=200, deadline=None)
    @given(st.from_regex(re.compile(rx), fullmatch=True))
    def found(key: bytes) -> None:
        assert ins._KEY_OR_RUN_SHORT.search(key) is not None, key

    found()


def test_a_live_secret_is_found_in_a_url_with_no_encoded_run() -> None:
    # The live value is shorter than an encoded run and has no key format: only the
    # live-secret matcher can see it, also on the one-scan path.
    short = "pw-9Zq.x!"
    assert rules(url=f"http://allowed.test/?p={short}", live=[short]) == ["egress.secret_in_request"]
    assert rules(url="http://allowed.test/?p=ok", live=[short]) == []
