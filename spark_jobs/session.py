"""One place that builds the SparkSession every job uses."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

log = logging.getLogger("tokenmill.data")


def spark_session(
    master: str, driver_memory: str, app_name: str = "tokenmill", shuffle_partitions: int = 16
) -> SparkSession:
    """Start (or reuse) a session on ``master``: ``local[*]`` by default, a ``spark://`` URL for a cluster.

    ``driver_memory`` only takes effect if no session has started in this process yet.
    """
    spark = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.cleaner.referenceTracking.cleanCheckpoints", "true")  # reliable checkpoints go with their RDD
        # zstd, not lz4, for shuffle and checkpoint blocks: text shrinks about 3x instead of 1.5x, for a few % CPU
        .config("spark.io.compression.codec", "zstd")
        # Cached documents are built into column batches of this many rows; Spark's 10,000 rows of 3 KB pages make
        # ~30 MB buffers per column and task, built outside Spark's memory accounting: a 1 GB executor (the
        # standalone default) ran out of heap at 31,000 documents per input file. 1,000 rows keep them small.
        .config("spark.sql.inMemoryColumnarStorage.batchSize", "1000")
        .getOrCreate()
    )
    # A runtime setting: applies to a reused session too.
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark.sparkContext.setLogLevel("ERROR")
    log.info(ui_message(spark.sparkContext.uiWebUrl))
    return spark


def ui_message(url: str | None) -> str:
    """The line that says where the Spark UI is: ``uiWebUrl`` is None when ``spark.ui.enabled`` is false."""
    if url:
        return f"spark: Spark UI at {url}"
    return "spark: Spark UI off (spark.ui.enabled=false)"


@contextmanager
def spark_settings(spark: SparkSession, settings: dict[str, str]) -> Iterator[None]:
    """``settings`` (SQL conf keys) set on ``spark`` for the block; each key's previous value, or its absence, after."""
    before = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
