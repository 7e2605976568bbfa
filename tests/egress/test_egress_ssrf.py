"""SSRF: every private and metadata address form is refused, through names too."""

from __future__ import annotations

import ipaddress

import pytest
from egress_kit import make_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from shieldwall.actions import Egress
from shieldwall.egress.policy import EgressRefused
from shieldwall.egress.ssrf import (
    PinningResolver,
    PrivateExceptions,
    StaticResolver,
    blocked_reason,
    classify,
    embedded_ipv4,
)

# Each URL host form must be refused even when the host itself is in allow_hosts.
PRIVATE_FORMS = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("017700000001", "loopback"),
    ("0x7f.0.0.1", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("[::1]", "loopback"),
    ("[0:0:0:0:0:0:0:1]", "loopback"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:7f00:1]", "loopback"),
    ("[::127.0.0.1]", "loopback"),
    ("[64:ff9b::127.0.0.1]", "loopback"),
    ("[2002:7f00:1::]", "loopback"),
    ("[::ffff:0:127.0.0.1]", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("[::]", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("0xc0a80001", "private"),
    ("3232235521", "private"),
    ("[::ffff:192.168.0.1]", "private"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[64:ff9b::10.0.0.1]", "private"),
    ("[2002:c0a8:1::]", "private"),
    ("169.254.169.254", "metadata"),
    ("2852039166", "metadata"),
    ("0xa9fea9fe", "metadata"),
    ("0251.0376.0251.0376", "metadata"),
    ("169.254.43518", "metadata"),
    ("[::ffff:169.254.169.254]", "metadata"),
    ("[::ffff:a9fe:a9fe]", "metadata"),
    ("[64:ff9b::169.254.169.254]", "metadata"),
    ("[2002:a9fe:a9fe::]", "metadata"),
    ("[fd00:ec2::254]", "metadata"),
    ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"),
    ("169.254.1.1", "link_local"),
    ("[fe80::1]", "link_local"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.254", "cgnat"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("[ff02::1]", "multicast"),
    ("[fc00::1]", "ula"),
    ("[fd12:3456:789a::1]", "ula"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"),
]


@pytest.mark.parametrize(("host", "category"), PRIVATE_FORMS)
def test_every_private_and_metadata_form_is_refused(host: str, category: str) -> None:
    # The literal is explicitly allowed as a host: only the address check stands between.
    p = make_policy(hosts=[host], private=[])
    url = f"http://{host}/"
    findings = p.check(Egress("GET", url), "reader")
    assert [f.rule for f in findings] == ["egress.private_address"], findings
    assert f"({category})" in findings[0].evidence


@pytest.mark.parametrize("name", ["metadata.google.internal", "METADATA.GOOGLE.INTERNAL.",
                                  "metadata.goog", "instance-data.ec2.internal",
                                  "metadata.azure.internal"])
def test_metadata_names_are_refused_even_if_allowed(name: str) -> None:
    p = make_policy(hosts=[name.lower().rstrip(".")], private=[])
    assert [f.rule for f in p.check(Egress("GET", f"http://{name}/"), "reader")] == [
        "egress.private_address"]


def test_public_addresses_pass() -> None:
    for ip in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
               "64:ff9b::8.8.8.8", "2002:808:808::"):
        assert classify(ipaddress.ip_address(ip)) is None, ip


def test_teredo_is_judged_by_its_client_address() -> None:
    # Teredo client address is the bit-inverted low 32 bits: 127.0.0.1 -> 0x80fffffe.
    ip = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:80ff:fffe")
    assert embedded_ipv4(ip) == ipaddress.IPv4Address("127.0.0.1")
    assert classify(ip) == "loopback"


def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    p = make_policy()
    for name, cat in (("internal.allowed.test", "private"), ("meta.allowed.test", "metadata"),
                      ("v6.allowed.test", "private"), ("mixed.allowed.test", "private")):
        f = p.check(Egress("GET", f"http://{name}/"), "reader")
        assert [x.rule for x in f] == ["egress.private_address"], name
        assert f"({cat})" in f[0].evidence


def test_unresolvable_name_is_refused() -> None:
    p = make_policy(hosts=["nowhere.test"])
    assert [f.rule for f in p.check(Egress("GET", "http://nowhere.test/"), "reader")] == [
        "egress.dns_failed"]


def test_private_exception_opens_only_what_it_names() -> None:
    ex = PrivateExceptions.parse(["127.0.0.1", "10.1.0.0/16", "169.254.0.0/16"])
    assert blocked_reason(ipaddress.ip_address("127.0.0.1"), ex) is None
    assert blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1"), ex) is None
    assert blocked_reason(ipaddress.ip_address("127.0.0.2"), ex) == "loopback"
    assert blocked_reason(ipaddress.ip_address("10.1.2.3"), ex) is None
    assert blocked_reason(ipaddress.ip_address("10.2.0.1"), ex) == "private"
    # A broad exception does not open cloud metadata; only naming the address does.
    assert blocked_reason(ipaddress.ip_address("169.254.169.254"), ex) == "metadata"
    assert blocked_reason(ipaddress.ip_address("169.254.1.1"), ex) is None
    exact = PrivateExceptions.parse(["169.254.169.254"])
    assert blocked_reason(ipaddress.ip_address("169.254.169.254"), exact) is None


def test_pinning_resolver_does_not_look_up_twice() -> None:
    inner = StaticResolver({"a.test": ["127.0.0.1"]})
    now = [0.0]
    r = PinningResolver(inner, ttl=30, clock=lambda: now[0])
    assert r.resolve("a.test", 80) == [ipaddress.ip_address("127.0.0.1")]
    inner.table["a.test"] = [ipaddress.ip_address("169.254.169.254")]  # rebinding
    assert r.resolve("a.test", 80) == [ipaddress.ip_address("127.0.0.1")]
    assert inner.calls == 1
    now[0] = 31.0
    assert r.resolve("a.test", 80) == [ipaddress.ip_address("169.254.169.254")]
    assert inner.calls == 2


def test_rebinding_after_the_pin_expires_is_checked_again() -> None:
    res = StaticResolver({"rebind.allowed.test": ["127.0.0.1"]})
    p = make_policy(resolver=res, dns_cache_seconds=0)
    parsed = p.parse("http://rebind.allowed.test/")
    assert [str(a) for a in p.connect_addresses(parsed)] == ["127.0.0.1"]
    res.table["rebind.allowed.test"] = [ipaddress.ip_address("169.254.169.254")]
    with pytest.raises(EgressRefused) as e:
        p.connect_addresses(parsed)
    assert e.value.finding.rule == "egress.private_address"


_PRIVATE_NETS = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
    "100.64.0.0/10", "224.0.0.0/4", "0.0.0.0/8")]


@given(st.sampled_from(_PRIVATE_NETS), st.integers(min_value=0, max_value=2**32 - 1),
       st.sampled_from(["mapped", "compat", "nat64", "6to4", "plain"]))
@settings(max_examples=400, deadline=None)
def test_no_embedding_form_hides_a_private_ipv4(net: ipaddress.IPv4Network, r: int, form: str) -> None:
    v4 = ipaddress.IPv4Address(int(net.network_address) + r % net.num_addresses)
    n = int(v4)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = {
        "mapped": lambda: ipaddress.IPv6Address((0xFFFF << 32) | n),
        "compat": lambda: ipaddress.IPv6Address(n),
        "nat64": lambda: ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "6to4": lambda: ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),
        "plain": lambda: v4,
    }[form]()
    assert classify(ip) is not None


@given(st.ip_addresses())
@settings(max_examples=500, deadline=None)
def test_anything_python_calls_non_global_is_blocked(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if not ip.is_global:
        assert classify(ip) is not None
