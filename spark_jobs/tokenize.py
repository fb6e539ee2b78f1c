"""The tokenize job: kept Parquet shards of a data manifest → a BPE tokenizer → Megatron indexed token shards.

Two Spark passes over the kept text, nothing of it held on the driver:

1. **Tokenizer training on a bounded sample.** A Spark aggregate sums the kept text's UTF-8 bytes; a document is in
   the sample when the first 8 bytes of ``sha1(id)``, read as an unsigned integer, fall below
   ``min(1, tokenizer.sample_bytes / total) * 2**64`` (``in_sample``): the sample depends on the ids alone, never on
   partitioning or order, and is about ``sample_bytes`` big. It streams to the driver (``toLocalIterator``, a
   partition at a time) into ``train_bpe``. ``tokenizer.from_pretrained`` skips it.
2. **Encoding on the executors.** ``mapInArrow`` over the kept documents: each task loads the tokenizer once (its
   JSON string is broadcast), encodes its Arrow batches with a ``DocumentEncoder`` (tiktoken's BPE where it gives the
   ids ``tokenizers`` gives, checked on each task's first documents; ``tokenizer.encoder``), appends
   ``<|endoftext|>`` to every document, splits documents by ``split_of(id)`` and writes one shard per split,
   ``<split>/part-<partition:05d>`` (``.bin`` + ``.idx``, ``IndexedShardWriter``; a split with no document in the
   task writes none). It returns one small row per (task, split): the shard's counts and hashes, and its unigram
   counts as bytes. The driver collects the small rows (one per shard) and sums the unigram counts with a
   ``treeAggregate``.

Shards are written into a temporary folder under ``out_dir`` and moved into place when every task has finished, so
a failed run leaves no partial split and a rerun no stale shard; a retried or speculative task rewrites its shard
identically (the writer renames atomically). ``out_dir`` must be on a file system every executor sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from tokenmill.core.config import Config
from tokenmill.core.indexed import IndexedShardWriter, dtype_for
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
from tokenmill.core.tokenizer import SPLITS, DocumentEncoder, load_pretrained, special_ids, split_of, train_bpe

log = logging.getLogger("tokenmill.tokenize")

#: Documents per Arrow batch handed to a task (``spark.sql.execution.arrow.maxRecordsPerBatch``).
BATCH_DOCS = 1024
#: A task's first documents, encoded by both encoders and compared (``DocumentEncoder.verify``).
VERIFY_DOCS = 16

SHARD_SCHEMA = pa.schema(
    [
        ("partition", pa.int32()),
        ("split", pa.string()),
        ("name", pa.string()),
        ("documents", pa.int64()),
        ("tokens", pa.int64()),
        ("sha256", pa.string()),
        ("idx_sha256", pa.string()),
        ("counts", pa.binary()),
    ]
)
_SHARD_DDL = (
    "partition int, split string, name string, documents long, tokens long, sha256 string, idx_sha256 string, "
    "counts binary"
)


def sample_threshold(fraction: float) -> int:
    """The 64-bit bound a document's id hash must fall below to be in a sample of ``fraction``."""
    return min(1 << 64, int(fraction * (1 << 64)))


def in_sample(doc_id: str, fraction: float) -> bool:
    """Whether ``doc_id`` is in the tokenizer's training sample of ``fraction``: the first 8 bytes of its sha1 as an
    unsigned integer below ``fraction * 2**64`` (exactly what the Spark filter computes)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest()[:16], 16) < sample_threshold(fraction)


def sample_filter(fraction: float):
    """The Spark column expression of ``in_sample`` on the ``id`` column."""
    from pyspark.sql import functions as F

    key = F.conv(F.substring(F.sha1(F.col("id")), 1, 16), 16, 10).cast("decimal(20,0)")
    return key < F.lit(str(sample_threshold(fraction))).cast("decimal(21,0)")  # a string: 2**64 is no long


def prepare(tok):
    """A tokenizer set up to encode documents as the shards hold them (what the executors load)."""
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a page is text, not a document boundary
    tok.no_padding()
    tok.no_truncation()
    tok.post_processor = None  # documents are encoded bare: the objectives add [CLS]/[SEP]/EOS themselves
    return tok


class EncodeShards:
    """``mapInArrow`` body: one task's documents → one indexed shard per split under ``root/<split>/`` and one
    ``SHARD_SCHEMA`` row per written shard. The tokenizer JSON comes as a broadcast (or a plain string);
    ``encoder`` is ``tokenizer.encoder`` and ``kind`` the ``DocumentEncoder.kind`` the driver got with it."""

    def __init__(
        self,
        tokenizer_json,
        root: str,
        validation_fraction: float,
        vocab_size: int,
        eot_id: int,
        encoder: str = "auto",
        kind: str | None = None,
    ):
        self.tokenizer_json = tokenizer_json
        self.root = root
        self.validation_fraction = validation_fraction
        self.vocab_size = vocab_size
        self.eot_id = eot_id
        self.encoder = encoder
        self.kind = kind

    def _encoder(self) -> DocumentEncoder:
        from tokenizers import Tokenizer

        text = self.tokenizer_json if isinstance(self.tokenizer_json, str) else self.tokenizer_json.value
        key = (hashlib.sha1(text.encode()).hexdigest(), self.encoder)
        if key not in _ENCODERS:  # Spark reuses a Python worker for many tasks: build the encoder once in each
            _ENCODERS.clear()
            _ENCODERS[key] = DocumentEncoder(prepare(Tokenizer.from_str(text)), self.encoder)
        encoder = _ENCODERS[key]
        if self.kind is not None and encoder.kind != self.kind:
            raise RuntimeError(
                f"this executor encodes with {encoder.kind}, the driver with {self.kind}: install the same "
                "packages (tiktoken, tokenizers) on the driver and the executors"
            )
        return encoder

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        # Spark gives a task one core: encode_batch's own thread pool would oversubscribe it.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        encoder = self._encoder()
        verified = False
        dtype = dtype_for(self.vocab_size)
        name = f"part-{partition:05d}"
        writers: dict[str, IndexedShardWriter] = {}
        counts = {s: np.zeros(self.vocab_size, dtype=np.int64) for s in SPLITS}
        eot = np.array([self.eot_id], dtype=np.int64)
        try:
            for batch in batches:
                ids = batch.column("id").to_pylist()
                texts = batch.column("text").to_pylist()
                texts = [t or "" for t in texts]
                if not verified:
                    encoder.verify(texts[:VERIFY_DOCS], ids[:VERIFY_DOCS])
                    verified = True
                encoded = encoder.encode(texts)
                per_split: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
                for doc_id, enc in zip(ids, encoded):
                    split = split_of(doc_id, self.validation_fraction)
                    if split not in writers:
                        writers[split] = IndexedShardWriter(os.path.join(self.root, split, name), dtype)
                    doc = np.concatenate([np.asarray(enc, dtype=np.int64), eot])  # documents end in EOT
                    writers[split].add_document(doc)
                    per_split[split].append(doc)
                for split, docs in per_split.items():
                    if docs:
                        flat = np.concatenate(docs)
                        if flat.max() >= self.vocab_size:
                            raise ValueError(f"token id {flat.max()} is outside the vocabulary of {self.vocab_size}")
                        counts[split] += np.bincount(flat, minlength=self.vocab_size)
            rows = []
            for split in SPLITS:
                if split in writers:
                    r = writers[split].finish()
                    rows.append(
                        {
                            "partition": partition,
                            "split": split,
                            "name": name,
                            "documents": r["documents"],
                            "tokens": r["tokens"],
                            "sha256": r["sha256"],
                            "idx_sha256": r["idx_sha256"],
                            "counts": counts[split].tobytes(),
                        }
                    )
        except BaseException:
            for writer in writers.values():
                if writer.result is None:
                    writer.abort()
            raise
        yield pa.RecordBatch.from_pylist(rows, schema=SHARD_SCHEMA)


_ENCODERS: dict[tuple[str, str], DocumentEncoder] = {}


def _add_counts(acc: dict[str, np.ndarray], row) -> dict[str, np.ndarray]:
    vector = np.frombuffer(row["counts"], dtype=np.int64)
    acc = dict(acc)
    acc[row["split"]] = acc[row["split"]] + vector if row["split"] in acc else vector.copy()
    return acc


def _merge_counts(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(a)
    for split, vector in b.items():
        out[split] = out[split] + vector if split in out else vector
    return out


def run_tokenize_job(data_manifest_path: str | Path, out_dir: str | Path, cfg: Config) -> dict[str, Any]:
    """Train (or load) the tokenizer, write ``<out_dir>/<split>/part-*.{bin,idx}``, ``<split>/unigram_counts.npy``,
    ``tokenizer.json`` and ``manifest.json``; returns the manifest. The flow task and the CLI both call this."""
    from pyspark import StorageLevel

    from tokenmill.spark_jobs.progress import SparkProgressReporter
    from tokenmill.spark_jobs.session import spark_session

    started = time.time()
    tcfg = cfg.tokenizer
    data_manifest = read_manifest(data_manifest_path, stage="data")
    shards = [s["path"] for s in data_manifest["outputs"]["kept"]]
    if not shards:
        raise ValueError(f"{data_manifest_path} lists no kept shards: nothing to tokenize")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    spark = spark_session(
        cfg.data.spark_master,
        cfg.data.spark_driver_memory,
        app_name="tokenmill-tokenize",
        shuffle_partitions=cfg.data.spark_shuffle_partitions,
    )
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(BATCH_DOCS))
    timings = {"spark_start_s": round(time.time() - started, 2)}
    tmp = out_dir / f".shards.tmp-{uuid.uuid4().hex[:8]}"

    with SparkProgressReporter(spark.sparkContext):  # a line per Spark stage while the job runs
        docs = spark.read.parquet(*shards).select("id", "text")

        # 1. the tokenizer
        tok, kind, sample = _tokenizer_for(docs, tcfg)
        specials = special_ids(tok)
        eot_id = specials["eot"]
        tok = prepare(tok)
        tok_path = out_dir / "tokenizer.json"
        tok.save(str(tok_path))
        vocab_size = tok.get_vocab_size()
        dtype = dtype_for(vocab_size)
        encoder_kind = DocumentEncoder(tok, tcfg.encoder).kind
        timings["tokenizer_s"] = round(time.time() - started - sum(timings.values()), 2)
        log.info("tokenize: %s tokenizer with %d tokens, encoded with %s", kind, vocab_size, encoder_kind)

        # 2. the shards
        for split in SPLITS:
            (tmp / split).mkdir(parents=True, exist_ok=True)
        broadcast = spark.sparkContext.broadcast(tok.to_str())
        try:
            encode = EncodeShards(
                broadcast, str(tmp), tcfg.validation_fraction, vocab_size, eot_id, tcfg.encoder, encoder_kind
            )
            written = docs.mapInArrow(encode, _SHARD_DDL).persist(StorageLevel.MEMORY_AND_DISK)
            rows = written.select("partition", "split", "name", "documents", "tokens", "sha256", "idx_sha256")
            rows = [r.asDict() for r in rows.collect()]  # one small row per shard
            counts = written.select("split", "counts").rdd.treeAggregate({}, _add_counts, _merge_counts, depth=2)
            written.unpersist()
        finally:
            broadcast.destroy()
        timings["encode_s"] = round(time.time() - started - sum(timings.values()), 2)

    try:
        splits = _publish(rows, counts, tmp, out_dir, vocab_size, tcfg.validation_fraction)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    timings["total_s"] = round(time.time() - started, 2)

    manifest = {
        "stage": "tokenize",
        "data_manifest": {"path": str(Path(data_manifest_path).resolve()), "sha256": sha256_file(data_manifest_path)},
        "tokenizer": {
            "path": str(tok_path),
            "sha256": sha256_file(tok_path),
            "vocab_size": vocab_size,
            "eot_id": eot_id,
            "kind": kind,
            "encoder": encoder_kind,
            "special_tokens": specials,
            "sample": sample,
        },
        "format": {"name": "megatron-indexed", "dtype": dtype.name},
        "splits": splits,
        "config": {
            "vocab_size": tcfg.vocab_size,
            "min_frequency": tcfg.min_frequency,
            "validation_fraction": tcfg.validation_fraction,
            "from_pretrained": tcfg.from_pretrained,
            "sample_bytes": tcfg.sample_bytes,
            "encoder": tcfg.encoder,
        },
        "timings": timings,
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info(
        "tokenize: train %d docs / %d tokens in %d shard(s), validation %d docs / %d tokens in %d shard(s), %.1fs",
        splits["train"]["documents"],
        splits["train"]["tokens"],
        len(splits["train"]["shards"]),
        splits["validation"]["documents"],
        splits["validation"]["tokens"],
        len(splits["validation"]["shards"]),
        timings["total_s"],
    )
    return manifest


def _tokenizer_for(docs, tcfg) -> tuple[Any, str, dict[str, Any]]:
    """``(tokenizer, kind, sample)``: ``tokenizer.from_pretrained`` loaded, or a byte-level BPE trained on the
    ``sample_bytes`` share of ``docs`` (a DataFrame with ``id``, ``text``) that ``in_sample`` picks."""
    from pyspark.sql import functions as F

    if tcfg.from_pretrained:
        return (
            load_pretrained(tcfg.from_pretrained),
            f"pretrained ({tcfg.from_pretrained})",
            {
                "fraction": 0.0,
                "documents": 0,
                "bytes": 0,
            },
        )  # nothing trained
    total = docs.agg(F.sum(F.octet_length("text"))).first()[0] or 0
    fraction = min(1.0, tcfg.sample_bytes / total) if total else 1.0
    sample = {"fraction": fraction, "documents": 0, "bytes": 0}

    def texts() -> Iterator[str]:
        chosen = docs.filter(sample_filter(fraction)).select("text")
        for row in chosen.toLocalIterator(prefetchPartitions=True):  # streamed: the driver holds one partition
            text = row[0] or ""
            sample["documents"] += 1
            sample["bytes"] += len(text.encode())
            yield text

    tok = train_bpe(texts(), tcfg.vocab_size, tcfg.min_frequency)
    log.info(
        "tokenize: trained on %d documents, %s of %s text bytes (fraction %.4f)",
        sample["documents"],
        f"{sample['bytes']:,}",
        f"{total:,}",
        fraction,
    )
    return tok, "byte-level BPE", sample


def train_shared_tokenizer(data_manifests: list[str | Path], out_path: str | Path, cfg: Config) -> dict[str, Any]:
    """Train one tokenizer on a sample of the union of the kept shards of several data manifests (the same sampling
    as ``run_tokenize_job``) and save it to ``out_path`` (a ``tokenizer.json``); returns what it trained on. Runs
    that tokenize with it (``tokenizer.from_pretrained``) get the same ids for the same text, so their losses
    compare."""
    from tokenmill.spark_jobs.session import spark_session

    shards = [s["path"] for m in data_manifests for s in read_manifest(m, stage="data")["outputs"]["kept"]]
    if not shards:
        raise ValueError(f"{', '.join(map(str, data_manifests))} list no kept shards: nothing to train a tokenizer on")
    spark = spark_session(
        cfg.data.spark_master,
        cfg.data.spark_driver_memory,
        app_name="tokenmill-tokenizer",
        shuffle_partitions=cfg.data.spark_shuffle_partitions,
    )
    # A document kept by several recipes counts once: the union, not the concatenation.
    docs = spark.read.parquet(*shards).select("id", "text").dropDuplicates(["id"])
    tok, kind, sample = _tokenizer_for(docs, dataclasses.replace(cfg.tokenizer, from_pretrained=None))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tok.save(str(tmp))
    os.replace(tmp, out_path)
    return {
        "path": str(out_path),
        "sha256": sha256_file(out_path),
        "kind": kind,
        "sample": sample,
        "shards": len(shards),
    }


def _publish(
    rows: list[dict[str, Any]],
    counts: dict[str, np.ndarray],
    tmp: Path,
    out_dir: Path,
    vocab_size: int,
    validation_fraction: float,
) -> dict[str, Any]:
    """Check both splits have documents, move the split folders from ``tmp`` into place (replacing a previous
    run's), write each split's ``unigram_counts.npy``; returns the manifest's ``splits``."""
    documents = {s: sum(r["documents"] for r in rows if r["split"] == s) for s in SPLITS}
    for s in SPLITS:
        if documents[s] == 0:
            raise ValueError(
                f"the {s} split is empty: {sum(documents.values())} documents with "
                f"tokenizer.validation_fraction={validation_fraction}; feed more data or change the fraction"
            )
    splits = {}
    for s in SPLITS:
        final = out_dir / s
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp / s, final)
        vector = counts.get(s, np.zeros(vocab_size, dtype=np.int64)).astype(np.int64)
        np.save(final / "unigram_counts.npy", vector)
        shards = sorted(
            (
                {
                    "prefix": str(final / r["name"]),
                    "documents": r["documents"],
                    "tokens": r["tokens"],
                    "sha256": r["sha256"],
                    "idx_sha256": r["idx_sha256"],
                }
                for r in rows
                if r["split"] == s
            ),
            key=lambda shard: shard["prefix"],
        )
        splits[s] = {
            "documents": sum(x["documents"] for x in shards),
            "tokens": sum(x["tokens"] for x in shards),
            "unigram_counts": str(final / "unigram_counts.npy"),
            "shards": shards,
        }
    return splits
