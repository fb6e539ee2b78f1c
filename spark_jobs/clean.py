"""The data job: WARC → extracted text → quality filter → exact dedup → Parquet shards + manifest.

Every record read ends up in exactly one place: ``kept/`` (training text), ``rejected/``
(dropped, with its reason) or ``quarantine/`` (could not be read or parsed, with the error).
The manifest's counts must add up, or the job fails.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from spark_jobs.dedup import ExactDeduplicator
from spark_jobs.extract import HtmlExtractor
from spark_jobs.filters import DocumentFilter, GopherQualityFilter
from spark_jobs.readers import RAW_SCHEMA, WarcReader, expand_inputs, object_frame
from tokenmill.config import DataConfig
from tokenmill.manifest import sha256_file, write_manifest

log = logging.getLogger("tokenmill.data")

DOC_SCHEMA = "id string, url string, source string, text string, status string, reason string, error string"


class DocumentProcessor:
    """``mapInPandas`` body: raw records in, documents with ``status`` kept / dropped / quarantined out."""

    def __init__(self, extractor: HtmlExtractor, filters: list[DocumentFilter]):
        self.extractor = extractor
        self.filters = filters

    def process(self, record: dict[str, Any]) -> dict[str, Any]:
        doc = {k: record[k] for k in ("id", "url", "source")}
        doc.update(text="", status="kept", reason=None, error=None)
        if isinstance(record["error"], str):
            return {**doc, "status": "quarantined", "reason": "unreadable_record", "error": record["error"]}
        try:
            text = self.extractor.extract(record["payload"] or b"", record["content_type"] or "")
        except Exception as e:
            return {**doc, "status": "quarantined", "reason": "extraction_failed", "error": f"{type(e).__name__}: {e}"}
        if text is None:
            return {**doc, "status": "dropped", "reason": "not_html"}
        doc["text"] = text
        if not text:
            return {**doc, "status": "dropped", "reason": "empty_text"}
        for f in self.filters:
            reason = f.reject_reason(text)
            if reason:
                return {**doc, "status": "dropped", "reason": reason}
        return doc

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield object_frame([self.process(r) for r in batch.to_dict("records")], _DOC_COLUMNS)


_DOC_COLUMNS = [c.split()[0] for c in DOC_SCHEMA.split(", ")]


def run_clean_job(cfg: DataConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the job on ``cfg.input`` and write shards and ``manifest.json`` under ``out_dir``; returns the manifest."""
    from spark_jobs.session import spark_session

    started = time.time()
    out_dir = Path(out_dir).resolve()
    inputs = expand_inputs(cfg.input)
    log.info("data: %d WARC file(s) from %s", len(inputs), cfg.input)
    spark = spark_session(cfg.spark_master, cfg.spark_driver_memory, app_name="tokenmill-clean")
    timings = {"spark_start_s": round(time.time() - started, 2)}

    paths = spark.createDataFrame([(p,) for p in inputs], "path string").repartition(len(inputs))
    raw = paths.mapInPandas(WarcReader(), RAW_SCHEMA).persist()
    n_read = raw.count()
    log.info("data: read %d records", n_read)

    processor = DocumentProcessor(
        HtmlExtractor(),
        [GopherQualityFilter(cfg.min_words, cfg.max_words, cfg.min_mean_word_length, cfg.max_mean_word_length)],
    )
    docs = ExactDeduplicator().apply(raw.mapInPandas(processor, DOC_SCHEMA)).persist()
    counts = _count(docs)
    timings["process_s"] = round(time.time() - started - timings["spark_start_s"], 2)
    accounted = counts["kept"] + sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
    if accounted != n_read:
        raise RuntimeError(f"accounting broken: read {n_read} records but kept+dropped+quarantined = {accounted}")

    out_dir.mkdir(parents=True, exist_ok=True)
    kept = docs.filter("status = 'kept'").select("id", "url", "source", "text")
    outputs = {
        "kept": _write_atomically(kept.repartitionByRange(cfg.num_shards, "id").sortWithinPartitions("id"),
                                  out_dir / "kept"),
        "rejected": _write_atomically(
            docs.filter("status = 'dropped'").select("id", "url", "source", "text", "reason", "duplicate_of")
            .coalesce(1).sortWithinPartitions("id"), out_dir / "rejected"),
        "quarantine": _write_atomically(
            docs.filter("status = 'quarantined'").select("id", "url", "source", "reason", "error")
            .coalesce(1).sortWithinPartitions("id"), out_dir / "quarantine"),
    }
    docs.unpersist()
    raw.unpersist()
    timings["total_s"] = round(time.time() - started, 2)

    manifest = {
        "stage": "data",
        "inputs": [{"path": p, "bytes": os.path.getsize(p), "sha256": sha256_file(p)} for p in inputs],
        "outputs": outputs,
        "counts": {"read": n_read, **counts},
        "config": asdict(cfg),
        "spark": {"master": spark.sparkContext.master, "version": spark.version},
        "timings": timings,
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info("data: kept %d of %d (dropped %s, quarantined %s) in %.1fs", counts["kept"], n_read,
             counts["dropped"], counts["quarantined"], timings["total_s"])
    return manifest


def _count(docs) -> dict[str, Any]:
    counts: dict[str, Any] = {"kept": 0, "dropped": {}, "quarantined": {}}
    for row in docs.groupBy("status", "reason").count().collect():
        if row["status"] == "kept":
            counts["kept"] += row["count"]
        else:
            counts[row["status"]][row["reason"]] = row["count"]
    return counts


def _write_atomically(df, final: Path) -> list[dict[str, Any]]:
    """Write Parquet into a temporary folder and rename it into place: no partial output is ever visible."""
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    df.write.mode("overwrite").parquet(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    files = sorted(final.glob("*.parquet"))
    return [{"path": str(f), "rows": pq.ParquetFile(f).metadata.num_rows, "sha256": sha256_file(f)} for f in files]
