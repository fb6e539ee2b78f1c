"""Tokenize stage: train a byte-level BPE on the kept shards and write token shards with a train/validation split."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.core.config import TokenizerConfig
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
from tokenmill.core.tokenizer import SPLITS, load_pretrained, special_ids, split_of, train_bpe

log = logging.getLogger("tokenmill.tokenize")

_BATCH_DOCS = 512


def _iter_batches(shards: list[str]) -> Iterator[pa.RecordBatch]:
    for path in shards:
        yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_DOCS, columns=["id", "text"])


def run_tokenize(data_manifest_path: str | Path, out_dir: str | Path, cfg: TokenizerConfig) -> dict[str, Any]:
    """Train the tokenizer, write ``train.parquet`` / ``validation.parquet`` (``id``, ``input_ids``: the column
    names Hugging Face ``datasets`` and ``transformers`` use) and a manifest."""
    started = time.time()
    data_manifest = read_manifest(data_manifest_path, stage="data")
    shards = [s["path"] for s in data_manifest["outputs"]["kept"]]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    if cfg.from_pretrained:
        tok = load_pretrained(cfg.from_pretrained)
        kind = f"pretrained ({cfg.from_pretrained})"
    else:
        tok = train_bpe(
            (t for b in _iter_batches(shards) for t in b.column("text").to_pylist()), cfg.vocab_size, cfg.min_frequency
        )
        kind = "byte-level BPE"
    specials = special_ids(tok)
    eot_id = specials["eot"]
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a page is text, not a document boundary
    tok.no_padding()
    tok.no_truncation()
    tok.post_processor = None  # documents are encoded bare: the objectives add [CLS]/[SEP]/EOS themselves
    tok_path = out_dir / "tokenizer.json"
    tok.save(str(tok_path))
    log.info("tokenize: %s tokenizer with %d tokens in %.1fs", kind, tok.get_vocab_size(), time.time() - started)

    schema = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32()))])
    writers = {s: pq.ParquetWriter(out_dir / f"{s}.parquet.tmp", schema) for s in SPLITS}
    stats = {s: {"documents": 0, "tokens": 0} for s in SPLITS}
    for batch in _iter_batches(shards):
        ids = batch.column("id").to_pylist()
        encoded = tok.encode_batch(batch.column("text").to_pylist())
        rows: dict[str, dict[str, list]] = {s: {"id": [], "input_ids": []} for s in SPLITS}
        for doc_id, enc in zip(ids, encoded):
            split = split_of(doc_id, cfg.validation_fraction)
            rows[split]["id"].append(doc_id)
            rows[split]["input_ids"].append(enc.ids + [eot_id])  # documents are separated by <|endoftext|>
            stats[split]["documents"] += 1
            stats[split]["tokens"] += len(enc.ids) + 1
        for s in SPLITS:
            if rows[s]["id"]:
                writers[s].write_table(pa.table(rows[s], schema=schema))
    outputs = {}
    for s, writer in writers.items():
        writer.close()
        final = out_dir / f"{s}.parquet"
        (out_dir / f"{s}.parquet.tmp").replace(final)
        outputs[s] = {"path": str(final), "sha256": sha256_file(final), **stats[s]}
    for s in SPLITS:
        if stats[s]["documents"] == 0:
            raise ValueError(
                f"the {s} split is empty: {stats['train']['documents'] + stats['validation']['documents']}"
                f" documents with tokenizer.validation_fraction={cfg.validation_fraction}; "
                "feed more data or change the fraction"
            )

    manifest = {
        "stage": "tokenize",
        "data_manifest": {"path": str(Path(data_manifest_path).resolve()), "sha256": sha256_file(data_manifest_path)},
        "tokenizer": {
            "path": str(tok_path),
            "sha256": sha256_file(tok_path),
            "vocab_size": tok.get_vocab_size(),
            "eot_id": eot_id,
            "kind": kind,
            "special_tokens": specials,
        },
        "splits": outputs,
        "config": {
            "vocab_size": cfg.vocab_size,
            "min_frequency": cfg.min_frequency,
            "validation_fraction": cfg.validation_fraction,
            "from_pretrained": cfg.from_pretrained,
        },
        "timings": {"total_s": round(time.time() - started, 2)},
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info(
        "tokenize: train %d docs / %d tokens, validation %d docs / %d tokens",
        stats["train"]["documents"],
        stats["train"]["tokens"],
        stats["validation"]["documents"],
        stats["validation"]["tokens"],
    )
    return manifest


def load_tokens(path: str | Path) -> np.ndarray:
    """All documents of a token shard concatenated into one int64 stream."""
    names = pq.read_schema(path).names
    name = "input_ids" if "input_ids" in names or "tokens" not in names else "tokens"  # "tokens": shards made before
    column = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    return column.values.to_numpy().astype(np.int64)
