"""spark_jobs.clean.DocumentProcessor: every raw record becomes kept, dropped or quarantined (no Spark)."""

from __future__ import annotations

import pandas as pd
import pytest

from spark_jobs.clean import DOC_SCHEMA, DocumentProcessor
from spark_jobs.extract import HtmlExtractor
from spark_jobs.filters import GopherQualityFilter

DOC_COLUMNS = [c.split()[0] for c in DOC_SCHEMA.split(", ")]

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."
GOOD_TEXT = " ".join([SENTENCE] * 6)  # 84 words of mean length ~4


def page(body: str) -> bytes:
    return (f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>").encode()


def record(**kw):
    base = {"id": "id-1", "url": "http://example.com/", "source": "x.warc.gz", "offset": 0,
            "content_type": "text/html; charset=utf-8", "payload": page(f"<article><p>{GOOD_TEXT}</p></article>"),
            "error": None}
    return {**base, **kw}


@pytest.fixture(scope="module")
def processor():
    return DocumentProcessor(HtmlExtractor(), [GopherQualityFilter(min_words=50)])


def test_good_page_is_kept_with_its_text(processor):
    doc = processor.process(record())
    assert doc["status"] == "kept"
    assert doc["reason"] is None and doc["error"] is None
    assert "quick brown fox" in doc["text"]
    assert "<p>" not in doc["text"] and "<title>" not in doc["text"]
    assert doc["text"].split() == GOOD_TEXT.split()
    assert (doc["id"], doc["url"], doc["source"]) == ("id-1", "http://example.com/", "x.warc.gz")
    assert set(doc) == set(DOC_COLUMNS)


def test_record_with_error_is_quarantined(processor):
    doc = processor.process(record(error="unreadable WARC record: boom", payload=None))
    assert doc["status"] == "quarantined"
    assert doc["reason"] == "unreadable_record"
    assert doc["error"] == "unreadable WARC record: boom"
    assert doc["id"] == "id-1"


def test_nan_error_from_pandas_is_not_an_error(processor):
    doc = processor.process(record(error=float("nan")))
    assert doc["status"] == "kept"


@pytest.mark.parametrize("content_type", ["application/pdf", "image/png", "", None])
def test_non_html_is_dropped(processor, content_type):
    doc = processor.process(record(content_type=content_type))
    assert (doc["status"], doc["reason"]) == ("dropped", "not_html")
    assert doc["error"] is None


def test_page_without_text_is_dropped_as_empty(processor):
    doc = processor.process(record(payload=page("<div>   </div><script>var x = 1;</script>")))
    assert (doc["status"], doc["reason"]) == ("dropped", "empty_text")


def test_missing_payload_is_empty_text(processor):
    doc = processor.process(record(payload=None))
    assert (doc["status"], doc["reason"]) == ("dropped", "empty_text")


def test_short_page_gets_the_filters_reason(processor):
    doc = processor.process(record(payload=page("<article><p>Just a few words here, not enough.</p></article>")))
    assert (doc["status"], doc["reason"]) == ("dropped", "gopher_word_count")
    assert "Just a few words" in doc["text"]  # dropped documents keep their text for inspection


def test_first_rejecting_filter_wins():
    class Always:
        name = "always"

        def __init__(self, reason):
            self.reason = reason

        def reject_reason(self, text):
            return self.reason

    proc = DocumentProcessor(HtmlExtractor(), [Always(None), Always("first"), Always("second")])
    assert proc.process(record())["reason"] == "first"


def test_extraction_failure_is_quarantined():
    class Broken(HtmlExtractor):
        def extract(self, payload, content_type):
            raise RuntimeError("parser exploded")

    doc = DocumentProcessor(Broken(), []).process(record())
    assert (doc["status"], doc["reason"]) == ("quarantined", "extraction_failed")
    assert "parser exploded" in doc["error"]


def test_call_maps_a_batch_to_doc_columns(processor):
    batch = pd.DataFrame([record(id="a"), record(id="b", content_type="image/png"),
                          record(id="c", error="bad", payload=None)])
    frames = list(processor(iter([batch])))
    out = pd.concat(frames)
    assert list(out.columns) == DOC_COLUMNS
    assert list(out["id"]) == ["a", "b", "c"]
    assert list(out["status"]) == ["kept", "dropped", "quarantined"]
