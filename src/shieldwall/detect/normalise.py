"""Text normalisation before any injection check.

Attackers hide instructions from humans and from naive filters with invisible
characters (zero-width, bidirectional controls), Unicode tag characters ("ASCII
smuggling": U+E0000-E007F mirror ASCII and render as nothing), compatibility forms
(fullwidth letters), confusable homoglyphs (Cyrillic "а" for Latin "a") and leetspeak.
:func:`normalise` undoes these for matching and reports what it removed: the mere
presence of invisible characters in a prompt or a tool result is itself a finding.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import re2

from ..actions import Severity
from .base import Hit

TAG_BASE = 0xE0000
TAG_FIRST, TAG_LAST = 0xE0000, 0xE007F

# Zero-width and formatting characters that render as nothing.
ZERO_WIDTH = frozenset(
    [0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x200B, 0x200C,
     0x200D, 0x2060, 0x2061, 0x2062, 0x2063, 0x2064, 0x3164, 0xFEFF, 0xFFA0,
     *range(0xFE00, 0xFE10)]  # the last are variation selectors
)
# Bidirectional controls (Trojan Source, CVE-2021-42574).
BIDI = frozenset([0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])

# Homoglyphs that NFKC leaves alone: Cyrillic and Greek letters that look Latin.
CONFUSABLES: dict[str, str] = {
    # Cyrillic lower / upper
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ү": "Y",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "ι": "i", "κ": "k", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin look-alikes outside ASCII
    "ı": "i", "ɡ": "g", "ℓ": "l",
}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLES)

LEET_BYTES = bytes.maketrans(b"013457@$!|", b"oieastasil")
LEET_TABLE = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                             "@": "a", "$": "s", "!": "i", "|": "l"})
# A token that mixes letters with leet digits/symbols: "1gn0re", "pr0mpt", "@ll".
_LEET_TOKEN = re.compile(r"(?=[\w@$!|]*[A-Za-z])(?=[\w@$!|]*[013457@$|])[\w@$!|]{3,}")
_LATIN = re.compile(r"[A-Za-z]")


@dataclass(slots=True)
class Normalised:
    """The text to match on, what was removed, and any text smuggled in tag characters."""

    text: str
    invisible: int = 0  # zero-width + bidi characters removed
    bidi: int = 0
    tags: str = ""  # ASCII decoded from Unicode tag characters
    homoglyphs: int = 0
    leet: bool = False
    hits: list[Hit] = field(default_factory=list)

    @property
    def scan_text(self) -> str:
        """What the injection checks read: the visible text plus any smuggled text."""
        return f"{self.text}\n{self.tags}" if self.tags else self.text


def encode_tags(text: str) -> str:
    """ASCII -> invisible Unicode tag characters (the smuggling encoding; for tests)."""
    return "".join(chr(TAG_BASE + ord(c)) if ord(c) < 0x80 else c for c in text)


def decode_tags(text: str) -> str:
    """The ASCII hidden in Unicode tag characters, in order; other characters dropped."""
    out: list[str] = []
    for ch in text:
        o = ord(ch)
        if TAG_FIRST <= o <= TAG_LAST:
            a = o - TAG_BASE
            if 0x20 <= a < 0x7F or a in (0x09, 0x0A):
                out.append(chr(a))
    return "".join(out)


_TAG_RUN = re.compile("[\U000E0000-\U000E007F]")
_INVISIBLE = re.compile("[" + "".join(chr(c) for c in sorted(ZERO_WIDTH | BIDI)) + "]")
_BIDI = re.compile("[" + "".join(chr(c) for c in sorted(BIDI)) + "]")
_EMOJI_JOINERS = re.compile("[\u200d\ufe00-\ufe0f]")


# One RE2 pass (linear, on UTF-8) says whether there is anything to strip at all.
_ANY_INVISIBLE = re2.compile(
    "[" + "".join(chr(c) for c in sorted(ZERO_WIDTH | BIDI)) + "\U000E0000-\U000E007F]")


def strip_invisible(text: str) -> tuple[str, int, int, str]:
    """Remove zero-width, bidi and tag characters. Returns (text, removed, bidi, tags).

    ``removed`` does not count ZWJ and variation selectors: they are ordinary inside
    emoji sequences (they are still removed from the matching view)."""
    if text.isascii() or not _ANY_INVISIBLE.search(text):
        return text, 0, 0, ""
    tags = ""
    removed = 0
    if _TAG_RUN.search(text):
        tags = decode_tags(text)
        text, removed = _TAG_RUN.subn("", text)
    bidi = len(_BIDI.findall(text))
    joiners = len(_EMOJI_JOINERS.findall(text))
    text, n = _INVISIBLE.subn("", text)
    return text, removed + n - joiners, bidi, tags


_CONF = "".join(CONFUSABLES)
# A Latin letter next to a look-alike: every mixed-script word has such a seam.
_SEAM = re2.compile(f"[A-Za-z][{_CONF}]|[{_CONF}][A-Za-z]")
_SEAM_PY = re.compile(f"[A-Za-z][{_CONF}]|[{_CONF}][A-Za-z]")
_WORD_CHARS = re.compile(r"\w+")


def fold_confusables(text: str) -> tuple[str, int]:
    """Map Cyrillic/Greek look-alikes to Latin inside words that also hold Latin letters
    (a Russian sentence stays Russian; "іgnоre" becomes "ignore")."""
    if text.isascii() or not _SEAM.search(text):
        return text, 0
    out: list[str] = []
    last = 0
    count = 0
    for m in re.finditer(_SEAM_PY, text):
        if m.start() < last:
            continue
        s = m.start()
        while s > 0 and (text[s - 1].isalnum() or text[s - 1] == "_"):
            s -= 1
        w = _WORD_CHARS.match(text, s)
        e = w.end() if w else m.end()
        out.append(text[last:s])
        out.append(text[s:e].translate(_CONFUSABLE_TABLE))
        count += 1
        last = e
    out.append(text[last:])
    return "".join(out), count


def leet_view(text: str) -> str:
    """Every leet character folded, numbers included (a matching view only). Works on
    UTF-8 bytes: multi-byte sequences have no ASCII bytes, so they pass through."""
    return text.encode().translate(LEET_BYTES).decode()


def fold_leet(text: str) -> str:
    """Fold leetspeak tokens ("1gn0r3 4ll pr3v10us") to letters; other tokens untouched."""
    return _LEET_TOKEN.sub(lambda m: m.group(0).translate(LEET_TABLE), text)


def normalise(text: str) -> Normalised:
    """Undo the hiding tricks above. The result is idempotent: normalising twice changes
    nothing more. Leetspeak is not folded here (it would corrupt numbers and code);
    the heuristics match on :func:`fold_leet` of the result as a second view."""
    stripped, removed, bidi, tags = strip_invisible(text)
    if not stripped.isascii() and not unicodedata.is_normalized("NFKC", stripped):
        stripped = unicodedata.normalize("NFKC", stripped)
        # NFKC can itself produce nothing invisible, but keep idempotence strict.
        stripped, more, more_bidi, more_tags = strip_invisible(stripped)
        removed, bidi, tags = removed + more, bidi + more_bidi, tags + more_tags
    folded, homoglyphs = fold_confusables(stripped)
    n = Normalised(text=folded, invisible=removed, bidi=bidi, tags=tags, homoglyphs=homoglyphs)
    if tags.strip():
        n.hits.append(Hit("detect.ascii_smuggling",
                          f"text hidden in {len(tags)} Unicode tag characters",
                          score=1.0, evidence=tags[:80], severity=Severity.HIGH))
    if removed - len(tags) > 0:
        n.hits.append(Hit("detect.invisible_text",
                          f"{removed - len(tags)} invisible characters (zero-width or "
                          f"bidirectional controls) removed",
                          score=0.6, severity=Severity.LOW))
    if homoglyphs:
        n.hits.append(Hit("detect.homoglyphs",
                          f"{homoglyphs} words mix Latin with look-alike letters",
                          score=0.5, severity=Severity.LOW))
    return n
