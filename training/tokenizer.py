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

from tokenmill.core.config import TokenizerConfig
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest

log = logging.getLogger("tokenmill.tokenize")

EOT = "<|endoftext|>"
PAD, CLS, SEP, MASK = "<pad>", "[CLS]", "[SEP]", "[MASK]"
NUM_SENTINELS = 100
# Reserved at the start of every vocabulary, in this order, so all three families share one tokenizer:
# EOT separates documents (and ends T5 sequences), [CLS]/[SEP]/[MASK] serve BERT, <extra_id_N> are
# T5's span-corruption sentinels. ``encode_special_tokens`` keeps them out of encoded page text: a page
# that spells "<|endoftext|>" or "[MASK]" is encoded as plain text, and only the objectives and the
# samplers put special ids in a sequence (by id, never by spelling). ``tokenizers`` does not save that
# flag in ``tokenizer.json``, so ``load_pretrained`` (and the Hugging Face export, ``split_special_tokens``)
# set it again on every load.
SPECIAL_TOKENS = [EOT, PAD, CLS, SEP, MASK] + [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
SPLITS = ("train", "validation")
_BATCH_DOCS = 512


def split_of(doc_id: str, validation_fraction: float) -> str:
    """Deterministic split from the document id alone: the same document always lands in the same split."""
    bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 2**32
    return "validation" if bucket < validation_fraction else "train"


def train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int):
    """A byte-level BPE (GPT-2 style) whose first ids are ``SPECIAL_TOKENS`` (``<|endoftext|>`` is 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    floor = len(SPECIAL_TOKENS) + 256
    if vocab_size <= floor:
        raise ValueError(
            f"tokenizer.vocab_size {vocab_size} leaves no room for merges: {len(SPECIAL_TOKENS)} reserved "
            f"tokens and 256 bytes come first, so it must be above {floor}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


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


# Other spellings of the same roles, found in pretrained tokenizers (GPT-2, BERT, T5).
_ALIASES = {
    "eot": ["</s>", "<eos>", "<|eos|>"],
    "pad": ["[PAD]"],
    "cls": ["<s>", "<cls>"],
    "sep": ["</s>", "<sep>"],
    "mask": ["<mask>"],
}


def special_ids(tok) -> dict[str, int]:
    """``{"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4, "sentinel_0": 5, ...}`` for a tokenizer.

    A pretrained tokenizer may spell the roles differently (``</s>``, ``[PAD]``) or lack some; a
    missing pad falls back to the end-of-text token, other missing roles are left out (the
    objective that needs them says so).
    """
    names = ["eot", "pad", "cls", "sep", "mask"] + [f"sentinel_{i}" for i in range(NUM_SENTINELS)]
    out = {}
    for name, token in zip(names, SPECIAL_TOKENS):
        for spelling in [token, *_ALIASES.get(name, [])]:
            if (i := tok.token_to_id(spelling)) is not None:
                out[name] = i
                break
    if "eot" not in out:
        raise ValueError(f"the tokenizer has no end-of-text token ({EOT} or </s>): documents could not be separated")
    out.setdefault("pad", out["eot"])
    return out


def load_pretrained(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` or a folder holding one (e.g. a Hugging Face model),
    encoding text the way the tokenize stage did: a spelled special token is plain text
    (``encode_special_tokens``, which ``tokenizer.json`` does not keep). To let a user write
    ``<extra_id_0>`` in a prompt, set ``encode_special_tokens = False`` on the result."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer.from_pretrained: no tokenizer.json at {path}")
    tok = Tokenizer.from_file(str(file))
    tok.encode_special_tokens = True
    return tok


def load_tokens(path: str | Path) -> np.ndarray:
    """All documents of a token shard concatenated into one int64 stream."""
    names = pq.read_schema(path).names
    name = "input_ids" if "input_ids" in names or "tokens" not in names else "tokens"  # "tokens": shards made before
    column = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    return column.values.to_numpy().astype(np.int64)
