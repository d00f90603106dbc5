"""Personal data in text: detect e-mail addresses, URLs, IBANs, credit cards, SSNs, IPs and phone numbers.

Each detector is a pattern plus, where the format has one, a checksum (Luhn for cards, mod-97 for
IBANs, octet ranges for IPs), so that order numbers and dates are not masked as cards or phones.
Masked values become typed placeholders such as ``<EMAIL>``.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    valid: Callable[[str], bool] = lambda s: True


def luhn_ok(number: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    text = re.sub(r"\s", "", value).upper()
    if not 15 <= len(text) <= 34:
        return False
    digits = "".join(str(int(c, 36)) for c in text[4:] + text[:4])
    return int(digits) % 97 == 1


def ssn_ok(value: str) -> bool:
    """US SSN rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = value.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def ip_ok(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Order matters: earlier kinds are masked first, so a URL's host is not also read as an e-mail.
DETECTORS: tuple[Detector, ...] = (
    Detector("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")),
    Detector("URL", re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]")),
    Detector("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), iban_ok),
    Detector("CREDIT_CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), luhn_ok),
    Detector("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), ssn_ok),
    Detector("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"), ip_ok),
    # International (+CC ...), North American ((555) 123-4567, 555-123-4567) and national trunk-0
    # numbers (020 7946 0958); bare digit runs are not phones (they are amounts, ids, card numbers).
    Detector("PHONE", re.compile(
        r"(?<![\w+-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]?\d{3,4}(?:[ .-]?\d{3,4})?"
        r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4})(?![\d-]| \d)")),
)


def scan(text: str) -> tuple[str, Counter]:
    """Mask every detected value with its placeholder; return the new text and counts per kind."""
    counts: Counter = Counter()
    for det in DETECTORS:
        def replace(match: re.Match, det=det) -> str:
            if not det.valid(match.group(0)):
                return match.group(0)
            counts[det.kind] += 1
            return f"<{det.kind}>"
        text = det.pattern.sub(replace, text)
    return text, counts


def kinds() -> list[str]:
    """Every kind of personal data detected."""
    return [d.kind for d in DETECTORS]
