"""spark_jobs.dedup.ExactDeduplicator on a small local Spark DataFrame."""

from __future__ import annotations

import pytest

from spark_jobs.clean import DOC_SCHEMA
from spark_jobs.dedup import ExactDeduplicator



def doc(id, text, status="kept", reason=None, error=None, url=None):
    return (id, url or f"http://example.com/{id}", "x.warc.gz", text, status, reason, error)


def dedup(spark, rows):
    out = ExactDeduplicator().apply(spark.createDataFrame(rows, DOC_SCHEMA)).collect()
    return {r["id"]: r.asDict() for r in out}


def test_whitespace_and_case_variants_are_duplicates_smallest_id_kept(spark):
    rows = [
        doc("c", "Hello   World.\nSecond line"),
        doc("a", "hello world.  second\t\tLINE"),
        doc("b", "HELLO WORLD. SECOND LINE"),
        doc("d", "something else entirely"),
    ]
    out = dedup(spark, rows)
    assert len(out) == len(rows)
    assert out["a"]["status"] == "kept" and out["a"]["reason"] is None and out["a"]["duplicate_of"] is None
    for copy in ("b", "c"):
        assert out[copy]["status"] == "dropped"
        assert out[copy]["reason"] == "exact_duplicate"
        assert out[copy]["duplicate_of"] == "a"
    assert out["d"]["status"] == "kept" and out["d"]["duplicate_of"] is None
    # the text itself is not rewritten by normalisation
    assert out["c"]["text"] == "Hello   World.\nSecond line"


def test_leading_and_trailing_whitespace_is_normalised_too(spark):
    """Newlines/tabs at the ends are layout whitespace like any other (Spark's trim only strips spaces)."""
    out = dedup(spark, [doc("a", "same text"), doc("b", "\nsame text\n"), doc("c", "\tsame text ")])
    assert out["b"]["duplicate_of"] == "a"
    assert out["c"]["duplicate_of"] == "a"


def test_non_kept_rows_pass_through_untouched(spark):
    rows = [
        doc("a", "shared text"),
        doc("b", "shared text", status="dropped", reason="gopher_word_count"),
        doc("c", "", status="quarantined", reason="unreadable_record", error="boom"),
        doc("0", "shared text", status="dropped", reason="not_html"),
    ]
    out = dedup(spark, rows)
    assert len(out) == len(rows)
    assert out["a"]["status"] == "kept" and out["a"]["duplicate_of"] is None  # "0" is not kept: not a rival
    for row in rows[1:]:
        got = out[row[0]]
        assert (got["id"], got["url"], got["source"], got["text"], got["status"], got["reason"], got["error"]) == row
        assert got["duplicate_of"] is None


def test_distinct_texts_are_all_kept_and_schema_gains_duplicate_of(spark):
    rows = [doc(str(i), f"document number {i}") for i in range(5)]
    df = ExactDeduplicator().apply(spark.createDataFrame(rows, DOC_SCHEMA))
    assert set(df.columns) == {"id", "url", "source", "text", "status", "reason", "error", "duplicate_of"}
    out = {r["id"]: r for r in df.collect()}
    assert len(out) == 5
    assert all(r["status"] == "kept" and r["duplicate_of"] is None for r in out.values())
