"""The data job: read → the configured steps → Parquet shards + a manifest.

Every record read ends up in exactly one place: ``kept/`` (training text), ``rejected/``
(dropped by a step, with the step and reason) or ``quarantine/`` (could not be read or
processed, with the error). The manifest's counts must add up, or the job fails.

Consecutive per-document steps run fused in one ``mapInPandas`` pass over Arrow batches;
dataset steps (dedup) are Spark DataFrame operations between them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from tokenmill.core.config import ConfigError, DataConfig
from tokenmill.core.manifest import sha256_file, write_manifest
from tokenmill.spark_jobs.readers import (
    RAW_SCHEMA,
    AnyReader,
    WarcReader,
    expand_inputs,
    input_identity,
    object_frame,
)
from tokenmill.spark_jobs.registry import build_step, complete_step_options
from tokenmill.spark_jobs.steps import DatasetStep, DocumentStep

log = logging.getLogger("tokenmill.data")

DOC_SCHEMA = (
    "id string, url string, source string, content_type string, payload binary, text string, metadata string, "
    "lang string, lang_score double, stats string, status string, stage string, reason string, error string, "
    "duplicate_of string"
)
DOC_COLUMNS = [c.split()[0] for c in DOC_SCHEMA.split(", ")]
KEPT_COLUMNS = ["id", "url", "source", "text", "lang", "lang_score", "metadata", "cluster_id", "cluster_size"]
REJECTED_COLUMNS = [
    "id",
    "url",
    "source",
    "text",
    "lang",
    "lang_score",
    "metadata",
    "stage",
    "reason",
    "duplicate_of",
    "cluster_id",
    "cluster_size",
]
QUARANTINE_COLUMNS = ["id", "url", "source", "metadata", "stage", "reason", "error"]
NO_TEXT = "no_text"  # kept documents must have text: what still has none after the last document step


def _value(v: Any) -> Any:
    """Arrow → pandas turns nulls of numeric columns into NaN; steps should see None."""
    return None if isinstance(v, float) and math.isnan(v) else v


class DocumentPipeline:
    """``mapInPandas`` body: runs per-document steps in order; the first step that drops a document stops it.

    With ``from_raw`` the input rows are reader records (``RAW_SCHEMA``), otherwise documents
    (``DOC_SCHEMA``). A step that raises quarantines the document with the error. With ``require_text``
    (the job's last per-document pass: no later step can make text) a document still kept without
    text (null, or only whitespace: e.g. a WARC page when ``extract`` is not among the steps) is dropped
    with reason ``no_text`` at the stage of the pass's last step (``read`` when the pass has none).
    """

    def __init__(self, steps: list[DocumentStep], from_raw: bool, require_text: bool = True):
        self.steps = steps
        self.from_raw = from_raw
        self.require_text = require_text
        self.last_stage = steps[-1].name if steps else "read"

    def run(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {k: _value(v) for k, v in row.items()}
        if self.from_raw:
            doc = {k: row.get(k) for k in DOC_COLUMNS}
            doc.update(stats="{}", status="kept")
            if row["error"] is not None:
                doc.update(status="quarantined", stage="read", reason="read_error", error=row["error"], payload=None)
                return doc
        else:
            doc = row
        if doc["status"] != "kept":
            return doc
        work = {**doc, "stats": json.loads(doc["stats"] or "{}")}
        for step in self.steps:
            try:
                reason = step.process(work)
            except Exception as e:
                work.update(
                    status="quarantined",
                    stage=step.name,
                    reason=f"{step.name}_failed",
                    error=f"{type(e).__name__}: {e}",
                )
                break
            if reason:
                work.update(status="dropped", stage=step.name, reason=reason)
                break
        text = work.get("text")
        if self.require_text and work["status"] == "kept" and (not text or text.isspace()):
            work.update(status="dropped", stage=self.last_stage, reason=NO_TEXT)
        work["stats"] = json.dumps(work["stats"], sort_keys=True)
        return {k: work.get(k) for k in DOC_COLUMNS}

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for step in self.steps:
            step.setup()
        for batch in batches:
            yield object_frame([self.run(r) for r in batch.to_dict("records")], DOC_COLUMNS)


def build_steps(cfg: DataConfig) -> list[DocumentStep | DatasetStep]:
    """The configured steps, in order, built from their checked options (a resolved config passes as is)."""
    complete_step_options(cfg)
    return [build_step(name, cfg.step_options[name]) for name in cfg.steps]


def check_extract_for_html(inputs: list[tuple[str, str]], step_names: list[str]) -> None:
    """ConfigError when ``extract`` is not among the steps and the first WARC input's first readable
    document is an HTML page (a ``response`` record, not a WET ``conversion``): those pages would all be
    dropped as ``no_text``. Reads that one file up to that document; other files are the pipeline's
    ``no_text`` drop to catch (a WARC file may hold either kind of record, whatever its name)."""
    if "extract" in step_names:
        return
    first = next((path for path, fmt in inputs if fmt == "warc"), None)
    if first is None:
        return
    for row in WarcReader().read(first):
        if row["error"] is not None:
            continue
        if row["payload"] is not None:
            raise ConfigError(
                f"data.steps has no 'extract' but {first} holds HTML pages (WARC response records): they "
                f"have no text until extract makes it, and would all be dropped as '{NO_TEXT}'; add extract "
                f"to data.steps (before the steps that read text)"
            )
        return


def run_clean_job(cfg: DataConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run the job on ``cfg.input`` and write shards and ``manifest.json`` under ``out_dir``; returns the manifest."""
    from pyspark import StorageLevel

    from tokenmill.spark_jobs.progress import SparkProgressReporter
    from tokenmill.spark_jobs.session import spark_session

    started = time.time()
    out_dir = Path(out_dir).resolve()
    inputs = expand_inputs(cfg.input, cfg.format)
    steps = build_steps(cfg)  # fails fast on bad options before Spark starts
    check_extract_for_html(inputs, cfg.steps)
    log.info("data: %d input file(s) from %s; steps: %s", len(inputs), cfg.input, " → ".join(cfg.steps))
    spark = spark_session(
        cfg.spark_master,
        cfg.spark_driver_memory,
        app_name="tokenmill-clean",
        shuffle_partitions=cfg.spark_shuffle_partitions,
    )
    timings = {"spark_start_s": round(time.time() - started, 2)}

    with SparkProgressReporter(spark.sparkContext):  # a line per Spark stage while the job runs
        files = spark.createDataFrame(inputs, "path string, format string").repartition(max(1, len(inputs)))
        raw = files.mapInPandas(AnyReader(), RAW_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
        n_read = raw.count()
        timings["read_s"] = round(time.time() - started - timings["spark_start_s"], 2)
        log.info("data: read %d records", n_read)

        docs = _apply_steps(raw, steps)

        outcome, counts, stats, languages, kept_bytes = _account(docs, n_read)
        timings["process_s"] = round(time.time() - started - sum(timings.values()), 2)

        outputs = _write_outputs(docs, out_dir, cfg, kept_bytes)
        docs.unpersist()
        raw.unpersist()
        timings["write_s"] = round(time.time() - started - sum(timings.values()), 2)
    timings["total_s"] = round(time.time() - started, 2)

    manifest = {
        "stage": "data",
        "inputs": [input_identity(item) for item in inputs],  # path, format, bytes, mtime: from the listing
        "outputs": outputs,
        "counts": {"read": n_read, **counts},
        "funnel": _funnel(n_read, cfg.steps, outcome),
        "stats": dict(sorted(stats.items())),
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        "config": cfg.to_dict(),
        "spark": {"master": spark.sparkContext.master, "version": spark.version},
        "timings": timings,
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info(
        "data: kept %d of %d (dropped %d, quarantined %d) in %.1fs",
        counts["kept"],
        n_read,
        sum(counts["dropped"].values()),
        sum(counts["quarantined"].values()),
        timings["total_s"],
    )
    return manifest


def _apply_steps(raw, steps: list[DocumentStep | DatasetStep]):
    """Every record through the steps in order: consecutive document steps fused into one Python pass
    (``DocumentPipeline``), each dataset step on the whole frame. Returns the persisted documents."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # Dataset steps never write text, so the pass holding the last document step (or the first pass,
    # when there is none) is where a kept document without text is known to stay without it.
    last_document_step = max((i for i, s in enumerate(steps) if isinstance(s, DocumentStep)), default=-1)
    docs, pending, from_raw = raw, [], True
    for i, step in enumerate(steps + [None]):
        if isinstance(step, DocumentStep):
            pending.append(step)
            continue
        if pending or from_raw:
            # Persisted: dataset steps read their input several times, and the Python steps must run once.
            body = DocumentPipeline(pending, from_raw, require_text=i > last_document_step)
            docs = docs.mapInPandas(body, DOC_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
            pending, from_raw = [], False
        if step is not None:
            docs = step.apply(docs)
    for column, kind in (("cluster_id", "string"), ("cluster_size", "int")):
        if column not in docs.columns:
            docs = docs.withColumn(column, F.lit(None).cast(kind))
    return docs.persist(StorageLevel.MEMORY_AND_DISK)


def _account(docs, n_read: int):
    """(outcome rows, counts, summed stats, kept documents per language, kept text bytes); raises when
    kept + dropped + quarantined is not every record read."""
    from pyspark.sql import functions as F

    outcome = docs.groupBy("status", "stage", "reason").count().collect()
    counts = _counts(outcome)
    accounted = counts["kept"] + sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
    if accounted != n_read:
        raise RuntimeError(f"accounting broken: read {n_read} records but kept+dropped+quarantined = {accounted}")
    stats = {
        r["key"]: r["n"]
        for r in docs.select(F.explode(F.from_json("stats", "map<string,long>")))
        .groupBy("key")
        .agg(F.sum("value").alias("n"))
        .collect()
    }
    languages = {
        r["lang"] or "unknown": r["count"] for r in docs.filter("status = 'kept'").groupBy("lang").count().collect()
    }
    kept_bytes = docs.filter("status = 'kept'").agg(F.sum(F.length("text"))).first()[0] or 0
    return outcome, counts, stats, languages, kept_bytes


def _write_outputs(docs, out_dir: Path, cfg: DataConfig, kept_bytes: int) -> dict[str, Any]:
    """Kept, rejected and quarantined rows as Parquet shards (kept cut to ``data.shard_target_mb``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, math.ceil(kept_bytes / (cfg.shard_target_mb * 2**20)))
    row_group = cfg.row_group_mb * 2**20
    return {
        "kept": _write_atomically(
            docs.filter("status = 'kept'")
            .select(*KEPT_COLUMNS)
            .repartitionByRange(n_shards, "id")
            .sortWithinPartitions("id"),
            out_dir / "kept",
            row_group,
        ),
        "rejected": _write_atomically(
            docs.filter("status = 'dropped'")
            .select(*REJECTED_COLUMNS)
            .repartitionByRange(n_shards, "id")
            .sortWithinPartitions("id"),
            out_dir / "rejected",
            row_group,
        ),
        "quarantine": _write_atomically(
            docs.filter("status = 'quarantined'").select(*QUARANTINE_COLUMNS).coalesce(1).sortWithinPartitions("id"),
            out_dir / "quarantine",
            row_group,
        ),
    }


def _counts(outcome) -> dict[str, Any]:
    counts: dict[str, Any] = {"kept": 0, "dropped": {}, "quarantined": {}}
    for row in outcome:
        if row["status"] == "kept":
            counts["kept"] += row["count"]
        else:
            bucket = counts[row["status"]]
            bucket[row["reason"]] = bucket.get(row["reason"], 0) + row["count"]
    return counts


def _funnel(n_read: int, step_names: list[str], outcome) -> list[dict[str, Any]]:
    """Documents into and out of each stage, in order: ``read`` first, then every configured step."""
    by_stage: dict[str, dict[str, int]] = {}
    for row in outcome:
        if row["status"] != "kept":
            by_stage.setdefault(row["stage"], {}).setdefault(row["status"], 0)
            by_stage[row["stage"]][row["status"]] += row["count"]
    rows, remaining = [], n_read
    for stage in ["read", *step_names]:
        dropped = by_stage.get(stage, {}).get("dropped", 0)
        quarantined = by_stage.get(stage, {}).get("quarantined", 0)
        rows.append(
            {
                "stage": stage,
                "in": remaining,
                "dropped": dropped,
                "quarantined": quarantined,
                "out": remaining - dropped - quarantined,
            }
        )
        remaining -= dropped + quarantined
    return rows


def _write_atomically(df, final: Path, row_group_bytes: int) -> list[dict[str, Any]]:
    """Write Parquet into a temporary folder and rename it into place: no partial output is ever visible."""
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    df.write.mode("overwrite").option("parquet.block.size", row_group_bytes).parquet(str(tmp))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    files = sorted(final.glob("*.parquet"))
    return [{"path": str(f), "rows": pq.ParquetFile(f).metadata.num_rows, "sha256": sha256_file(f)} for f in files]
