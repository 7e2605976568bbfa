"""Fingerprints: winnowing's guarantee, normalisation, decoding (property tests)."""

from __future__ import annotations

import base64
import random
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.flow.fingerprints import (
    Fingerprinter,
    Settings,
    decoded_forms,
    ngram_hashes,
    stable_hash,
    tokens,
    winnow,
)

WORDS = [f"w{i}x{j}" for i in range(40) for j in range(5)]


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=300),
       st.integers(1, 12))
def test_winnowing_keeps_a_hash_from_every_window(hashes: list[int], w: int) -> None:
    kept = winnow(hashes, w)
    assert kept <= set(hashes)
    for i in range(max(1, len(hashes) - w + 1)):
        assert min(hashes[i:i + w]) in kept


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 1500))
def test_any_copied_run_of_w_plus_k_minus_1_tokens_matches(rnd: random.Random, at: int) -> None:
    fp = Fingerprinter(Settings(k=3, window=4, dense_tokens=0))  # always winnow
    doc = [rnd.choice(WORDS) for _ in range(2000)]
    seen = fp.seen(" ".join(doc))
    start = at % (len(doc) - 6)
    copied = "Fwd: " + " ".join(doc[start:start + 6]) + " -- see above"
    assert fp.query(copied).grams & seen.grams


@given(st.text(alphabet=st.characters(categories=["Ll", "Lu", "Nd"]), min_size=3, max_size=12)
       .flatmap(lambda w: st.lists(st.just(w) | st.text("abcdefgh", min_size=2, max_size=8),
                                   min_size=4, max_size=30)))
def test_case_whitespace_and_punctuation_do_not_change_fingerprints(words: list[str]) -> None:
    a = " ".join(words)
    b = ",\n  ".join(w.upper() for w in words) + "!!"
    assert tokens(a) == tokens(b)
    th = [stable_hash(t) for t in tokens(a)]
    assert ngram_hashes(th, 3) == ngram_hashes([stable_hash(t) for t in tokens(b)], 3)


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=12,
               max_size=200))
def test_base64_hex_and_url_encodings_decode_back(text: str) -> None:
    for enc in (base64.b64encode(text.encode()).decode(), text.encode().hex(),
                quote(text, safe="")):
        forms = decoded_forms(f"payload={enc};")
        assert any(text in f for f in forms) or enc == text


def test_stable_hash_is_not_salted() -> None:
    # the value must be the same in every process (shared Redis index)
    assert stable_hash("shieldwall") == stable_hash("shieldwall")
    assert isinstance(stable_hash("x"), int)
    assert ngram_hashes([1, 2, 3], 3) == [hash((1, 2, 3))]


def test_boilerplate_made_of_common_words_is_not_a_fingerprint() -> None:
    fp = Fingerprinter()
    seen = fp.seen("Please let me know if you have any questions about the Orion budget.")
    q = fp.query("Hi! Please let me know if you have any questions.")
    assert not (q.grams & seen.grams)
    q2 = fp.query("the Orion budget")
    assert q2.grams & seen.grams


def test_key_like_spans_match_alone_but_ordinary_long_words_do_not() -> None:
    fp = Fingerprinter()
    seen = fp.seen("token: ghp_R4nd0mT0k3nV4lu3Xy9Zq and internationalization notes")
    assert fp.query("use ghp_R4nd0mT0k3nV4lu3Xy9Zq please").spans & seen.spans
    assert not (fp.query("internationalization").spans & seen.spans)
