"""The redactor: every live value and its encodings disappear; other text is untouched."""

from __future__ import annotations

import base64
import json
import secrets as pysecrets
from urllib.parse import quote, quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.secrets.redact import REDACTED, Redactor, forms_of

SECRET_ALPHABET = st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                blacklist_categories=["Cs"])


def _encodings(v: str) -> list[str]:
    b = v.encode()
    return [v, base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode().rstrip("="),
            b.hex(), b.hex().upper(), quote(v, safe=""), quote_plus(v), json.dumps(v)[1:-1]]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(SECRET_ALPHABET, min_size=6, max_size=40), min_size=1, max_size=8),
       st.text(max_size=200), st.integers(0, 7), st.data())
def test_every_live_value_and_its_encodings_are_removed(values: list[str], filler: str,
                                                        which: int, data: st.DataObject) -> None:
    r = Redactor()
    for v in values:
        r.add(v)
    v = data.draw(st.sampled_from(values))
    enc = _encodings(v)[which]
    out = r.redact(filler + enc + filler)
    assert enc not in out
    assert REDACTED in out


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60), st.binary(max_size=60))
def test_a_value_inside_a_longer_base64_blob_is_removed(before: bytes, after: bytes) -> None:
    secret = "sk_live_" + "Zq8" * 6
    r = Redactor()
    r.add(secret)
    blob = base64.b64encode(before + secret.encode() + after).decode()
    out = r.redact(f"data:{blob}")
    assert base64.b64encode(secret.encode()).decode()[4:-4] not in out
    assert REDACTED in out


@given(st.text(max_size=300))
def test_text_without_secrets_is_unchanged(text: str) -> None:
    r = Redactor()
    r.add("Ÿ-not-in-the-text-" + pysecrets.token_hex(8))
    if "not-in-the-text" not in text:
        assert r.redact(text) == text


def test_thousand_secrets_in_one_matcher() -> None:
    r = Redactor()
    vals = [pysecrets.token_urlsafe(24) for _ in range(1000)]
    for v in vals:
        r.add(v)
    text = " ".join(vals[::97]) + " " + base64.b64encode(vals[500].encode()).decode()
    out = r.redact(text)
    assert all(v not in out for v in vals)
    assert out.count(REDACTED) == len(vals[::97]) + 1


def test_short_values_are_not_registered() -> None:
    r = Redactor(min_chars=4)
    r.add("ab")
    assert r.redact("abc ab") == "abc ab"
    assert len(r) == 0


def test_retired_values_expire_after_the_grace_period() -> None:
    r = Redactor()
    r.add("old-password-1")
    r.retire("old-password-1", until=100.0)
    r.expire(now=50.0)
    assert REDACTED in r.redact("old-password-1")
    r.expire(now=101.0)
    assert r.redact("old-password-1") == "old-password-1"


def test_forms_include_the_common_encodings() -> None:
    f = forms_of("p@ss word/+")
    assert "p%40ss%20word%2F%2B" in f and "p%40ss+word%2F%2B" in f
    assert b"p@ss word/+".hex() in f
