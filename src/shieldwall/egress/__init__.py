"""Egress control: the egress policy (a layer the gate asks), SSRF defence, content
inspection, the ``http_request`` tool, and the forward proxy (a face)."""

from .policy import EgressPolicy, EgressRefused, ParsedURL, UrlError, parse_url
from .ssrf import PinningResolver, Resolver, StaticResolver, SystemResolver, classify

__all__ = [
    "EgressPolicy",
    "EgressRefused",
    "ParsedURL",
    "PinningResolver",
    "Resolver",
    "StaticResolver",
    "SystemResolver",
    "UrlError",
    "classify",
    "parse_url",
]
