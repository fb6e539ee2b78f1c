"""Exact-text and URL deduplication over the ledger: the windows shuffle (id, key) rows, never the text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenmill.spark_jobs.steps import DatasetStep

if TYPE_CHECKING:  # pyspark is imported where a step runs: reading the config must not need it
    from pyspark.sql import Column, DataFrame


def mark_duplicates(ledger: DataFrame, key: str, order: list[Column], step: str, reason: str) -> DataFrame:
    """Among kept ledger rows with the same value in column ``key``, keep the first by ``order``; drop the
    rest, pointing at it. Rows that are not kept, or whose key is null, pass through untouched.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    kept = ledger.filter((F.col("status") == "kept") & F.col(key).isNotNull())
    rest = ledger.filter((F.col("status") != "kept") | F.col(key).isNull())
    group = Window.partitionBy(key).orderBy(*order)
    marked = (
        kept.withColumn("_first", F.first("id").over(group))
        .withColumn("_copy", F.col("_first") != F.col("id"))
        .withColumn("status", F.when(F.col("_copy"), F.lit("dropped")).otherwise(F.col("status")))
        .withColumn("stage", F.when(F.col("_copy"), F.lit(step)).otherwise(F.col("stage")))
        .withColumn("reason", F.when(F.col("_copy"), F.lit(reason)).otherwise(F.col("reason")))
        .withColumn("duplicate_of", F.when(F.col("_copy"), F.col("_first")).otherwise(F.col("duplicate_of")))
        .drop("_first", "_copy")
    )
    return marked.unionByName(rest)


class ExactDeduplicator(DatasetStep):
    """Keeps one document (the smallest id) per normalised text; drops the others as ``exact_dedup_duplicate``.

    Normalisation collapses whitespace and, with ``lowercase``, case: pages that differ only
    in layout count as the same text.
    """

    name = "exact_dedup"

    def __init__(self, lowercase: bool = True):
        self.lowercase = lowercase

    def key_columns(self) -> dict:
        from pyspark.sql import functions as F

        text = F.trim(F.regexp_replace(F.col("text"), r"\s+", " "))
        # the 32 raw bytes of the SHA-256, not its 64 hex characters: half the bytes to shuffle
        return {"_exact_dedup_key": F.unhex(F.sha2(F.lower(text) if self.lowercase else text, 256))}

    def apply(self, ledger: DataFrame, docs: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        return mark_duplicates(ledger, "_exact_dedup_key", [F.col("id")], self.name, f"{self.name}_duplicate")


class UrlDeduplicator(DatasetStep):
    """Keeps one document per normalised URL (the longest text, then the smallest id); drops the others.

    Normalisation lower-cases scheme and host, drops the fragment, a trailing slash and, with
    ``strip_tracking``, ``utm_*`` / ``fbclid`` / ``gclid`` query parameters.
    """

    name = "url_dedup"

    def __init__(self, strip_tracking: bool = True):
        self.strip_tracking = strip_tracking

    def key_columns(self) -> dict:
        from pyspark.sql import functions as F

        url = F.regexp_replace(F.col("url"), r"#.*$", "")
        scheme_host = F.lower(F.regexp_extract(url, r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]*)", 1))
        rest = F.regexp_replace(url, r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", "")
        if self.strip_tracking:
            rest = F.regexp_replace(rest, r"(?<=[?&])(utm_[^=&]*|fbclid|gclid)=[^&]*&?", "")
            rest = F.regexp_replace(rest, r"[?&]$", "")
        rest = F.regexp_replace(rest, r"/$", "")
        return {"_url_dedup_key": F.when(F.col("url") != "", F.concat(scheme_host, rest))}

    def apply(self, ledger: DataFrame, docs: DataFrame) -> DataFrame:
        from pyspark.sql import functions as F

        order = [F.col("text_length").desc(), F.col("id")]
        return mark_duplicates(ledger, "_url_dedup_key", order, self.name, f"{self.name}_duplicate")
