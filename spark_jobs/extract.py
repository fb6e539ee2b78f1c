"""HTML extraction: raw HTTP payload in, main-content plain text out.

``HtmlExtractor`` is the ``extract`` step. Documents that arrive with text already (JSONL, WET,
Parquet, plain-text inputs) pass through untouched; HTML payloads (WARC response records) are
decoded with their character set and reduced to their main content, navigation, sidebars,
footers, scripts and styles removed.

Engines:

``resiliparse`` (default)
    ``extract_plain_text(main_content=True, alt_texts=False, links=False)``: a C++ DOM walk with
    main-content heuristics, roughly 10x faster than trafilatura.
``trafilatura``
    ``trafilatura.extract(favor_precision=True, include_comments=False, include_tables=True)``
    (FineWeb's settings, less its cross-document ``deduplicate`` cache, which would make output
    depend on how documents are partitioned). Slower, a little more precise on boilerplate.
    With lxml >= 5.2 it needs the separate ``lxml_html_clean`` package. It never uses the network.
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from tokenmill.spark_jobs.steps import DocumentStep

ENGINES = ("resiliparse", "trafilatura")

# WHATWG MIME sniffing, "identifying a resource with an unknown MIME type": after leading
# whitespace, one of these tags (then a space or '>') means HTML.
_HTML_SNIFF = re.compile(
    rb"[\t\n\x0c\r ]*<(?:!doctype\s+html|html|head|body|script|iframe|h1|div|font|table|a|style|title|b|br|p|meta|!--)"
    rb"[\s>]",
    re.IGNORECASE,
)
_CHARSET = re.compile(r"""charset\s*=\s*["']?([\w.:-]+)""", re.IGNORECASE)
# WHATWG "encoding labels": what browsers actually decode these labels as.
_WHATWG_ALIASES = {
    "latin1": "cp1252",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "l1": "cp1252",
    "cp819": "cp1252",
    "iso-8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "gb2312": "gbk",
    "x-gbk": "gbk",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "unicode": "utf-16le",
    "utf-16": "utf-16le",
}


def is_html(payload: bytes | None, content_type: str | None) -> bool:
    """True for an HTML/XHTML content type, or a payload that sniffs as HTML whatever its declared type."""
    if "html" in (content_type or "").lower():
        return True
    if not payload:
        return False
    head = payload[:1024]
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    return _HTML_SNIFF.match(head) is not None


def decode_html(payload: bytes, content_type: str | None = None) -> str:
    """Unicode text of an HTML payload.

    Order: a payload that is valid UTF-8 is UTF-8 (non-UTF-8 text with high bytes practically
    never validates as UTF-8, while mislabelled UTF-8 pages are common); otherwise the HTTP
    header's ``charset`` (WHATWG-mapped, so ``iso-8859-1`` is decoded as ``cp1252`` like
    browsers do); otherwise the ``<meta charset>`` in the first 1 KiB, then uchardet
    (resiliparse ``detect_encoding``). Undecodable bytes are dropped, never raised.
    """
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    try:
        return payload.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        pass
    encoding = _header_charset(content_type) or detect_encoding(payload, from_html_meta=True)
    return bytes_to_str(payload, encoding)


def _header_charset(content_type: str | None) -> str | None:
    m = _CHARSET.search(content_type or "")
    if not m:
        return None
    label = m.group(1).lower()
    label = _WHATWG_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


class HtmlExtractor(DocumentStep):
    """Main-content text of HTML payloads; documents that already have text pass through.

    Reasons: ``extract_not_html`` (neither the content type nor the payload is HTML),
    ``extract_empty`` (no payload, or nothing left after extraction). Sets ``doc["text"]`` and
    frees ``doc["payload"]``.
    """

    name = "extract"

    def __init__(self, engine: str = "resiliparse"):
        if engine not in ENGINES:
            raise ValueError(f"extract.engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine

    def setup(self) -> None:
        # Import (and so fail on a missing package) once per worker, before the first document.
        if self.engine == "trafilatura":
            import lxml_html_clean  # noqa: F401  (trafilatura's HTML cleaner with lxml >= 5.2)
            import trafilatura  # noqa: F401
        else:
            from resiliparse.extract.html2text import extract_plain_text  # noqa: F401

    def process(self, doc: dict[str, Any]) -> str | None:
        if doc.get("text") is not None:  # input already extracted (JSONL, WET, Parquet, text)
            doc["payload"] = None
            return None
        payload = doc.get("payload")
        doc["payload"] = None  # free the raw bytes early: only the text travels on
        if not is_html(payload, doc.get("content_type")):
            return "extract_not_html"
        text = self.extract_text(payload, doc.get("content_type"))
        doc["text"] = text
        return None if text else "extract_empty"

    def extract_text(self, payload: bytes | None, content_type: str | None = None) -> str:
        """Main-content plain text of an HTML payload ('' when there is none)."""
        if not payload:
            return ""
        html = decode_html(payload, content_type)
        if self.engine == "trafilatura":
            import trafilatura

            text = trafilatura.extract(
                html,
                favor_precision=True,
                include_comments=False,
                include_tables=True,
                deduplicate=False,
                with_metadata=False,
                output_format="txt",
            )
            return (text or "").strip()
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False, links=False).strip()
