"""Tokenize stage: train a byte-level BPE on the kept shards and write token shards with a train/validation split."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tokenmill.config import TokenizerConfig
from tokenmill.manifest import read_manifest, sha256_file, write_manifest

log = logging.getLogger("tokenmill.tokenize")

EOT = "<|endoftext|>"
SPLITS = ("train", "validation")
_BATCH_DOCS = 512


def split_of(doc_id: str, validation_fraction: float) -> str:
    """Deterministic split from the document id alone: the same document always lands in the same split."""
    bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 2**32
    return "validation" if bucket < validation_fraction else "train"


def train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int):
    """A byte-level BPE (GPT-2 style) with ``<|endoftext|>`` as its only special token (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _iter_batches(shards: list[str]) -> Iterator[pa.RecordBatch]:
    for path in shards:
        yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_DOCS, columns=["id", "text"])


def run_tokenize(data_manifest_path: str | Path, out_dir: str | Path, cfg: TokenizerConfig) -> dict[str, Any]:
    """Train the tokenizer, write ``train.parquet`` / ``validation.parquet`` (``id``, ``tokens``) and a manifest."""
    started = time.time()
    data_manifest = read_manifest(data_manifest_path, stage="data")
    shards = [s["path"] for s in data_manifest["outputs"]["kept"]]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    tok = train_bpe((t for b in _iter_batches(shards) for t in b.column("text").to_pylist()),
                    cfg.vocab_size, cfg.min_frequency)
    eot_id = tok.token_to_id(EOT)
    tok.encode_special_tokens = True  # a literal "<|endoftext|>" in a page is text, not a document boundary
    tok_path = out_dir / "tokenizer.json"
    tok.save(str(tok_path))
    log.info("tokenize: trained byte-level BPE with %d tokens in %.1fs", tok.get_vocab_size(), time.time() - started)

    schema = pa.schema([("id", pa.string()), ("tokens", pa.list_(pa.int32()))])
    writers = {s: pq.ParquetWriter(out_dir / f"{s}.parquet.tmp", schema) for s in SPLITS}
    stats = {s: {"documents": 0, "tokens": 0} for s in SPLITS}
    for batch in _iter_batches(shards):
        ids = batch.column("id").to_pylist()
        encoded = tok.encode_batch(batch.column("text").to_pylist())
        rows: dict[str, dict[str, list]] = {s: {"id": [], "tokens": []} for s in SPLITS}
        for doc_id, enc in zip(ids, encoded):
            split = split_of(doc_id, cfg.validation_fraction)
            rows[split]["id"].append(doc_id)
            rows[split]["tokens"].append(enc.ids + [eot_id])  # documents are separated by <|endoftext|>
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
            raise ValueError(f"the {s} split is empty: {stats['train']['documents'] + stats['validation']['documents']}"
                             f" documents with tokenizer.validation_fraction={cfg.validation_fraction}; "
                             "feed more data or change the fraction")

    manifest = {
        "stage": "tokenize",
        "data_manifest": {"path": str(Path(data_manifest_path).resolve()), "sha256": sha256_file(data_manifest_path)},
        "tokenizer": {"path": str(tok_path), "sha256": sha256_file(tok_path), "vocab_size": tok.get_vocab_size(),
                      "eot_id": eot_id, "kind": "byte-level BPE"},
        "splits": outputs,
        "config": {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency,
                   "validation_fraction": cfg.validation_fraction},
        "timings": {"total_s": round(time.time() - started, 2)},
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info("tokenize: train %d docs / %d tokens, validation %d docs / %d tokens",
             stats["train"]["documents"], stats["train"]["tokens"],
             stats["validation"]["documents"], stats["validation"]["tokens"])
    return manifest


def load_tokens(path: str | Path) -> np.ndarray:
    """All documents of a token shard concatenated into one int64 stream."""
    column = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
    return column.values.to_numpy().astype(np.int64)
