"""EgressPolicy: URL parsing as a client parses, host matching, methods, limits."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from egress_kit import make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.actions import Egress
from shieldwall.egress.policy import UrlError, parse_url
from shieldwall.policy.sections.egress import EgressSection


def rules(p, url, method="GET", role="reader", body=b"", headers=None):
    return [f.rule for f in p.check(Egress(method, url, headers or {}, body), role)]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://allowed.com@evil.test/", "evil.test"),
        ("http://allowed.com:80@evil.test/", "evil.test"),
        ("http://evil.test#@allowed.com", "evil.test"),
        ("http://evil.test?@allowed.com/", "evil.test"),
        ("http://evil.test/@allowed.com/", "evil.test"),
        ("http://ALLOWED.TEST./x", "allowed.test"),
        ("http://%61llowed.test/", "allowed.test"),
        ("http://ａｌｌｏｗｅｄ.test/", "allowed.test"),
        ("http://allowed\u3002test/", "allowed.test"),
        ("http://bücher.de/", "xn--bcher-kva.de"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://0177.0.0.01/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://１２７．０．０．１/", "127.0.0.1"),
        ("http://127.0.0.%31/", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://0/", "0.0.0.0"),
    ],
)
def test_host_is_what_a_client_connects_to(url: str, host: str) -> None:
    assert parse_url(url).host == host


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.test\\@allowed.test/",
        "http://allowed.test\\.evil.test/",
        "http:\\\\evil.test/",
        "http:/evil.test/",
        "http:evil.test/",
        "http://a@b@evil.test/",
        "http://allowed.test:80:80/",
        "http://allowed.test:99999/",
        "http://allowed.test:8o/",
        "http://allowed .test/",
        "http://allowed.test\t/",
        "http://evil.test\n.allowed.test/",
        "http://[fe80::1%25eth0]/",
        "http://[::1/",
        "http://256.0.0.1/",
        "http://1.2.3.4.5/",
        "http://al%2flowed.test/",
        "http://allowed%40evil.test/",
        "http://allowed.test%00.evil.test/",
        "http://evil.test%23.allowed.test/",
        "http:///allowed.test/",
        "http://xn--a.test/",
        "http://" + "a" * 64 + ".test/",
    ],
)
def test_ambiguous_urls_are_refused(url: str) -> None:
    with pytest.raises(UrlError):
        parse_url(url)


def test_non_http_schemes_are_refused() -> None:
    for url in ("file:///etc/passwd", "gopher://allowed.test/", "ftp://allowed.test/",
                "javascript:alert(1)", "dict://allowed.test:11211/"):
        p = make_policy()
        assert rules(p, url) in (["egress.scheme_not_allowed"], ["egress.bad_url"])


def test_fragment_is_dropped_and_path_kept() -> None:
    u = parse_url("https://api.allowed.test:8443/a/b?x=1&y=%20#frag")
    assert (u.scheme, u.port, u.target, u.url) == (
        "https", 8443, "/a/b?x=1&y=%20", "https://api.allowed.test:8443/a/b?x=1&y=%20")
    assert u.host_header == "api.allowed.test:8443"


def test_too_long_url_is_too_large() -> None:
    p = make_policy()
    assert rules(p, "http://allowed.test/" + "a" * 9000) == ["egress.too_large"]


# --------------------------------------------------------------------------- hosts


def test_exact_and_wildcard_hosts() -> None:
    p = make_policy(hosts=["allowed.com", "*.example.com"], private=[])
    assert p.allows("http://allowed.com/")
    assert p.allows("http://a.example.com/")
    assert p.allows("http://a.b.example.com/")
    assert not p.allows("http://example.com/")  # '*.' means subdomains only
    assert not p.allows("http://badexample.com/")  # label boundary
    assert not p.allows("http://a.example.com.evil.test/")
    assert not p.allows("http://allowed.com.evil.test/")
    assert not p.allows("http://sub.allowed.com/")
    assert not p.allows("http://allowed.com@evil.test/")
    assert not p.allows("http://evil.test#@allowed.com")
    assert not p.allows("http://evil.test\\@allowed.com/")
    assert not p.allows("http://evil.test\\allowed.com/")


def test_attack_urls_are_refused_with_a_reason() -> None:
    p = make_policy(hosts=["allowed.com"], private=[])
    assert rules(p, "http://allowed.com.evil.test/") == ["egress.host_not_allowed"]
    assert rules(p, "http://allowed.com@evil.test/") == ["egress.host_not_allowed"]
    assert rules(p, "http://evil.test#@allowed.com") == ["egress.host_not_allowed"]
    assert rules(p, "http://evil.test\\@allowed.com") == ["egress.bad_url"]
    assert rules(p, "http://user:pw@allowed.com/") == ["egress.credentials_in_url"]


def test_host_entries_are_normalised_like_urls() -> None:
    p = make_policy(hosts=["Bücher.DE.", "*.ALLOWED.test", "10.1.2.3:8080"], private=["10.1.2.3"])
    assert p.allows("http://xn--bcher-kva.de/")
    assert p.allows("http://BÜCHER.de/")
    assert p.allows("http://x.allowed.TEST./")
    assert p.allows("http://0x0a010203:8080/")
    assert not p.allows("http://10.1.2.3/")  # the entry names port 8080 only


def test_ports_and_schemes() -> None:
    p = make_policy(hosts=["allowed.test"], private=[], schemes=["https"])
    assert [f.rule for f in p.check(Egress("GET", "http://allowed.test/"), "reader", resolve=False)] == [
        "egress.scheme_not_allowed"]
    p2 = make_policy(port=443, hosts=["allowed.test"], private=[])
    assert [f.rule for f in p2.check(Egress("GET", "https://allowed.test:8443/"), "reader", resolve=False)] == [
        "egress.port_not_allowed"]


def test_empty_section_denies_everything() -> None:
    from shieldwall.egress.policy import EgressPolicy

    p = EgressPolicy(EgressSection(), {"reader": ["GET"]})
    assert not p.allows("https://example.com/")


def test_invalid_host_entries_are_rejected_at_load() -> None:
    for bad in ["*.*.example.com", "exa*mple.com", "http://example.com", "a/b", "user@host"]:
        with pytest.raises(ValueError):
            EgressSection(allow_hosts=[bad])
    with pytest.raises(ValueError):
        EgressSection(allow_private=["not-a-network"])


# --------------------------------------------------------------------------- methods, size


def test_methods_per_role() -> None:
    p = make_policy()
    url = "http://allowed.test/"
    assert rules(p, url, "DELETE", "reader") == ["egress.method_not_allowed"]
    assert rules(p, url, "POST", "reader") == ["egress.method_not_allowed"]
    assert rules(p, url, "GET", "reader") == []
    assert rules(p, url, "HEAD", "reader") == []
    assert rules(p, url, "DELETE", "operator") == ["egress.method_not_allowed"]
    assert rules(p, url, "PUT", "operator") == []
    assert rules(p, url, "DELETE", "admin") == []
    assert rules(p, url, "GET", "nobody") == ["egress.method_not_allowed"]


def test_body_over_limit_is_too_large() -> None:
    p = make_policy(limits={"max_request_bytes": 100})
    assert rules(p, "http://allowed.test/", "POST", "operator", body=b"a" * 101) == ["egress.too_large"]
    assert rules(p, "http://allowed.test/", "POST", "operator", body=b"a" * 100) == []


# --------------------------------------------------------------------------- properties


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(_label, min_size=1, max_size=4), st.lists(_label, min_size=1, max_size=3))
@settings(max_examples=200, deadline=None)
def test_wildcard_matches_exactly_the_subdomains(prefix: list[str], base: list[str]) -> None:
    base_host = ".".join([*base, "test"])
    p = make_policy(hosts=[f"*.{base_host}"], private=[])
    host = ".".join(prefix)
    assert p.allows(f"http://{host}.{base_host}/")
    assert not p.allows(f"http://{base_host}/")
    assert not p.allows(f"http://{host}{base_host}/")  # glued: not a label boundary
    assert not p.allows(f"http://{base_host}.{host}.evil/")


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=0, max_value=3),
       st.sampled_from(["dec", "hex", "oct"]))
@settings(max_examples=300, deadline=None)
def test_ipv4_in_any_spelling_parses_to_the_same_address(n: int, parts: int, base: str) -> None:
    ip = ipaddress.IPv4Address(n)
    octets = list(ip.packed)
    # Split into 1..4 parts: the last part carries the remaining bytes.
    k = parts + 1
    head = octets[: k - 1]
    tail = int.from_bytes(bytes(octets[k - 1:]), "big")
    fmt = {"dec": str, "hex": lambda x: hex(x), "oct": lambda x: "0" + oct(x)[2:]}[base]
    text = ".".join([fmt(x) for x in head] + [fmt(tail)])
    assert parse_url(f"http://{text}/").ip == ip


_name_label = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_url_host = st.one_of(
    st.lists(_name_label, min_size=2, max_size=4).map(".".join),
    st.ip_addresses(v=4).map(str),
)


@given(_url_host, st.from_regex(r"(/[a-zA-Z0-9._~-]{0,8}){0,3}", fullmatch=True),
       st.from_regex(r"[a-z0-9=&]{0,12}", fullmatch=True), st.booleans())
@settings(max_examples=300, deadline=None)
def test_parser_agrees_with_httpx_on_well_formed_urls(host: str, path: str, query: str,
                                                       frag: bool) -> None:
    url = f"http://{host}{path or '/'}" + (f"?{query}" if query else "") + ("#x@evil" if frag else "")
    ours = parse_url(url)
    theirs = httpx.URL(url)
    assert ours.host == theirs.host.rstrip(".")
    assert ours.port == (theirs.port or 80)


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_parser_only_ever_raises_url_error(junk: str) -> None:
    for url in (junk, "http://" + junk, "http://allowed.test/" + junk, f"http://{junk}@allowed.test/"):
        try:
            parse_url(url)
        except UrlError:
            pass
