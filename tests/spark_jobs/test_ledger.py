"""tokenmill.spark_jobs.ledger: dataset steps move keys, not text, and the outcome meets the documents once."""

from __future__ import annotations

import random

from tokenmill.spark_jobs.clean import DOC_COLUMNS, DOC_SCHEMA
from tokenmill.spark_jobs.dedup import ExactDeduplicator, UrlDeduplicator
from tokenmill.spark_jobs.ledger import (
    LEDGER_COLUMNS,
    apply_dataset_steps,
    ledger_of,
    outcome_partitions,
    with_outcome,
)
from tokenmill.spark_jobs.minhash import MinhashDeduplicator
from tokenmill.spark_jobs.progress import shuffle_bytes

TEXT_BYTES = 20_000


def doc(id, text, url, status="kept"):
    row = dict.fromkeys(DOC_COLUMNS)
    row.update(id=id, url=url, source="x", text=text, status=status, stats='{"n": 1}', lang="en")
    row["metadata"] = "m" * 5_000  # a wide column the dataset steps must not move either
    return tuple(row[c] for c in DOC_COLUMNS)


def corpus(n: int = 200):
    rng = random.Random(0)
    vocabulary = [f"w{rng.randrange(10**9)}" for _ in range(50_000)]
    rows = []
    for i in range(n):
        words = []
        while sum(len(w) + 1 for w in words) < TEXT_BYTES:
            words.append(rng.choice(vocabulary))
        rows.append(doc(f"d{i:04d}", " ".join(words), f"http://example.com/{i}"))
    rows.append(doc("e0", rows[0][DOC_COLUMNS.index("text")].upper(), "http://example.com/e"))  # exact copy
    rows.append(doc("u0", "short", "http://example.com/1?utm_source=x"))  # URL copy of d0001
    rows.append(doc("q0", None, "", status="quarantined"))
    return rows


def test_dataset_steps_shuffle_keys_not_text(spark):
    docs = spark.createDataFrame(corpus(), DOC_SCHEMA).persist()
    docs.count()
    steps = [ExactDeduplicator(), UrlDeduplicator(), MinhashDeduplicator()]
    before = shuffle_bytes(spark.sparkContext)["write_bytes"]
    ledger = ledger_of(docs, steps)
    for step in steps:
        ledger = step.apply(ledger, docs)
    out = {r["id"]: r for r in ledger.collect()}
    moved = shuffle_bytes(spark.sparkContext)["write_bytes"] - before
    n = len(out)
    assert n == docs.count()
    assert (out["e0"]["status"], out["e0"]["duplicate_of"]) == ("dropped", "d0000")
    assert (out["u0"]["status"], out["u0"]["duplicate_of"]) == ("dropped", "d0001")
    # 20 KB of text and 5 KB of metadata per document; the keys of a document are a few hundred bytes
    assert 0 < moved < n * 2_000, f"{moved / n:,.0f} bytes per document shuffled"
    assert set(LEDGER_COLUMNS) <= set(ledger.columns) and "text" not in ledger.columns


def test_the_outcome_meets_every_document_once_in_its_column_order(spark):
    rows = corpus(20)
    docs = spark.createDataFrame(rows, DOC_SCHEMA)
    out = apply_dataset_steps(docs, [ExactDeduplicator()])
    assert out.columns == DOC_COLUMNS + ["cluster_id", "cluster_size"]
    got = {r["id"]: r for r in out.collect()}
    assert len(got) == len(rows) == out.count()
    assert got["e0"]["status"] == "dropped" and got["e0"]["stage"] == "exact_dedup"
    assert got["d0003"]["text"] == rows[3][DOC_COLUMNS.index("text")]  # the text comes through untouched
    before = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "16")  # what a job before may have left in the session
    try:
        with outcome_partitions(spark, 3):  # whatever the session's shuffle partitions and the sides' sizes
            joined = with_outcome(docs, ledger_of(docs, []), partitions=3)
            assert joined.rdd.getNumPartitions() == 3
            sizes = joined.rdd.mapPartitions(lambda part: [sum(1 for _ in part)]).collect()
            assert len(sizes) == 3 and sum(sizes) == len(rows) and max(sizes) < len(rows)
        assert spark.conf.get("spark.sql.shuffle.partitions") == "16"  # restored
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", before)


def test_the_outcome_is_cut_into_the_asked_partitions_even_when_both_sides_sit_in_one(spark):
    # One input file reads into one partition, which satisfies any clustering: without an explicit shuffle the
    # join kept that single partition, and a rerun of a one-file data job wrote one shard where it had written two.
    rows = corpus(20)
    docs = spark.createDataFrame(rows, DOC_SCHEMA).repartition(1).cache()
    ledger = ledger_of(docs, [ExactDeduplicator()])
    ledger = ExactDeduplicator().apply(ledger, docs).cache()
    try:
        ledger.count()
        with outcome_partitions(spark, 3):
            joined = with_outcome(docs, ledger, partitions=3)
            sizes = joined.rdd.mapPartitions(lambda part: [sum(1 for _ in part)]).collect()
        assert len(sizes) == 3 and sum(sizes) == len(rows) and max(sizes) < len(rows)
    finally:
        ledger.unpersist()
        docs.unpersist()
