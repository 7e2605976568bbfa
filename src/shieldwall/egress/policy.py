"""The egress policy: which URLs an agent may reach, with which methods, and how much.

URLs are parsed the way an HTTP client parses them (WHATWG URL rules for ``http`` and
``https``: the authority ends at the first ``/ ? #``, userinfo ends at the *last* ``@``,
the host is percent-decoded, mapped with IDNA/UTS 46, and a host whose last label is a
number is an IPv4 address in decimal, octal or hex). Where clients disagree (a backslash
in the authority, two ``@``, control characters) the URL is refused instead of guessed.
The host that is checked is the host the connection goes to: callers connect through
:meth:`EgressPolicy.connect_addresses`, never by name.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

import idna

from ..actions import Egress, Finding, Severity, Verdict
from ..policy.sections.egress import EgressSection
from .ssrf import (
    METADATA_NAMES,
    IPAddress,
    PinningResolver,
    PrivateExceptions,
    ResolveError,
    Resolver,
    SystemResolver,
    blocked_reason,
)

if TYPE_CHECKING:
    from ..policy.model import Policy

LAYER = "egress"
DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_ASCII_HOST = re.compile(r"^[a-z0-9_\-]+(\.[a-z0-9_\-]+)*$")
# WHATWG forbidden host code points (after percent-decoding) plus '%' itself.
_FORBIDDEN_HOST = re.compile(r"[\x00-\x20\x7f#%/:<>?@\[\\\]^|]")


class UrlError(ValueError):
    """A URL that cannot be parsed unambiguously. ``rule`` is the finding's rule id."""

    def __init__(self, message: str, rule: str = "egress.bad_url") -> None:
        super().__init__(message)
        self.rule = rule


class EgressRefused(Exception):
    """Raised by the connecting code paths when the policy refuses a destination."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(f"[{finding.rule}] {finding.message}")
        self.finding = finding


@dataclass(frozen=True, slots=True)
class ParsedURL:
    scheme: str
    host: str  # normalised: lower-case A-labels without trailing dot, or the IP's text
    ip: IPAddress | None  # set when the host is an IP literal (any spelling)
    port: int
    path: str  # origin-form path, percent-encoded ASCII, starts with '/'
    query: str | None
    userinfo: str | None

    @property
    def target(self) -> str:
        """The request target in origin form (what goes on the request line)."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return h if DEFAULT_PORTS.get(self.scheme) == self.port else f"{h}:{self.port}"

    @property
    def netloc(self) -> str:
        """``host:port`` with brackets around IPv6, the port always present."""
        h = f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host
        return f"{h}:{self.port}"

    @property
    def url(self) -> str:
        """The canonical URL (no userinfo, no fragment) — what the request really is."""
        return f"{self.scheme}://{self.host_header}{self.target}"


# --------------------------------------------------------------------------- parsing


def _parse_ipv4_number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits, base = part[2:], 16
        if digits == "":
            return 0
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if not digits or not all(c in "0123456789abcdefABCDEF"[: 16 if base == 16 else base] for c in digits):
        return None
    return int(digits, base)


def _ends_in_number(host: str) -> bool:
    last = host.split(".")[-1]
    if last == "" and "." in host:
        last = host.split(".")[-2]
    if last.isdigit() and last.isascii():
        return True
    return _parse_ipv4_number(last) is not None and last[:2].lower() == "0x"


def parse_ipv4(host: str) -> ipaddress.IPv4Address:
    """WHATWG IPv4 parser: ``127.1``, ``0x7f.1``, ``017700000001``, ``2130706433``."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]
    if len(parts) > 4 or any(p == "" for p in parts):
        raise UrlError(f"invalid IPv4 address {host!r}")
    nums = []
    for p in parts:
        n = _parse_ipv4_number(p)
        if n is None:
            raise UrlError(f"invalid IPv4 address {host!r}")
        nums.append(n)
    if any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
        raise UrlError(f"invalid IPv4 address {host!r}")
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def normalise_host(raw: str) -> tuple[str, IPAddress | None]:
    """Host text as a client would connect to it: (A-label name or IP text, IP or None)."""
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise UrlError(f"unterminated IPv6 literal {raw!r}")
        inner = raw[1:-1]
        if "%" in inner:
            raise UrlError("IPv6 zone identifiers are not allowed")
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise UrlError(f"invalid IPv6 address {inner!r}") from None
        return str(ip6), ip6
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise UrlError("host is not valid UTF-8 after percent-decoding") from None
    if decoded.isascii():
        host = decoded.lower()
    else:
        try:
            host = idna.encode(decoded, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as e:
            raise UrlError(f"invalid international host name: {e}") from None
    if _FORBIDDEN_HOST.search(host):
        raise UrlError(f"forbidden character in host {host!r}")
    if host == "":
        raise UrlError("empty host")
    if _ends_in_number(host):
        ip4 = parse_ipv4(host)
        return str(ip4), ip4
    if host.endswith("."):
        host = host[:-1]
    if not _ASCII_HOST.match(host):
        raise UrlError(f"invalid host name {host!r}")
    if any(len(label) > 63 for label in host.split(".")) or len(host) > 253:
        raise UrlError("host name too long")
    if any(label.startswith("xn--") for label in host.split(".")):
        try:
            idna.decode(host)
        except (idna.IDNAError, UnicodeError):
            raise UrlError(f"invalid punycode in host {host!r}") from None
    return host, None


@functools.lru_cache(maxsize=4096)
def _normalise_host_cached(raw: str) -> tuple[str, IPAddress | None]:
    # Pure function of the raw host text (errors are raised, never cached): URLs that
    # differ only in path or query share the host work (IDNA, IPv4 spellings).
    return normalise_host(raw)


def _encode_path(text: str) -> str:
    # Non-ASCII is percent-encoded as clients do; existing %XX escapes are kept verbatim.
    return quote(text, safe="!#$%&'()*+,/:;=?@[]~-._") if not text.isascii() else text


@functools.lru_cache(maxsize=2048)
def _parse_cached(url: str) -> ParsedURL:
    return _parse_url(url)


def parse_url(url: str, max_chars: int = 8192) -> ParsedURL:
    """Parse an ``http``/``https`` URL the way a client would, or raise :class:`UrlError`.

    Results are cached (the gate and the connecting code parse the same URL)."""
    if len(url) > max_chars:
        raise UrlError(f"URL longer than {max_chars} characters", rule="egress.too_large")
    if len(url) > 512:
        return _parse_url(url)
    return _parse_cached(url)


def _parse_url(url: str) -> ParsedURL:
    if _CONTROL.search(url):
        raise UrlError("URL contains whitespace or control characters")
    m = _SCHEME.match(url)
    if not m:
        raise UrlError("URL has no scheme")
    scheme = m.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlError(f"scheme {scheme!r} is not http or https", rule="egress.scheme_not_allowed")
    rest = url[m.end() :]
    rest = rest.split("#", 1)[0]  # the fragment never leaves the client
    before_query, sep, query = rest.partition("?")
    if "\\" in before_query:
        # WHATWG reads '\' as '/', other clients keep it: refuse rather than guess.
        raise UrlError("backslash in URL authority or path")
    if not before_query.startswith("//"):
        raise UrlError("URL must have '//' after the scheme")
    after = before_query[2:]
    slash = after.find("/")
    authority, path = (after, "/") if slash < 0 else (after[:slash], after[slash:])
    host, ip, port, userinfo = (_authority_cached(scheme, authority) if len(authority) <= 300
                                else _parse_authority(scheme, authority))
    return ParsedURL(
        scheme=scheme,
        host=host,
        ip=ip,
        port=port,
        path=_encode_path(path),
        query=None if not sep else _encode_path(query),
        userinfo=userinfo,
    )


@functools.lru_cache(maxsize=1024)
def _authority_cached(scheme: str, authority: str) -> tuple[str, IPAddress | None, int, str | None]:
    # Pure function of its text (errors are raised, never cached): URLs to one host that
    # differ in path or query share the authority's parse.
    return _parse_authority(scheme, authority)


def _parse_authority(scheme: str, authority: str) -> tuple[str, IPAddress | None, int, str | None]:
    """(host, IP or None, port, userinfo) of the text between ``//`` and the path."""
    userinfo: str | None = None
    if "@" in authority:
        userinfo, authority = authority.rsplit("@", 1)
        if "@" in userinfo:
            raise UrlError("more than one '@' in URL authority")
    port_text = ""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise UrlError("unterminated IPv6 literal")
        host_raw, tail = authority[: end + 1], authority[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise UrlError("junk after IPv6 literal")
            port_text = tail[1:]
    else:
        host_raw, _, port_text = authority.partition(":")
        if ":" in port_text:
            raise UrlError("more than one ':' in URL authority")
    if host_raw == "":
        raise UrlError("URL has no host")
    if port_text == "":
        port = DEFAULT_PORTS[scheme]
    elif port_text.isdigit() and port_text.isascii() and int(port_text) <= 65535:
        port = int(port_text)
    else:
        raise UrlError(f"invalid port {port_text!r}")
    host, ip = _normalise_host_cached(host_raw) if len(host_raw) <= 300 else normalise_host(host_raw)
    return host, ip, port, userinfo


# --------------------------------------------------------------------------- policy


def _finding(rule: str, message: str, evidence: str = "", severity: Severity = Severity.HIGH) -> Finding:
    return Finding(
        layer=LAYER, rule=rule, message=message, verdict=Verdict.DENY, evidence=evidence,
        severity=severity,
    )


@dataclass(frozen=True, slots=True)
class _HostRule:
    host: str  # normalised host, or suffix (without the '*.') for wildcards
    wildcard: bool
    port: int | None


def _compile_host(entry: str) -> _HostRule:
    wildcard = entry.startswith("*.")
    text = entry[2:] if wildcard else entry
    port: int | None = None
    if text.startswith("["):
        end = text.index("]")
        host_raw, tail = text[: end + 1], text[end + 1 :]
        if tail:
            port = int(tail[1:])
    elif ":" in text:
        host_raw, port_text = text.rsplit(":", 1)
        port = int(port_text)
    else:
        host_raw = text
    host, ip = normalise_host(host_raw)
    if wildcard and ip is not None:
        raise ValueError(f"wildcard entry {entry!r} names an IP address")
    return _HostRule(host=host, wildcard=wildcard, port=port)


class EgressPolicy:
    """The compiled ``egress:`` section plus the roles' HTTP methods.

    Pure checks (:meth:`check_static`, :meth:`allows`) never touch the network;
    :meth:`connect_addresses` resolves (through the pinning resolver) and checks every
    answer; :meth:`check` runs everything for one :class:`Egress` action.
    """

    def __init__(
        self,
        section: EgressSection | None = None,
        role_methods: Mapping[str, Iterable[str]] | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.section = section if section is not None else EgressSection()
        self.role_methods: dict[str, frozenset[str]] = {
            r: frozenset(m.upper() for m in ms) for r, ms in (role_methods or {}).items()
        }
        self.schemes = frozenset(self.section.schemes)
        self.ports = frozenset(self.section.ports)
        self.limits = self.section.limits
        self.exceptions = PrivateExceptions.parse(self.section.allow_private)
        self._blocked_cache: dict[IPAddress, str | None] = {}
        rules = [_compile_host(h) for h in self.section.allow_hosts]
        self._exact: dict[str, list[int | None]] = {}
        self._suffixes: list[_HostRule] = []
        for r in rules:
            if r.wildcard:
                self._suffixes.append(r)
            else:
                self._exact.setdefault(r.host, []).append(r.port)
        self.resolver = PinningResolver(
            resolver if resolver is not None else SystemResolver(), ttl=self.section.dns_cache_seconds
        )
        from .inspect import Inspector

        self.inspector = Inspector(self.section.inspect)

    @classmethod
    def from_policy(cls, policy: Policy, resolver: Resolver | None = None) -> EgressPolicy:
        return cls(
            policy.egress,
            {name: role.http_methods for name, role in policy.roles.items()},
            resolver=resolver,
        )

    # -- pure checks ---------------------------------------------------------

    def parse(self, url: str) -> ParsedURL:
        return parse_url(url, self.limits.max_url_chars)

    def host_allowed(self, host: str, port: int) -> str | None:
        """``None`` if allowed, else the rule id (host or port not allowed)."""
        host_match = False
        ports = self._exact.get(host)
        if ports is not None:
            host_match = True
            for p in ports:
                if (p is None and port in self.ports) or p == port:
                    return None
        for r in self._suffixes:
            # Subdomains only, on a label boundary: '*.example.com' matches
            # 'a.example.com', never 'example.com' or 'badexample.com'.
            if host.endswith("." + r.host):
                host_match = True
                if (r.port is None and port in self.ports) or r.port == port:
                    return None
        return "egress.port_not_allowed" if host_match else "egress.host_not_allowed"

    def check_static(self, parsed: ParsedURL) -> Finding | None:
        """Scheme, host, port, metadata names, private IP literals — no DNS."""
        if parsed.scheme not in self.schemes:
            return _finding(
                "egress.scheme_not_allowed",
                f"scheme {parsed.scheme!r} is not allowed (egress.schemes: {sorted(self.schemes)})",
                parsed.scheme,
            )
        if parsed.host in METADATA_NAMES or parsed.host.endswith(".metadata.google.internal"):
            return _finding(
                "egress.private_address",
                f"{parsed.host} is a cloud metadata endpoint; it is never reachable",
                f"{parsed.host} (metadata)",
                Severity.CRITICAL,
            )
        if parsed.ip is not None:
            f = self._address_finding(parsed.host, [parsed.ip])
            if f is not None:
                return f
        rule = self.host_allowed(parsed.host, parsed.port)
        if rule is not None:
            what = "host" if rule == "egress.host_not_allowed" else "port"
            return _finding(
                rule,
                f"{what} not allowed: {parsed.netloc} "
                "(add it to egress.allow_hosts to allow it)",
                parsed.netloc,
            )
        if parsed.userinfo is not None:
            return _finding(
                "egress.credentials_in_url",
                "URL carries user:password before the host; send credentials in a header",
                parsed.host,
            )
        return None

    def allows(self, url: str) -> bool:
        """True if ``url`` may be requested as far as can be told without DNS."""
        try:
            parsed = self.parse(url)
        except UrlError:
            return False
        return self.check_static(parsed) is None

    def check_method(
        self, method: str, role: str | None, methods: frozenset[str] | None = None
    ) -> Finding | None:
        """``methods`` (the session's effective methods, role ∩ task) overrides the role's."""
        m = method.upper()
        allowed = methods if methods is not None else self.role_methods.get(role or "", frozenset())
        if m == "CONNECT":
            if not self.section.proxy.connect_tunnels:
                return _finding("egress.method_not_allowed", "CONNECT tunnels are disabled", m)
            if allowed:
                return None
        elif m in allowed or (m == "HEAD" and "GET" in allowed):
            return None
        return _finding(
            "egress.method_not_allowed",
            f"role {role!r} may not send {m} requests (roles.{role}.http_methods: "
            f"{sorted(allowed)})",
            m,
        )

    def _blocked(self, ip: IPAddress) -> str | None:
        # Pure function of the address under this policy's exceptions: memoised (bounded).
        try:
            return self._blocked_cache[ip]
        except KeyError:
            cat = blocked_reason(ip, self.exceptions)
            if len(self._blocked_cache) < 65536:
                self._blocked_cache[ip] = cat
            return cat

    def _address_finding(self, host: str, addrs: list[IPAddress]) -> Finding | None:
        for a in addrs:
            cat = self._blocked(a)
            if cat is not None:
                shown = host if str(a) == host else f"{host} -> {a}"
                return _finding(
                    "egress.private_address",
                    f"{shown} is a {cat.replace('_', '-')} address; agents may not reach it "
                    "(egress.allow_private opens a specific address)",
                    f"{shown} ({cat})",
                    Severity.CRITICAL if cat == "metadata" else Severity.HIGH,
                )
        return None

    # -- resolving -------------------------------------------------------------

    def connect_addresses(self, parsed: ParsedURL) -> list[IPAddress]:
        """Checked addresses to connect to. Every answer must pass; the caller connects to
        one of these (never by name). Raises :class:`EgressRefused`."""
        if parsed.ip is not None:
            addrs: list[IPAddress] = [parsed.ip]
        else:
            try:
                addrs = self.resolver.resolve(parsed.host, parsed.port)
            except ResolveError as e:
                raise EgressRefused(
                    _finding("egress.dns_failed", f"cannot resolve {parsed.host}: {e}", parsed.host)
                ) from None
        f = self._address_finding(parsed.host, addrs)
        if f is not None:
            raise EgressRefused(f)
        return addrs

    async def aconnect_addresses(self, parsed: ParsedURL) -> list[IPAddress]:
        """Async twin of :meth:`connect_addresses`: a lookup that misses the pin cache runs
        in a worker thread so an event loop never blocks on DNS."""
        if parsed.ip is None and self.resolver.cached(parsed.host) is None:
            await asyncio.to_thread(self._prime, parsed)
        return self.connect_addresses(parsed)

    def _prime(self, parsed: ParsedURL) -> None:
        try:
            self.resolver.resolve(parsed.host, parsed.port)
        except ResolveError:
            pass

    # -- everything ------------------------------------------------------------

    def check(
        self,
        action: Egress,
        role: str | None,
        live_secrets: Callable[[], Iterable[str]] | None = None,
        resolve: bool = True,
        methods: frozenset[str] | None = None,
    ) -> list[Finding]:
        """All findings for one outbound request (empty list: allowed)."""
        try:
            parsed = self.parse(action.url)
        except UrlError as e:
            return [_finding(e.rule, f"refused URL: {e}", action.url[:200])]
        findings: list[Finding] = []
        f = self.check_static(parsed)
        if f is not None:
            findings.append(f)
        f = self.check_method(action.method, role, methods)
        if f is not None:
            findings.append(f)
        if len(action.body) > self.limits.max_request_bytes:
            findings.append(
                _finding(
                    "egress.too_large",
                    f"request body of {len(action.body)} bytes exceeds "
                    f"egress.limits.max_request_bytes ({self.limits.max_request_bytes})",
                    str(len(action.body)),
                    Severity.MEDIUM,
                )
            )
        head = sum(len(k) + len(v) + 4 for k, v in action.headers.items())
        if head > self.limits.max_header_bytes:
            findings.append(
                _finding(
                    "egress.too_large",
                    f"request headers of {head} bytes exceed egress.limits.max_header_bytes",
                    str(head),
                    Severity.MEDIUM,
                )
            )
        findings.extend(self.inspector.inspect(action.url, action.headers, action.body, live_secrets))
        # An IP literal's one address was checked by check_static, to the same rule: only
        # a name has addresses left to check.
        if resolve and not findings and parsed.ip is None:
            try:
                self.connect_addresses(parsed)
            except EgressRefused as e:
                findings.append(e.finding)
        return findings
