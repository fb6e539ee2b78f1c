"""Test helper: documents (lists of token ids) into Megatron indexed shards and a tokenize manifest of the contract
the Spark tokenize job writes, so the training loader can be tested without running the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenmill.core.indexed import IndexedShardWriter, dtype_for


def write_tokens_manifest(
    root: Path,
    splits: dict[str, list],
    *,
    vocab_size: int,
    eot: int = 0,
    specials: dict[str, int] | None = None,
    docs_per_shard: int = 3,
) -> dict:
    """Each split's documents (token ids without their EOT) as shards of ``docs_per_shard`` documents, each
    document ``ids + [eot]``, with ``unigram_counts.npy``; returns the manifest dict (``stage``: tokenize)."""
    root.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for(vocab_size)
    out = {}
    for split, docs in splits.items():
        shards, counts = [], np.zeros(vocab_size, dtype=np.int64)
        for k, lo in enumerate(range(0, max(len(docs), 1), docs_per_shard)):
            prefix = root / f"{split}-{k:05d}"
            with IndexedShardWriter(prefix, dtype) as writer:
                for ids in docs[lo : lo + docs_per_shard]:
                    doc = np.append(np.asarray(ids, dtype=np.int64), eot)
                    writer.add_document(doc)
                    counts += np.bincount(doc, minlength=vocab_size)
                entry = writer.finish()
            shards.append(
                {
                    "prefix": str(prefix),
                    "documents": entry["documents"],
                    "tokens": entry["tokens"],
                    "sha256": entry["sha256"],
                    "idx_sha256": entry["idx_sha256"],
                }
            )
        np.save(root / f"{split}-unigram_counts.npy", counts)
        out[split] = {
            "documents": sum(s["documents"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "unigram_counts": str(root / f"{split}-unigram_counts.npy"),
            "shards": shards,
        }
    return {
        "stage": "tokenize",
        "tokenizer": {
            "path": str(root / "tokenizer.json"),
            "sha256": "",
            "vocab_size": vocab_size,
            "eot_id": eot,
            "kind": "test",
            "special_tokens": dict(specials or {"eot": eot}),
            "sample": {},
        },
        "format": {"name": "megatron-indexed", "dtype": dtype.name},
        "splits": out,
    }
