"""The data job: read → the configured steps → Parquet shards + a manifest.

Every record read ends up in exactly one place: ``kept/`` (training text), ``rejected/``
(dropped by a step, with the step and reason) or ``quarantine/`` (could not be read or
processed, with the error). The manifest's counts must add up, or the job fails.

Consecutive per-document steps run fused in one ``mapInPandas`` pass over Arrow batches;
dataset steps (dedup) are Spark DataFrame operations between them.

Nothing proportional to the data runs on the driver: the reading tasks count their records into small side files
(``ReadCounter``), the writing tasks write the shards and hash them (``ParquetShardWriter``), and the driver sums
small per-task records. Each run writes a new version folder, ``<out_dir>/v-<time>-<id>/``, and ``manifest.json``,
written last and atomically, is the pointer to it: a reader never sees a half-replaced result, and a failed run
leaves the previous version and its manifest as they were. A successful run then removes every version but its own
and the one the previous manifest named (which a reader may still be reading).
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
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.core.config import ConfigError, DataConfig
from tokenmill.core.manifest import sha256_file, write_manifest
from tokenmill.spark_jobs.ledger import ledger_of, outcome_partitions, with_outcome
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
    """Run the job on ``cfg.input``, write a new version folder of shards under ``out_dir`` and then
    ``out_dir/manifest.json`` pointing at it; returns the manifest."""
    from tokenmill.spark_jobs.progress import SparkProgressReporter, shuffle_bytes
    from tokenmill.spark_jobs.session import spark_session

    started = time.time()
    out_dir = Path(out_dir).resolve()
    inputs = expand_inputs(cfg.input, cfg.format)
    steps = build_steps(cfg)  # fails fast on bad options before Spark starts
    check_extract_for_html(inputs, cfg.steps)
    log.info("data: %d input file(s) from %s; steps: %s", len(inputs), cfg.input, " → ".join(cfg.steps))
    previous = _current_version(out_dir)
    version = f"v-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    version_dir = out_dir / version
    reads_dir = version_dir / "_reads"
    reads_dir.mkdir(parents=True)
    spark = spark_session(
        cfg.spark_master,
        cfg.spark_driver_memory,
        app_name="tokenmill-clean",
        shuffle_partitions=cfg.spark_shuffle_partitions,
    )
    _use_checkpoint_dir(spark, cfg.checkpoint_dir)
    timings = {"spark_start_s": round(time.time() - started, 2)}

    with SparkProgressReporter(spark.sparkContext):  # a line per Spark stage while the job runs
        files = spark.createDataFrame(inputs, "path string, format string").repartition(max(1, len(inputs)))
        # Not persisted: the raw rows (HTML included) are read once, into the first persisted document pass.
        raw = files.mapInPandas(ReadCounter(AnyReader(), str(reads_dir)), RAW_SCHEMA)

        docs, ledger, cached = _apply_steps(raw, steps)

        outcome, counts, stats, languages, kept_bytes = _account(ledger)
        n_read = _read_count(spark, reads_dir, files.rdd.getNumPartitions())
        _check_accounting(n_read, counts)
        log.info("data: read %d records", n_read)
        timings["process_s"] = round(time.time() - started - sum(timings.values()), 2)

        outputs = _write_outputs(docs, ledger, version_dir, cfg, kept_bytes)
        _check_written(outputs, n_read, counts)
        for frame in cached:
            frame.unpersist()
        timings["write_s"] = round(time.time() - started - sum(timings.values()), 2)
    shutil.rmtree(reads_dir, ignore_errors=True)
    if cfg.checkpoint_dir:
        _remove_checkpoints(spark)
    timings["total_s"] = round(time.time() - started, 2)

    manifest = {
        "stage": "data",
        "version": version,
        "inputs": [input_identity(item) for item in inputs],  # path, format, bytes, mtime: from the listing
        "outputs": outputs,
        "counts": {"read": n_read, **counts},
        "funnel": _funnel(n_read, cfg.steps, outcome),
        "stats": dict(sorted(stats.items())),
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1])),
        "config": cfg.to_dict(),
        "spark": {
            "master": spark.sparkContext.master,
            "version": spark.version,
            "shuffle": shuffle_bytes(spark.sparkContext),
        },
        "timings": timings,
    }
    write_manifest(out_dir / "manifest.json", manifest)  # the pointer flips: readers now see this version
    _remove_old_versions(out_dir, keep={version, previous})
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
    (``DocumentPipeline``) over the documents, each dataset step on the ledger (keys only: the text stays
    where it was read). Returns the documents of the last pass, the ledger, and every frame it persisted."""
    from pyspark import StorageLevel

    # Dataset steps never write text, so the pass holding the last document step (or the first pass,
    # when there is none) is where a kept document without text is known to stay without it.
    last_document_step = max((i for i, s in enumerate(steps) if isinstance(s, DocumentStep)), default=-1)
    dataset_steps = [s for s in steps if isinstance(s, DatasetStep)]
    docs, ledger, pending, from_raw, cached = raw, None, [], True, []
    for i, step in enumerate(steps + [None]):
        if isinstance(step, DocumentStep):
            pending.append(step)
            continue
        if pending or from_raw:
            if ledger is not None:  # a document step after a dataset step: the outcome so far meets the text
                docs = with_outcome(docs, ledger)
            # Persisted: the ledger and the dataset steps read the documents, and the Python steps must run once.
            body = DocumentPipeline(pending, from_raw, require_text=i > last_document_step)
            docs = docs.mapInPandas(body, DOC_SCHEMA).persist(StorageLevel.MEMORY_AND_DISK)
            ledger = ledger_of(docs, dataset_steps).persist(StorageLevel.MEMORY_AND_DISK)
            cached += [docs, ledger]
            pending, from_raw = [], False
        if step is not None:
            ledger = step.apply(ledger, docs).persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(ledger)
    return docs, ledger, cached


def _account(ledger):
    """(outcome rows, counts, summed stats, kept documents per language, kept text characters), from the ledger."""
    from pyspark.sql import functions as F

    outcome = ledger.groupBy("status", "stage", "reason").count().collect()
    counts = _counts(outcome)
    stats = {
        r["key"]: r["n"]
        for r in ledger.select(F.explode(F.from_json("stats", "map<string,long>")))
        .groupBy("key")
        .agg(F.sum("value").alias("n"))
        .collect()
    }
    kept = ledger.filter("status = 'kept'")
    languages = {r["lang"] or "unknown": r["count"] for r in kept.groupBy("lang").count().collect()}
    kept_bytes = kept.agg(F.sum("text_length")).first()[0] or 0
    return outcome, counts, stats, languages, kept_bytes


def _check_accounting(n_read: int, counts: dict[str, Any]) -> None:
    """Raise when kept + dropped + quarantined is not every record read."""
    accounted = counts["kept"] + sum(counts["dropped"].values()) + sum(counts["quarantined"].values())
    if accounted != n_read:
        raise RuntimeError(f"accounting broken: read {n_read} records but kept+dropped+quarantined = {accounted}")


def _check_written(outputs: dict[str, list[dict[str, Any]]], n_read: int, counts: dict[str, Any]) -> None:
    """Raise when the shards do not hold every record read, or the kept shards not every kept one."""
    written = {out: sum(s["rows"] for s in shards) for out, shards in outputs.items()}
    if sum(written.values()) != n_read or written["kept"] != counts["kept"]:
        raise RuntimeError(f"write broken: read {n_read} records, kept {counts['kept']}, but the shards hold {written}")


class ReadCounter:
    """``mapInPandas`` body around a reader: passes its rows through and, when the task's input is exhausted,
    writes the number of records it read to ``<folder>/part-<partition:05d>.json``. A retried or recomputed
    task rewrites its own file with the same count, so the sum over the files is exact."""

    def __init__(self, reader, folder: str):
        self.reader = reader
        self.folder = folder

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        records = 0
        for batch in self.reader(batches):
            records += len(batch)
            yield batch
        path = os.path.join(self.folder, f"part-{partition:05d}.json")
        tmp = os.path.join(self.folder, f".part-{partition:05d}.json.tmp-{uuid.uuid4().hex[:8]}")  # hidden from Spark
        with open(tmp, "w") as fh:
            json.dump({"partition": partition, "records": records}, fh)
        os.replace(tmp, path)


def _read_count(spark, folder: Path, partitions: int) -> int:
    """The records every reading task counted (``ReadCounter``); raises unless every task reported."""
    from pyspark.sql import functions as F

    row = (
        spark.read.schema("partition int, records long")
        .json(str(folder))
        .agg(F.countDistinct("partition").alias("tasks"), F.sum("records").alias("records"))
        .first()
    )
    if row["tasks"] != partitions:
        raise RuntimeError(f"accounting broken: {row['tasks']} of {partitions} reading tasks reported their counts")
    return int(row["records"] or 0)


#: output folder → (the status of its rows, its columns)
OUTPUTS = {
    "kept": ("kept", KEPT_COLUMNS),
    "rejected": ("dropped", REJECTED_COLUMNS),
    "quarantine": ("quarantined", QUARANTINE_COLUMNS),
}


def _write_outputs(docs, ledger, version_dir: Path, cfg: DataConfig, kept_bytes: int) -> dict[str, Any]:
    """Kept, rejected and quarantined rows as Parquet shards under ``version_dir``, in one pass: the documents
    meet their outcome (the one shuffle of the text, into ``ceil(kept text / data.shard_target_mb)``
    partitions by id), each task sorts its rows by id and writes and hashes one shard per output."""
    n_shards = max(1, math.ceil(kept_bytes / (cfg.shard_target_mb * 2**20)))
    final = with_outcome(docs, ledger, partitions=n_shards).sortWithinPartitions("id")
    with outcome_partitions(docs.sparkSession, n_shards):
        return _write_shards(final, version_dir, cfg.row_group_mb * 2**20)


# One record per shard file, as the writing task reports it: the Spark schema of mapInArrow's output and the Arrow
# schema the task builds it with, from one list.
_SHARD_RECORD = (("output", "string"), ("name", "string"), ("rows", "long"), ("bytes", "long"), ("sha256", "string"))
SHARD_ROW_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in _SHARD_RECORD)
_SHARD_ARROW_SCHEMA = pa.schema(
    [(name, {"string": pa.string(), "long": pa.int64()}[kind]) for name, kind in _SHARD_RECORD]
)


class _ShardFile:
    """One Parquet file (zstd) written under a temporary name, in row groups of about ``row_group_bytes`` in
    memory; ``close`` renames it into place and returns its record, or None when it got no rows."""

    def __init__(self, folder: str, name: str, row_group_bytes: int):
        self.path = os.path.join(folder, name)
        self.tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        self.name, self.row_group_bytes = name, row_group_bytes
        self.writer, self.pending, self.pending_bytes, self.rows = None, [], 0, 0

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self.writer is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, batch.schema, compression="zstd")
        self.pending.append(batch)
        self.pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if self.pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        group = pa.Table.from_batches(self.pending)
        self.writer.write_table(group, row_group_size=group.num_rows)  # one row group
        self.pending, self.pending_bytes = [], 0

    def close(self) -> dict[str, Any] | None:
        if self.writer is None:
            return None
        if self.pending:
            self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        size = os.path.getsize(self.path)
        return {"name": self.name, "rows": self.rows, "bytes": size, "sha256": sha256_file(self.path)}

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


class ParquetShardWriter:
    """``mapInArrow`` body: a task's rows → ``<folder>/<output>/part-<partition:05d>.parquet`` for each output of
    ``outputs`` (``{output: (status, columns)}``; a row goes to the output of its ``status``, with that
    output's columns), written under a temporary name and renamed, then hashed where it was written; yields one
    ``SHARD_ROW_SCHEMA`` row per file (none for an output the task has no rows for)."""

    def __init__(self, folder: str, outputs: dict[str, tuple[str, list[str]]], row_group_bytes: int):
        self.folder = folder
        self.outputs = outputs
        self.row_group_bytes = row_group_bytes

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc
        from pyspark import TaskContext

        context = TaskContext.get()
        name = f"part-{context.partitionId() if context is not None else 0:05d}.parquet"
        files = {out: _ShardFile(os.path.join(self.folder, out), name, self.row_group_bytes) for out in self.outputs}
        try:
            for batch in batches:
                status = batch.column(batch.schema.get_field_index("status"))
                for out, (wanted, columns) in self.outputs.items():
                    rows = batch.filter(pc.equal(status, wanted))
                    files[out].add(rows.select(columns))
            records = [{"output": out, **r} for out, f in files.items() if (r := f.close()) is not None]
        except BaseException:
            for f in files.values():
                f.abort()
            raise
        if records:
            yield pa.RecordBatch.from_pylist(records, schema=_SHARD_ARROW_SCHEMA)


def _write_shards(frame, version_dir: Path, row_group_bytes: int) -> dict[str, list[dict[str, Any]]]:
    """Write ``frame`` with ``ParquetShardWriter`` into ``OUTPUTS``; each output's shard records in name order."""
    for out in OUTPUTS:
        (version_dir / out).mkdir(parents=True, exist_ok=True)
    body = ParquetShardWriter(str(version_dir), OUTPUTS, row_group_bytes)
    written = sorted(frame.mapInArrow(body, SHARD_ROW_SCHEMA).collect(), key=lambda r: (r["output"], r["name"]))
    return {
        out: [
            {"path": str(version_dir / out / r["name"]), "rows": r["rows"], "bytes": r["bytes"], "sha256": r["sha256"]}
            for r in written
            if r["output"] == out
        ]
        for out in OUTPUTS
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


def _use_checkpoint_dir(spark, folder: str | None) -> None:
    """Reliable checkpoints under ``folder`` for this job's lineage cuts (``minhash._materialize``), or local ones."""
    from tokenmill.spark_jobs.minhash import CHECKPOINT_CONF

    if folder:
        spark.sparkContext.setCheckpointDir(folder)  # Spark adds a fresh sub-folder for this context
    spark.conf.set(CHECKPOINT_CONF, folder or "")


def _remove_checkpoints(spark) -> None:
    """Remove the job's reliable checkpoints when they are on a local or shared mount (the job no longer needs
    them); on HDFS or an object store ``spark.cleaner.referenceTracking.cleanCheckpoints`` removes them."""
    where = spark.sparkContext.getCheckpointDir() or ""
    if where.startswith("file:"):
        shutil.rmtree(where[len("file:") :], ignore_errors=True)


def _current_version(out_dir: Path) -> str | None:
    """The version folder ``out_dir/manifest.json`` points at, if any."""
    try:
        return json.loads((out_dir / "manifest.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def _remove_old_versions(out_dir: Path, keep: set[str | None]) -> None:
    """Remove the version folders (``v-*``) of ``out_dir`` not in ``keep``, and the output folders of a
    tokenmill from before versions (``kept/``, ``rejected/``, ``quarantine/``)."""
    for child in out_dir.iterdir():
        stale_version = child.name.startswith("v-") and child.name not in keep
        if child.is_dir() and (stale_version or child.name in ("kept", "rejected", "quarantine")):
            shutil.rmtree(child, ignore_errors=True)
