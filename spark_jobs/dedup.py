"""Deduplication steps over the document DataFrame."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


class ExactDeduplicator:
    """Keeps one document (the smallest id) per normalised text; marks the others ``exact_duplicate``.

    Normalisation lower-cases and collapses whitespace, so pages that differ only in layout
    whitespace count as the same text.
    """

    reason = "exact_duplicate"

    def apply(self, docs: DataFrame) -> DataFrame:
        kept = docs.filter(F.col("status") == "kept")
        rest = docs.filter(F.col("status") != "kept").withColumn("duplicate_of", F.lit(None).cast("string"))
        normalised = F.lower(F.trim(F.regexp_replace(F.col("text"), r"\s+", " ")))
        by_text = Window.partitionBy("text_hash").orderBy("id")
        marked = (
            kept.withColumn("text_hash", F.sha2(normalised, 256))
            .withColumn("duplicate_of", F.first("id").over(by_text))
            .withColumn("is_copy", F.col("duplicate_of") != F.col("id"))
            .withColumn("status", F.when(F.col("is_copy"), F.lit("dropped")).otherwise(F.col("status")))
            .withColumn("reason", F.when(F.col("is_copy"), F.lit(self.reason)).otherwise(F.col("reason")))
            .withColumn("duplicate_of", F.when(F.col("is_copy"), F.col("duplicate_of")))
            .drop("text_hash", "is_copy")
        )
        return marked.unionByName(rest)
