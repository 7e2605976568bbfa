"""Server-side request forgery defence: which addresses an agent may never reach.

Addresses are classified by their meaning, not their spelling: IPv6 forms that carry an
IPv4 address (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``,
6to4 ``2002::/16``, Teredo ``2001::/32``) are judged by the address they carry. Names are
resolved here, through an injectable :class:`Resolver`, and every answer is checked; the
caller connects to a checked answer (see :class:`PinningResolver`), so a second lookup
that rebinds the name to ``127.0.0.1`` never happens within the pin time.

Ranges: RFC 6890 special-purpose registries (IPv4 and IPv6), RFC 6598 (CGNAT),
RFC 4193 (ULA), RFC 6052 (NAT64), RFC 3056 (6to4), RFC 4380 (Teredo).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata endpoints (AWS/GCP/Azure/OpenStack 169.254.169.254, AWS ECS
# 169.254.170.2, AWS IMDS IPv6 fd00:ec2::254, Alibaba 100.100.100.200, Oracle 192.0.0.192).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
        "fd00:ec2::23",
    )
)
# Names that reach metadata services from inside a cloud regardless of what DNS says here.
METADATA_NAMES: frozenset[str] = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
        "kubernetes.default.svc",
        "kubernetes.default",
    }
)

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# (network, category) checked in order; the first match names the reason.
_V4_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("0.0.0.0/32"), "unspecified"),
    (_V4("0.0.0.0/8"), "this_network"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("169.254.0.0/16"), "link_local"),
    (_V4("100.64.0.0/10"), "cgnat"),
    (_V4("192.0.0.0/24"), "reserved"),
    (_V4("192.0.2.0/24"), "documentation"),
    (_V4("198.51.100.0/24"), "documentation"),
    (_V4("203.0.113.0/24"), "documentation"),
    (_V4("192.88.99.0/24"), "reserved"),
    (_V4("198.18.0.0/15"), "benchmarking"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("255.255.255.255/32"), "broadcast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_V6_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link_local"),
    (_V6("fec0::/10"), "site_local"),
    (_V6("fc00::/7"), "ula"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "private"),  # local-use NAT64 (RFC 8215)
    (_V6("100::/64"), "reserved"),  # discard-only
    (_V6("2001:db8::/32"), "documentation"),
    (_V6("2001:10::/28"), "reserved"),  # ORCHID
    (_V6("2001:20::/28"), "reserved"),  # ORCHIDv2
    (_V6("2001:2::/48"), "benchmarking"),
    (_V6("3fff::/20"), "documentation"),
    (_V6("5f00::/16"), "reserved"),  # SRv6 SIDs
)
_NAT64 = _V6("64:ff9b::/96")
_V4COMPAT = _V6("::/96")
_MAPPED = _V6("::ffff:0:0/96")
_TRANSLATED = _V6("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_6TO4 = _V6("2002::/16")
_TEREDO = _V6("2001::/32")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the embedding forms."""
    n = int(ip)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip in _V4COMPAT and n > 1:  # '::' and '::1' are themselves, not 0.0.0.0/0.0.0.1
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip in _6TO4:
        return ipaddress.IPv4Address((n >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:
        # Teredo carries the client's IPv4 address in the low 32 bits, bit-inverted.
        return ipaddress.IPv4Address(~n & 0xFFFFFFFF)
    return None


def classify(ip: IPAddress) -> str | None:
    """The category that makes ``ip`` unreachable for agents, or ``None`` if it is public.

    ``metadata`` is reported before the broader range it falls in (link-local, ULA ...).
    """
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link_local"
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            inner = classify(v4)
            return inner if inner is not None else None
        for net, cat in _V6_RANGES:
            if ip in net:
                return cat
        if not ip.is_global:
            return "reserved"
        return None
    for net, cat in _V4_RANGES:
        if ip in net:
            return cat
    if not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True, slots=True)
class PrivateExceptions:
    """Networks an operator has explicitly opened (tests open loopback this way).

    Cloud metadata addresses stay blocked unless an exception names exactly that address:
    a broad ``169.254.0.0/16`` does not open ``169.254.169.254``.
    """

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, items: Iterable[str]) -> PrivateExceptions:
        return cls(tuple(ipaddress.ip_network(i, strict=False) for i in items))

    def covers(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            v4 = embedded_ipv4(ip)
            if v4 is not None:
                candidates.append(v4)
        for cand in candidates:
            for net in self.networks:
                if cand.version != net.version or cand not in net:
                    continue
                if (ip in METADATA_ADDRESSES or cand in METADATA_ADDRESSES) and net.num_addresses != 1:
                    continue
                return True
        return False


def blocked_reason(ip: IPAddress, exceptions: PrivateExceptions) -> str | None:
    """Category that blocks ``ip`` under these exceptions (``None``: may connect)."""
    cat = classify(ip)
    if cat is None or exceptions.covers(ip):
        return None
    return cat


# --------------------------------------------------------------------------- resolving


class ResolveError(Exception):
    """The name could not be resolved (no answer, or the resolver failed)."""


class Resolver(Protocol):
    """Turns a host name into addresses. Tests inject their own; production uses
    :class:`SystemResolver`. Must not return an empty list: raise :class:`ResolveError`."""

    def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), TCP answers only."""

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise ResolveError(f"cannot resolve {host!r}: {e}") from None
        out: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if addr not in out:
                out.append(addr)
        if not out:
            raise ResolveError(f"no address for {host!r}")
        return out


class StaticResolver:
    """A resolver with a fixed table, for tests and air-gapped deployments."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = {k.lower(): [ipaddress.ip_address(a) for a in v] for k, v in table.items()}
        self.calls = 0

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.calls += 1
        try:
            answers = self.table[host.lower()]
        except KeyError:
            raise ResolveError(f"no address for {host!r}") from None
        if not answers:
            raise ResolveError(f"no address for {host!r}")
        return list(answers)


class PinningResolver:
    """Caches answers for ``ttl`` seconds so the address the gate checked is the address
    the connection uses (DNS rebinding between check and connect finds no second lookup).

    Bounded (LRU, ``max_entries``); thread-safe. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        inner: Resolver,
        ttl: float = 30.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, list[IPAddress]]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, host: str) -> list[IPAddress] | None:
        key = host.lower()
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            if self.clock() >= hit[0]:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return list(hit[1])

    def store(self, host: str, answers: list[IPAddress]) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._cache[host.lower()] = (self.clock() + self.ttl, list(answers))
            self._cache.move_to_end(host.lower())
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        hit = self.cached(host)
        if hit is not None:
            return hit
        answers = self.inner.resolve(host, port)
        self.store(host, answers)
        return answers
