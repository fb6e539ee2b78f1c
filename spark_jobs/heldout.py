"""Held-out evaluation sets for the data ablation: text no recipe trains on, tokenized with the shared tokenizer.

Sets: ``clean`` (the shipped ``data/heldout/clean-eval.jsonl``, or any ``.jsonl``/``.txt`` given; with documents
of several ``"source"`` values, also ``clean-<source>`` for each) and
``val-<recipe>`` (up to ``max_docs`` of each recipe's validation documents, the ones with the smallest sha1 of
their id: the tokenize stage's split, so no recipe trained on them). Then every evaluation text sharing a word
``ngram_size``-gram with the **training** documents of any recipe is removed (the normalisation and hashing of the
``decontaminate`` step); what each recipe's shards removed is counted. What survives is encoded as the tokenize
stage encodes (ids + EOT) into one indexed shard per set, described by a manifest of stage ``heldout`` that
``training.evaluate.evaluate(..., heldout=)`` reads.

Scale: the evaluation texts are bounded (``max_docs`` per recipe plus the clean set) and held on the driver; the
training shards are scanned by Spark executors against the broadcast n-gram table (8 bytes per n-gram), and only
the matched n-grams (at most the table) come back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tokenmill.core.config import Config
from tokenmill.core.indexed import IndexedShardWriter, dtype_for
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
from tokenmill.core.tokenizer import DocumentEncoder, load_pretrained, special_ids
from tokenmill.spark_jobs.decontaminate import NGramHasher
from tokenmill.spark_jobs.tokenize import prepare

log = logging.getLogger("tokenmill.data")

CLEAN = "clean"


def read_texts(path: str | Path) -> list[tuple[str, str, str | None]]:
    """``(id, text, source)`` of a ``.jsonl`` file (``"text"`` field; ``"id"`` or the line number; ``"source"`` or
    None) or of every ``.txt`` and ``.jsonl`` file under a folder, in a stable order. A line that is not JSON with a
    text is an error."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .jsonl or .txt evaluation text at {path}")
    out = []
    for f in files:
        if f.suffix.lower() == ".txt":
            out.append((f.name, f.read_text(encoding="utf-8"), None))
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{f}:{n}: not JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise ValueError(f"{f}:{n}: no string field 'text'")
            source = obj.get("source")
            out.append((str(obj.get("id", f"{f.name}:{n}")), obj["text"], str(source) if source else None))
    return out


def _validation_docs(spark, data_manifest: str, fraction: float, max_docs: int) -> list[tuple[str, str]]:
    """Up to ``max_docs`` validation documents (``split_of``) of a data manifest's kept shards, smallest sha1 first."""
    from pyspark.sql import functions as F

    shards = [s["path"] for s in read_manifest(data_manifest, stage="data")["outputs"]["kept"]]
    docs = spark.read.parquet(*shards).select("id", "text")
    bucket = F.conv(F.substring(F.sha1(F.col("id")), 1, 8), 16, 10).cast("double")  # split_of's 32 bits
    chosen = docs.filter(bucket < F.lit(fraction * 2**32)).orderBy(F.sha1(F.col("id"))).limit(max_docs)
    return [(r["id"], r["text"] or "") for r in chosen.collect()]  # bounded: max_docs rows


def _training_docs(spark, data_manifest: str, fraction: float):
    from pyspark.sql import functions as F

    shards = [s["path"] for s in read_manifest(data_manifest, stage="data")["outputs"]["kept"]]
    docs = spark.read.parquet(*shards).select("id", "text")
    bucket = F.conv(F.substring(F.sha1(F.col("id")), 1, 8), 16, 10).cast("double")
    return docs.filter(bucket >= F.lit(fraction * 2**32))


def _matched_ngrams(docs, table_broadcast, n: int) -> np.ndarray:
    """The n-grams of ``table_broadcast`` (sorted uint64) that occur in any document of ``docs``."""
    import pandas as pd

    def match(batches):
        table = table_broadcast.value
        hasher = NGramHasher(n)
        for batch in batches:
            found = [h[np.isin(h, table)] for h in map(hasher.hashes, batch["text"].fillna(""))]
            found = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.uint64)
            yield pd.DataFrame({"h": found.view(np.int64)})

    rows = docs.select("text").mapInPandas(match, "h long").distinct().collect()
    return np.array([r["h"] for r in rows], dtype=np.int64).view(np.uint64)


def build_heldout_sets(
    recipes: dict[str, str],
    clean: str | Path | None,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    cfg: Config,
    *,
    max_docs: int = 64,
    ngram_size: int = 13,
) -> dict[str, Any]:
    """Build the evaluation sets for ``recipes`` (name -> data manifest) under ``out_dir``; returns (and writes to
    ``out_dir/manifest.json``) the ``heldout`` manifest: per set its documents before and after decontamination, what
    each recipe's training documents removed, tokens and the shard."""
    from tokenmill.spark_jobs.session import spark_session

    out_dir = Path(out_dir).resolve()
    fraction = cfg.tokenizer.validation_fraction
    spark = spark_session(
        cfg.data.spark_master,
        cfg.data.spark_driver_memory,
        app_name="tokenmill-heldout",
        shuffle_partitions=cfg.data.spark_shuffle_partitions,
    )
    sets: dict[str, list[tuple[str, str]]] = {}
    if clean is not None:
        texts = read_texts(clean)
        sets[CLEAN] = [(i, t) for i, t, _ in texts]
        sources = sorted({src for _, _, src in texts if src})
        if len(sources) > 1:  # each source on its own too: one genre can carry the whole difference
            for src in sources:
                sets[f"{CLEAN}-{src}"] = [(i, t) for i, t, s in texts if s == src]
    for name, manifest in recipes.items():
        sets[f"val-{name}"] = _validation_docs(spark, manifest, fraction, max_docs)

    hasher = NGramHasher(ngram_size)
    hashes = {s: [hasher.hashes(t) for _, t in texts] for s, texts in sets.items()}
    every = [h for per_set in hashes.values() for h in per_set if len(h)]
    table = np.unique(np.concatenate(every)) if every else np.empty(0, dtype=np.uint64)
    broadcast = spark.sparkContext.broadcast(table)
    try:
        matched = {
            r: _matched_ngrams(_training_docs(spark, m, fraction), broadcast, ngram_size) for r, m in recipes.items()
        }
    finally:
        broadcast.destroy()

    tok = prepare(load_pretrained(tokenizer_path))
    encoder = DocumentEncoder(tok, cfg.tokenizer.encoder)
    vocab_size, eot = tok.get_vocab_size(), special_ids(tok)["eot"]
    manifest: dict[str, Any] = {
        "stage": "heldout",
        "tokenizer": {"path": str(Path(tokenizer_path).resolve()), "sha256": sha256_file(tokenizer_path)},
        "format": {"name": "megatron-indexed", "dtype": dtype_for(vocab_size).name},
        "ngram_size": ngram_size,
        "max_docs": max_docs,
        "clean_source": str(Path(clean).resolve()) if clean is not None else None,
        "sets": {},
    }
    for s, texts in sets.items():
        removed = {r: sum(bool(np.isin(h, m).any()) for h in hashes[s]) for r, m in matched.items()}
        contaminated = [any(np.isin(h, m).any() for m in matched.values()) for h in hashes[s]]
        kept = [t for (_, t), bad in zip(texts, contaminated) if not bad and t.strip()]
        entry: dict[str, Any] = {
            "documents_before": len(texts),
            "removed_by_recipe": removed,
            "removed": sum(contaminated),
            "documents": len(kept),
            "tokens": 0,
        }
        if kept:
            (out_dir / s).mkdir(parents=True, exist_ok=True)
            with IndexedShardWriter(out_dir / s / "part-00000", dtype_for(vocab_size)) as writer:
                for ids in encoder.encode(kept):
                    writer.add_document(np.asarray([*ids, eot], dtype=np.int64))  # documents end in EOT
                shard = writer.finish()
            entry["tokens"] = int(shard["tokens"])
            entry["split"] = {
                "documents": len(kept),
                "tokens": entry["tokens"],
                "shards": [
                    {"prefix": str(out_dir / s / "part-00000"), "documents": len(kept), "tokens": entry["tokens"]}
                ],
            }
        log.info(
            "heldout: %s: %d of %d documents kept (%d shared a %d-gram with a recipe's training text), %d tokens",
            s,
            len(kept),
            len(texts),
            sum(contaminated),
            ngram_size,
            entry["tokens"],
        )
        manifest["sets"][s] = entry
    write_manifest(out_dir / "manifest.json", manifest)
    return manifest
