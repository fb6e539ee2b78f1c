"""PII redaction: e-mail addresses, public IP addresses and phone numbers become placeholders.

Regular expressions find candidates; IP candidates are then checked with :mod:`ipaddress`
(only globally routable unicast addresses are redacted). The rules lean towards precision:
web text is full of numbers that look like phone numbers or addresses (years, dates, prices,
version strings, ISBNs, product codes), and every false positive damages training text, while
a missed phone number in a public web page is a small harm. What is and isn't caught:

E-mail
    ``local@domain.tld``: ASCII local part of ``A-Z a-z 0-9 . _ % + -``, dot-separated domain
    labels and an alphabetic TLD of 2-63 letters (or ``xn--`` punycode). Misses quoted or
    non-ASCII local parts and ``user [at] example [dot] com`` obfuscations. The address ends at
    its TLD: in ``jane@example.com_`` or ``jane@example.org_foo`` the ``_`` and what follows stay
    as text. Retina image names such as ``logo@2x.png`` are left alone, and so is an address
    glued to another ``@`` (``a@b.com@c``, ``a@b.com_x@c``).
IPv4
    Dotted quads with no leading zeros (``ipaddress`` rejects them), not part of a longer dotted
    or alphanumeric run, whose address is global: private (10/8, 172.16/12, 192.168/16),
    loopback, link-local, shared 100.64/10, documentation, benchmarking, reserved and multicast
    ranges are kept. Dotted quads just after ``v``, ``version``, ``release``, ``build`` or a
    product token (``Chrome/120.0.0.0``) are version numbers and kept; three-part versions
    (``1.2.3``) never match.
IPv6
    Only the global unicast block 2000::/3 (every public IPv6 address today), full or ``::``
    compressed, validated by ``ipaddress`` and ``is_global`` (so 2001:db8::/32 documentation
    addresses are kept). Misses IPv4-mapped/embedded forms and zone ids.
Phone
    * International: ``+`` country code, then digit groups separated by single spaces, dots,
      hyphens or parentheses (``+44 20 7946 0958``, ``+1 (415) 555-0132``, ``+49 (0)30 1234567``)
      with 9 to 15 digits in all (E.164 allows 15; 9 skips the few countries with 7-digit
      numbers, to avoid matching ``+20 30 40 50``-style score/number lists).
    * North American: ``(415) 555-0132``, ``415-555-0132``, ``415.555.0132`` with an optional
      ``1-`` / ``+1`` prefix, area code and exchange starting 2-9 as NANP requires, the same
      separator twice, and no digit, dot-digit or hyphen-digit run on either side (so
      ISBNs ``978-0-306-40615-7``, dates ``2024-05-01``, times, prices, ``1999-2005`` and long
      plain numbers are not touched).
    * Not caught: national formats without ``+`` outside North America (``020 7946 0958``),
      space-only NANP numbers (``415 555 0132``, too close to tables of numbers), extensions,
      vanity numbers (``1-800-FLOWERS``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from tokenmill.spark_jobs.steps import DocumentStep

# Every pattern but the e-mail one starts with a literal or a small character set, so that
# re's scanner skips ordinary text in C; the "not glued to what comes before" checks are
# lookbehinds placed after that first character. E-mail matching only runs on the
# whitespace-delimited tokens that contain an '@'. The e-mail pattern ends at a letter or digit that
# no other letter or digit follows (not ``\b``, for which '_' is a letter: ``jane@example.com_`` is an
# address and its '_' plain text), nor an '@', directly or after '_' and address characters
# (``a@b.com@c`` and ``a@b.com_x@c`` are not addresses). Punycode is tried first, or ``.xn--p1ai`` would
# end at ``xn``.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*"
    r"@(?!\d+x\.(?:png|jpe?g|gif|webp|svg|avif)(?![^\W_]))"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+(?:xn--[A-Za-z0-9-]{0,58}[A-Za-z0-9]|[A-Za-z]{2,63})"
    r"(?![^\W_]|@|_[\w.%+-]*@)"
)
_TOKEN_END = (" ", "\n", "\t", "\r")  # e-mails contain none of these
_TOKEN_REST = re.compile(r"[^ \n\t\r]*")

_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\w|\.\d)")
_VERSION_CONTEXT = re.compile(r"(?:\bv|\bver\.?|\bversion|\brelease|\bbuild|\bupdate|[A-Za-z]/)\s*$", re.IGNORECASE)

# 2000::/3 starts with a 4-hex-digit group 2xxx or 3xxx, then 2 to 7 more groups (one "::" allowed;
# an 8th slot lets a trailing ":" of punctuation be matched and given back).
_IPV6 = re.compile(r"[23](?<![\w:.][23])[0-9A-Fa-f]{3}(?::[0-9A-Fa-f]{0,4}){2,8}(?![\w:]|\.\d)")
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")

# '+', country code, then up to 8 digit groups: ' 20', '-555', ' (0)', '(415)'. Possessive
# quantifiers: a long digit run cannot be split into groups in exponentially many ways.
_PHONE_INTL = re.compile(
    r"\+(?<![\w+]\+)[1-9]\d{0,2}"
    r"(?:[ .-]?\(\d{1,4}+\)|[ .-]?\d{1,5}+){1,8}+"
    r"(?![\w]|[.-]\d)"
)
_PHONE_GROUP_SEP = re.compile(r"[ .(-]")
_NANP_CC = re.compile(r"\+1(?!\d)")
_NANP_PAREN = r"[2-9]\d{2}\)[ ]?[2-9]\d{2}[-.]\d{4}"  # after "(": 415) 555-0132


def _nanp_plain(sep: str) -> str:  # after the area code's first digit: 15-555-0132 / 15.555.0132
    return rf"\d{{2}}(?P<{sep}>[-.])[2-9]\d{{2}}(?P={sep})\d{{4}}"


_PHONE_NANP = re.compile(
    r"[(+1-9](?<![\w+][(+1-9])(?<!\d[-.][(+1-9])"  # first character, not glued to a word or number
    r"(?:(?<=\+)1[-. ]?(?:\(" + _NANP_PAREN + r"|[2-9]" + _nanp_plain("s1") + r")"  # +1 ...
    r"|(?<=1)[-. ](?:\(" + _NANP_PAREN + r"|[2-9]" + _nanp_plain("s2") + r")"  # 1-800-...
    r"|(?<=\()"
    + _NANP_PAREN  # (415) 555-0132
    + r"|(?<=[2-9])"
    + _nanp_plain("s3")  # 415-555-0132
    + r")(?![\w]|[.-]\d)"
)
_DIGITS = re.compile(r"\d")


def _is_public_ipv4(candidate: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def _is_public_ipv6(candidate: str) -> bool:
    try:
        ip = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return ip in _IPV6_GLOBAL_UNICAST and ip.is_global


def _at_tokens(text: str):
    """(start, end) of the whitespace-delimited stretches of ``text`` that contain an '@'.

    Linear in the text, however many '@' it holds: each backward search stops at the end of
    the previous stretch.
    """
    done = 0
    at = text.find("@")
    while at != -1:
        start = max(done, max(text.rfind(c, done, at) for c in _TOKEN_END) + 1)
        done = _TOKEN_REST.match(text, at).end()
        yield start, done
        at = text.find("@", done)


def _email_matches(text: str):
    for start, end in _at_tokens(text):
        yield from _EMAIL.finditer(text, start, end)


def _substitute(text: str, matches, replace) -> tuple[str, int]:
    """``text`` with each match replaced by ``replace(match)`` (``None`` keeps it); and the count."""
    pieces, last, n = [], 0, 0
    for m in matches:
        out = replace(m)
        if out is None:
            continue
        pieces.append(text[last : m.start()])
        pieces.append(out)
        last = m.end()
        n += 1
    if not n:
        return text, 0
    pieces.append(text[last:])
    return "".join(pieces), n


class PIIRedactor(DocumentStep):
    """Replaces e-mail addresses, public IPv4/IPv6 addresses and phone numbers with placeholders.

    Never drops a document. Counters: ``pii_email``, ``pii_ipv4``, ``pii_ipv6``, ``pii_phone``
    (number of replacements, added only when non-zero).
    """

    name = "pii"

    def __init__(
        self,
        email: bool = True,
        ip: bool = True,
        phone: bool = True,
        email_placeholder: str = "<EMAIL>",
        ip_placeholder: str = "<IP_ADDRESS>",
        phone_placeholder: str = "<PHONE_NUMBER>",
    ):
        self.email = email
        self.ip = ip
        self.phone = phone
        self.email_placeholder = email_placeholder
        self.ip_placeholder = ip_placeholder
        self.phone_placeholder = phone_placeholder

    def process(self, doc: dict[str, Any]) -> str | None:
        text = doc.get("text")
        if not text:
            return None
        text, counts = self.redact(text)
        doc["text"] = text
        if counts:
            stats = doc.setdefault("stats", {})
            for key, n in counts.items():
                stats[key] = stats.get(key, 0) + n
        return None

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The redacted text and the non-zero counts of what was replaced."""
        counts: dict[str, int] = {}

        def run(key: str, matches, replace) -> None:
            nonlocal text
            text, n = _substitute(text, matches, replace)
            if n:
                counts[key] = counts.get(key, 0) + n

        # Order matters: addresses inside e-mails are gone before the IP and phone patterns run.
        if self.email and "@" in text:
            email = self.email_placeholder
            run("pii_email", _email_matches(text), lambda m: email)
        if self.ip:
            if "." in text:
                run("pii_ipv4", _IPV4.finditer(text), self._ipv4)
            if "::" in text or text.count(":") >= 7:
                run("pii_ipv6", _IPV6.finditer(text), self._ipv6)
        if self.phone:
            if "+" in text:
                run("pii_phone", _PHONE_INTL.finditer(text), self._intl_phone)
            phone = self.phone_placeholder
            run("pii_phone", _PHONE_NANP.finditer(text), lambda m: phone)
        return text, counts

    def _ipv4(self, m: re.Match) -> str | None:
        if not _is_public_ipv4(m.group(0)):
            return None
        if _VERSION_CONTEXT.search(m.string, max(0, m.start() - 12), m.start()):
            return None
        return self.ip_placeholder

    def _ipv6(self, m: re.Match) -> str | None:
        candidate = m.group(0)
        suffix = ""
        if candidate.endswith(":") and not candidate.endswith("::"):  # "... 2001:4860::8888: the"
            candidate, suffix = candidate[:-1], ":"
        return self.ip_placeholder + suffix if _is_public_ipv6(candidate) else None

    def _intl_phone(self, m: re.Match) -> str | None:
        number, tail = m.group(0), ""
        digits = len(_DIGITS.findall(number))
        most = 11 if _NANP_CC.match(number) else 15  # +1 numbers have 10 digits after the 1
        while digits > most:  # a year or count right after the number: give trailing groups back
            cut = max(i.start() for i in _PHONE_GROUP_SEP.finditer(number)) if _PHONE_GROUP_SEP.search(number) else 0
            if cut <= 1:
                return None
            number, tail = number[:cut], number[cut:] + tail
            digits = len(_DIGITS.findall(number))
        return self.phone_placeholder + tail if digits >= 9 else None
