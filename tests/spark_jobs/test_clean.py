"""spark_jobs.clean.DocumentPipeline and the funnel: every record becomes kept, dropped or quarantined (no Spark)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tokenmill.spark_jobs.clean import DOC_COLUMNS, DocumentPipeline, _funnel
from tokenmill.spark_jobs.extract import HtmlExtractor
from tokenmill.spark_jobs.filters import GopherQualityFilter
from tokenmill.spark_jobs.pii import PIIRedactor
from tokenmill.spark_jobs.readers import RAW_COLUMNS
from tokenmill.spark_jobs.steps import DocumentStep

SENTENCE = "The quick brown fox jumps over the lazy dog and then it runs to the river bank."
GOOD_TEXT = " ".join([f"{SENTENCE[:-1]} number {i}." for i in range(8)])


def page(body: str) -> bytes:
    return f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>".encode()


def record(**kw):
    base = dict.fromkeys(RAW_COLUMNS)
    base.update(
        id="id-1",
        url="http://example.com/",
        source="x.warc.gz",
        offset=0,
        content_type="text/html; charset=utf-8",
        payload=page(f"<article><p>{GOOD_TEXT}</p></article>"),
    )
    return {**base, **kw}


class Boom(DocumentStep):
    name = "boom"

    def process(self, doc):
        raise RuntimeError("kaput")


@pytest.fixture
def pipeline():
    return DocumentPipeline([HtmlExtractor(), GopherQualityFilter(), PIIRedactor()], from_raw=True)


def test_good_page_is_kept_with_extracted_text_and_no_payload(pipeline):
    doc = pipeline.run(record())
    assert doc["status"] == "kept" and doc["reason"] is None and doc["stage"] is None
    assert "quick brown fox" in doc["text"] and "<p>" not in doc["text"]
    assert doc["payload"] is None
    assert set(doc) == set(DOC_COLUMNS)


def test_read_error_is_quarantined_at_stage_read(pipeline):
    doc = pipeline.run(record(error="unreadable WARC record: boom", payload=None))
    assert (doc["status"], doc["stage"], doc["reason"]) == ("quarantined", "read", "read_error")
    assert "boom" in doc["error"]


def test_first_dropping_step_stops_the_document(pipeline):
    doc = pipeline.run(record(payload=page("<p>too short</p>")))
    assert (doc["status"], doc["stage"]) == ("dropped", "gopher_quality")
    assert doc["reason"].startswith("gopher_quality_")


def test_non_html_dropped_by_extract(pipeline):
    doc = pipeline.run(record(content_type="image/png", payload=b"\x89PNG\r\n\x1a\n...."))
    assert (doc["status"], doc["stage"], doc["reason"]) == ("dropped", "extract", "extract_not_html")


def test_step_counters_are_carried_as_json(pipeline):
    text = GOOD_TEXT + " Write to jane.doe@example.org for details."
    doc = pipeline.run(record(payload=None, text=text))
    assert doc["status"] == "kept"
    assert "<EMAIL>" in doc["text"]
    assert json.loads(doc["stats"]) == {"pii_email": 1}


def test_a_step_that_raises_quarantines_the_document_with_the_error():
    doc = DocumentPipeline([Boom()], from_raw=True).run(record(payload=None, text=GOOD_TEXT))
    assert (doc["status"], doc["stage"], doc["reason"]) == ("quarantined", "boom", "boom_failed")
    assert doc["error"] == "RuntimeError: kaput"


def test_later_pass_leaves_dropped_rows_alone():
    first = DocumentPipeline([HtmlExtractor()], from_raw=True).run(record(content_type="image/png", payload=b"\x89PNG"))
    assert first["status"] == "dropped"
    again = DocumentPipeline([Boom()], from_raw=False).run(dict(first))
    assert again == first


def test_call_yields_one_row_per_input_row_in_batches(pipeline):
    batch = pd.DataFrame([record(id=f"id-{i}") for i in range(5)] + [record(id="bad", error="x")])
    out = pd.concat(list(pipeline(iter([batch]))))
    assert list(out.columns) == DOC_COLUMNS
    assert list(out["id"]) == [f"id-{i}" for i in range(5)] + ["bad"]
    assert list(out["status"]) == ["kept"] * 5 + ["quarantined"]


def test_funnel_chains_each_stage_into_the_next():
    outcome = [
        {"status": "kept", "stage": None, "reason": None, "count": 5},
        {"status": "quarantined", "stage": "read", "reason": "read_error", "count": 1},
        {"status": "dropped", "stage": "extract", "reason": "extract_empty", "count": 2},
        {"status": "dropped", "stage": "minhash", "reason": "minhash_near_duplicate", "count": 3},
    ]
    funnel = _funnel(11, ["extract", "langid", "minhash"], outcome)
    assert [r["stage"] for r in funnel] == ["read", "extract", "langid", "minhash"]
    assert [(r["in"], r["out"]) for r in funnel] == [(11, 10), (10, 8), (8, 8), (8, 5)]
    assert funnel[0]["quarantined"] == 1


def test_a_page_left_without_text_is_dropped_as_no_text_not_kept():
    # extract left out of the steps: the WARC page still has only its payload after the last step
    doc = DocumentPipeline([PIIRedactor()], from_raw=True).run(record())
    assert (doc["status"], doc["stage"], doc["reason"]) == ("dropped", "pii", "no_text")
    doc = DocumentPipeline([], from_raw=True).run(record())
    assert (doc["status"], doc["stage"], doc["reason"]) == ("dropped", "read", "no_text")


@pytest.mark.parametrize("text", ["", "  \n\t "])
def test_an_empty_text_is_dropped_as_no_text(text):
    doc = DocumentPipeline([PIIRedactor()], from_raw=True).run(record(payload=None, text=text))
    assert (doc["status"], doc["stage"], doc["reason"]) == ("dropped", "pii", "no_text")


def test_a_pass_before_a_later_extract_does_not_require_text():
    # e.g. data.steps [url_dedup, extract, ...]: the first pass runs before the text exists
    doc = DocumentPipeline([], from_raw=True, require_text=False).run(record())
    assert doc["status"] == "kept" and doc["text"] is None and doc["payload"] is not None
    doc = DocumentPipeline([HtmlExtractor()], from_raw=False).run(doc)
    assert doc["status"] == "kept" and "quick brown fox" in doc["text"]
