"""tokenmill.spark_jobs.extract.HtmlExtractor: HTML payloads to main-content text (no Spark)."""

from __future__ import annotations

import socket

import pytest
from step_checks import assert_document_step, ready

from tokenmill.spark_jobs.extract import HtmlExtractor, decode_html, is_html

ARTICLE = (
    "The river delta supports a remarkable diversity of migratory birds, and local researchers have "
    "spent decades counting the herons, egrets and sandpipers that arrive there each spring. "
)
BOILERPLATE = ["Sign in to your account", "Ten cheap flights you must see", "All rights reserved by Example Corp"]


def html_page(body_text: str = ARTICLE * 3, charset: str = "utf-8") -> str:
    return f"""<!DOCTYPE html>
<html><head><meta charset="{charset}"><title>Delta birds</title>
<script>var tracking = "should never appear";</script><style>body {{ color: red }}</style></head>
<body>
<header><nav class="navbar"><ul><li><a href="/">Home</a></li><li><a href="/about">About us</a></li>
<li><a href="/login">Sign in to your account</a></li></ul></nav></header>
<aside class="sidebar"><h3>Related</h3><ul><li><a href="/x">Ten cheap flights you must see</a></li></ul></aside>
<main><article><h1>Counting birds in the delta</h1>
<p>{body_text}</p><p>{ARTICLE * 2}</p><p>{ARTICLE * 3}</p>
</article></main>
<footer><p>All rights reserved by Example Corp</p><a href="/privacy">Privacy policy</a></footer>
</body></html>"""


def doc(payload: bytes | None, content_type: str = "text/html; charset=utf-8", text: str | None = None) -> dict:
    return {
        "id": "d1",
        "url": "http://example.com/a",
        "source": "x.warc.gz",
        "text": text,
        "payload": payload,
        "content_type": content_type,
        "stats": {},
    }


@pytest.fixture(scope="module", params=["resiliparse", "trafilatura"])
def extractor(request):
    return ready(HtmlExtractor(engine=request.param))


def test_is_a_document_step_named_extract():
    assert_document_step(HtmlExtractor(), "extract", engine="resiliparse")


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="extract.engine"):
        HtmlExtractor(engine="beautifulsoup")


def test_main_content_is_kept_and_boilerplate_removed(extractor):
    d = doc(html_page().encode())
    assert extractor.process(d) is None
    text = d["text"]
    assert "Counting birds in the delta" in text
    assert text.count("remarkable diversity of migratory birds") == 8
    for junk in BOILERPLATE + ["should never appear", "color: red", "<p>", "Privacy policy"]:
        assert junk not in text
    assert d["payload"] is None  # raw bytes freed once extracted


def test_latin1_page_with_header_charset(extractor):
    body = "Crème brûlée à la française, déjà vu, naïve façade. " + ARTICLE
    payload = html_page(body, charset="iso-8859-1").encode("latin-1")
    with pytest.raises(UnicodeDecodeError):
        payload.decode("utf-8")
    d = doc(payload, content_type="text/html; charset=ISO-8859-1")
    assert extractor.process(d) is None
    assert "Crème brûlée à la française, déjà vu, naïve façade." in d["text"]
    assert "\ufffd" not in d["text"]


def test_latin1_page_with_meta_charset_only():
    body = "Crème brûlée à la française, déjà vu, naïve façade. " + ARTICLE
    d = doc(html_page(body, charset="windows-1252").encode("cp1252"), content_type="text/html")
    assert HtmlExtractor().process(d) is None
    assert "Crème brûlée à la française" in d["text"]


def test_windows_1252_punctuation_under_a_latin1_label_decodes_as_browsers_do():
    payload = "<html><body><p>\u201cQuoted\u201d \u2014 dash \u20ac5</p></body></html>".encode("cp1252")
    assert (
        decode_html(payload, "text/html; charset=iso-8859-1")
        == "<html><body><p>\u201cQuoted\u201d \u2014 dash \u20ac5</p></body></html>"
    )


def test_utf8_payload_mislabelled_as_latin1_is_still_utf8():
    payload = html_page("Größe und Übermaß. " + ARTICLE, charset="iso-8859-1").encode("utf-8")
    d = doc(payload, content_type="text/html; charset=iso-8859-1")
    assert HtmlExtractor().process(d) is None
    assert "Größe und Übermaß." in d["text"]


def test_non_utf8_cjk_page_uses_its_charset():
    body = "日本語のテキストです。" * 20
    payload = f"<html><head><meta charset='shift_jis'></head><body><article><p>{body}</p></article></body></html>"
    d = doc(payload.encode("shift_jis"), content_type="text/html")
    assert HtmlExtractor().process(d) is None
    assert "日本語のテキストです。" in d["text"]


@pytest.mark.parametrize(
    "payload, content_type",
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "application/pdf"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b'{"a": 1}', "application/json"),
        (b"just some plain text", "text/plain"),
        (b"", ""),
        (None, ""),
        (None, None),
    ],
)
def test_non_html_is_dropped(payload, content_type):
    d = doc(payload, content_type=content_type)
    assert HtmlExtractor().process(d) == "extract_not_html"
    assert d["text"] is None
    assert d["payload"] is None


@pytest.mark.parametrize("content_type", ["", "text/plain", "application/octet-stream", None])
def test_html_payload_without_an_html_content_type_is_sniffed(content_type):
    d = doc(html_page().encode(), content_type=content_type)
    assert HtmlExtractor().process(d) is None
    assert "Counting birds in the delta" in d["text"]


def test_xhtml_content_type_is_html():
    assert is_html(b"<?xml version='1.0'?><html/>", "application/xhtml+xml")


def test_already_extracted_text_passes_through(extractor):
    d = doc(
        b"<html><body><p>ignored</p></body></html>",
        content_type="text/html",
        text="Text from a WET record.\n\nSecond paragraph.",
    )
    assert extractor.process(d) is None
    assert d["text"] == "Text from a WET record.\n\nSecond paragraph."
    assert d["payload"] is None


def test_empty_string_text_is_kept_as_given():
    d = doc(None, content_type="", text="")
    assert HtmlExtractor().process(d) is None
    assert d["text"] == ""


def test_page_without_main_text_is_empty(extractor):
    d = doc(b"<!doctype html><html><body><div>  </div><script>var x = 1;</script></body></html>")
    assert extractor.process(d) == "extract_empty"
    assert d["text"] == ""


def test_html_content_type_without_payload_is_empty():
    d = doc(None, content_type="text/html")
    assert HtmlExtractor().process(d) == "extract_empty"


def test_process_works_without_setup():
    for engine in ("resiliparse", "trafilatura"):
        d = doc(html_page().encode())
        assert HtmlExtractor(engine=engine).process(d) is None
        assert "migratory birds" in d["text"]


def test_trafilatura_needs_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    step = HtmlExtractor(engine="trafilatura")
    step.setup()
    d = doc(html_page().encode())
    assert step.process(d) is None
    assert "Counting birds in the delta" in d["text"]
    assert "Sign in to your account" not in d["text"]
