"""HTML extraction: raw HTTP payload in, main-content plain text out."""

from __future__ import annotations


class HtmlExtractor:
    """Main-content text of an HTML payload (resiliparse), or ``None`` when it is not HTML."""

    def extract(self, payload: bytes, content_type: str) -> str | None:
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.encoding import bytes_to_str, detect_encoding

        if "html" not in (content_type or "").lower():
            return None
        html = bytes_to_str(payload, detect_encoding(payload))
        return extract_plain_text(html, main_content=True, alt_texts=False, links=False).strip()
