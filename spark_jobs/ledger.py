"""The ledger: one small row per document, that dataset steps read and rewrite instead of the documents.

Dedup decides which documents stay from keys (a text hash, a URL, LSH buckets); moving the documents
themselves through those shuffles would move the crawl's text 6-8 times. So the data job projects the
persisted documents onto ``LEDGER_COLUMNS`` plus every dataset step's ``key_columns`` (a narrow
``select``: no shuffle), runs the dataset steps on that, and joins the outcome back to the documents once,
in the final write (``with_outcome``): text moves once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is imported where a step runs: reading the config must not need it
    from pyspark.sql import DataFrame

from tokenmill.spark_jobs.session import spark_settings
from tokenmill.spark_jobs.steps import DatasetStep

#: What a dataset step may rewrite (the outcome) and what the job's accounting needs (lang, stats, text_length).
OUTCOME_COLUMNS = ["status", "stage", "reason", "duplicate_of", "cluster_id", "cluster_size"]
LEDGER_COLUMNS = ["id", *OUTCOME_COLUMNS, "lang", "stats", "text_length"]


REQUIRED_COLUMNS = ["id", "text", "status", "stage", "reason", "duplicate_of"]


def ledger_of(docs: DataFrame, steps: list[DatasetStep]) -> DataFrame:
    """``docs`` projected onto ``LEDGER_COLUMNS`` and the steps' key columns (computed for kept rows only).

    ``docs`` needs ``REQUIRED_COLUMNS`` (ids unique); ``lang``, ``stats`` and the cluster columns are null
    where it has none."""
    from pyspark.sql import functions as F

    missing = [c for c in REQUIRED_COLUMNS if c not in docs.columns]
    if missing:
        raise ValueError(f"the dataset steps need columns {missing} in the document DataFrame")
    is_kept = F.col("status") == "kept"
    columns = [F.col(c) for c in ("id", "status", "stage", "reason", "duplicate_of")]
    for name, kind in (("cluster_id", "string"), ("cluster_size", "int"), ("lang", "string"), ("stats", "string")):
        columns.append(F.col(name) if name in docs.columns else F.lit(None).cast(kind).alias(name))
    columns.append(F.length("text").alias("text_length"))
    for step in steps:
        columns += [F.when(is_kept, expr).alias(name) for name, expr in step.key_columns().items()]
    return docs.select(*columns)


def with_outcome(docs: DataFrame, ledger: DataFrame, partitions: int | None = None) -> DataFrame:
    """``docs`` (its columns in order, then the outcome columns it lacks) with the ledger's outcome: an inner
    join on ``id`` (ids are unique, so every row stays). With ``partitions``, and under
    ``outcome_partitions(spark, partitions)``, the result is exactly ``partitions`` hash partitions by id, the
    join's one shuffle of the text, whatever partitioning the sides had."""
    outcome = ledger.select("id", *OUTCOME_COLUMNS)
    rest = docs.drop(*[c for c in OUTCOME_COLUMNS if c in docs.columns])
    if partitions is not None:
        # Without these the planner keeps a side's partitioning when it already satisfies the join: a one-file
        # job reads into one partition (which satisfies any clustering), and the join then stayed in one
        # partition on some runs and was shuffled into ``partitions`` on others, depending on what the planner
        # knew of the cached sides. Two sides hash-partitioned alike are co-partitioned: no further exchange.
        rest, outcome = rest.repartition(partitions, "id"), outcome.repartition(partitions, "id")
    return rest.join(outcome, "id").select(*docs.columns, *[c for c in OUTCOME_COLUMNS if c not in docs.columns])


@contextmanager
def outcome_partitions(spark, partitions: int):
    """While active, ``with_outcome(..., partitions)``'s join stays in exactly ``partitions``: the session's
    shuffle partitions are set to it (a planner that re-plans the join's exchange uses that number), and
    adaptive partition coalescing and automatic broadcasts are off; the settings are restored after it."""
    settings = {
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.sql.adaptive.coalescePartitions.enabled": "false",
        "spark.sql.autoBroadcastJoinThreshold": "-1",
    }
    with spark_settings(spark, settings):
        yield


def apply_dataset_steps(docs: DataFrame, steps: list[DatasetStep]) -> DataFrame:
    """``docs`` after ``steps`` in order, via a ledger: for tests and benchmarks of single steps (the data job
    runs the same calls, with persistence in between)."""
    ledger = ledger_of(docs, steps)
    for step in steps:
        ledger = step.apply(ledger, docs)
    return with_outcome(docs, ledger)
