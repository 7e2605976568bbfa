"""PII in outgoing text, validated so that look-alike numbers do not fire.

Card numbers must pass Luhn and have a known issuer prefix, IBANs must pass ISO 7064
mod-97 with the right length for their country, phone numbers need an international or
separated form, e-mail addresses a dotted domain.
"""

from __future__ import annotations

import re

from ..actions import Severity
from .base import Hit

_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,5}){1,4}(?!\w)"
    r"|(?<!\w)\(\d{3}\)\s?\d{3}-\d{4}(?!\w)|(?<![\w-])\d{3}-\d{3}-\d{4}(?![\w-])")

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    n = len(digits)
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    p2, p4 = int(digits[:2]), int(digits[:4])
    if n == 16 and (51 <= p2 <= 55 or 2221 <= p4 <= 2720):
        return "mastercard"
    if n == 15 and p2 in (34, 37):
        return "amex"
    if n in (16, 19) and (p4 == 6011 or p2 == 65):
        return "discover"
    if 16 <= n <= 19 and 3528 <= p4 <= 3589:
        return "jcb"
    return None


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s):
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def scan(text: str, *, kinds: frozenset[str] = frozenset({"card", "iban", "email", "phone"})) -> list[Hit]:
    hits: list[Hit] = []
    if "card" in kinds:
        for m in _CARD.finditer(text):
            d = re.sub(r"\D", "", m.group(0))
            if 13 <= len(d) <= 19 and card_issuer(d) and luhn_ok(d):
                hits.append(Hit("detect.pii.card", f"payment card number ({card_issuer(d)})",
                                span=m.span(), evidence=f"****{d[-4:]}", severity=Severity.HIGH))
    if "iban" in kinds:
        for m in _IBAN.finditer(text):
            if iban_ok(m.group(0)):
                hits.append(Hit("detect.pii.iban", "IBAN with a valid checksum", span=m.span(),
                                evidence=m.group(0)[:4] + "****", severity=Severity.HIGH))
    if "email" in kinds:
        for m in _EMAIL.finditer(text):
            hits.append(Hit("detect.pii.email", "e-mail address", span=m.span(),
                            evidence=m.group(0).split("@")[0][:2] + "***@" + m.group(0).split("@")[1],
                            severity=Severity.LOW, score=0.5))
    if "phone" in kinds:
        taken = [h.span for h in hits if h.span]
        for m in _PHONE.finditer(text):
            d = re.sub(r"\D", "", m.group(0))
            if not 8 <= len(d) <= 15 or any(s[0] <= m.start() < s[1] for s in taken):
                continue
            if re.fullmatch(r"\d{4}[-.]\d{2}[-.]\d{2}", m.group(0).strip()):
                continue  # an ISO date
            hits.append(Hit("detect.pii.phone", "phone number", span=m.span(),
                            evidence="***" + d[-3:], severity=Severity.LOW, score=0.5))
    return hits
