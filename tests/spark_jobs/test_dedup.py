"""tokenmill.spark_jobs.dedup: exact-text and URL dedup on a small local Spark DataFrame."""

from __future__ import annotations

from tokenmill.spark_jobs.clean import DOC_COLUMNS, DOC_SCHEMA
from tokenmill.spark_jobs.dedup import ExactDeduplicator, UrlDeduplicator
from tokenmill.spark_jobs.ledger import apply_dataset_steps


def doc(id, text, status="kept", url=None, stage=None, reason=None):
    row = dict.fromkeys(DOC_COLUMNS)
    row.update(
        id=id,
        url=url if url is not None else f"http://example.com/{id}",
        source="x",
        text=text,
        status=status,
        stage=stage,
        reason=reason,
        stats="{}",
    )
    return tuple(row[c] for c in DOC_COLUMNS)


def run(spark, step, rows):
    out = apply_dataset_steps(spark.createDataFrame(rows, DOC_SCHEMA), [step]).collect()
    assert len(out) == len(rows)  # nothing lost, nothing added
    return {r["id"]: r.asDict() for r in out}


def test_whitespace_and_case_variants_are_duplicates_smallest_id_kept(spark):
    out = run(
        spark, ExactDeduplicator(), [doc("b", "Hello   World\n"), doc("a", "\thello world"), doc("c", "hello world!")]
    )
    assert out["a"]["status"] == "kept" and out["a"]["duplicate_of"] is None
    assert (out["b"]["status"], out["b"]["stage"], out["b"]["reason"]) == (
        "dropped",
        "exact_dedup",
        "exact_dedup_duplicate",
    )
    assert out["b"]["duplicate_of"] == "a"
    assert out["c"]["status"] == "kept"  # punctuation differs: not the same text


def test_case_sensitive_when_asked(spark):
    out = run(spark, ExactDeduplicator(lowercase=False), [doc("a", "Hello"), doc("b", "hello")])
    assert {r["status"] for r in out.values()} == {"kept"}


def test_rows_already_dropped_pass_through_untouched(spark):
    rows = [
        doc("a", "same"),
        doc("b", "same", status="dropped", stage="langid", reason="langid_language"),
        doc("c", "same", status="quarantined", stage="read", reason="read_error"),
    ]
    out = run(spark, ExactDeduplicator(), rows)
    assert out["a"]["status"] == "kept"
    assert (out["b"]["stage"], out["b"]["reason"], out["b"]["duplicate_of"]) == ("langid", "langid_language", None)
    assert out["c"]["status"] == "quarantined"


def test_url_variants_are_one_page_and_the_longest_text_wins(spark):
    rows = [
        doc("a", "short", url="https://Example.com/page?utm_source=x#top"),
        doc("b", "the longer text", url="https://example.com/page/"),
        doc("c", "other", url="https://example.com/page?id=2"),
        doc("d", "no url", url=""),
        doc("e", "no url either", url=""),
    ]
    out = run(spark, UrlDeduplicator(), rows)
    assert out["b"]["status"] == "kept"
    assert (out["a"]["status"], out["a"]["reason"], out["a"]["duplicate_of"]) == ("dropped", "url_dedup_duplicate", "b")
    assert out["c"]["status"] == "kept"  # a real query parameter makes a different page
    assert out["d"]["status"] == out["e"]["status"] == "kept"  # documents without URLs are never merged


def test_tracking_parameters_kept_when_asked(spark):
    rows = [doc("a", "one", url="https://example.com/p?utm_source=x"), doc("b", "two", url="https://example.com/p")]
    out = run(spark, UrlDeduplicator(strip_tracking=False), rows)
    assert {r["status"] for r in out.values()} == {"kept"}
