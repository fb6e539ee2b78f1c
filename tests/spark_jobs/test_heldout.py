"""Held-out evaluation sets: validation documents only, decontaminated against every recipe's training text."""

import hashlib
import json

import numpy as np
import pytest

from tokenmill.core.config import Config
from tokenmill.core.manifest import heldout_split, read_manifest, write_manifest
from tokenmill.core.tokenizer import split_of, train_bpe
from tokenmill.spark_jobs.heldout import build_heldout_sets, read_texts
from tokenmill.training.data import open_split

WORDS = "river bridge stone cloud winter summer garden market silver window paper candle forest harbor".split()


def _text(seed: int, n: int = 60) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, n)) + "."


def _recipe(tmp_path, name, docs):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = tmp_path / name / "part-0.parquet"
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": [d for d, _ in docs], "text": [t for _, t in docs]}), shard)
    manifest = tmp_path / name / "manifest.json"
    write_manifest(manifest, {"stage": "data", "outputs": {"kept": [{"path": str(shard)}]}})
    return str(manifest)


def test_sets_decontaminated_and_scoreable(spark, tmp_path):
    ids = [f"doc-{i}" for i in range(200)]
    val = [i for i in ids if split_of(i, 0.1) == "validation"]
    train = [i for i in ids if split_of(i, 0.1) == "train"]
    texts = {i: _text(n) for n, i in enumerate(ids)}
    # recipe b trains on a copy of one of a's validation documents: that document must leave every set
    copied = min(val, key=lambda i: hashlib.sha1(i.encode()).hexdigest())  # in the set: smallest sha1 first
    a = _recipe(tmp_path, "a", [(i, texts[i]) for i in ids])
    b = _recipe(tmp_path, "b", [(i, texts[i]) for i in train[:50]] + [("copy", "Intro. " + texts[copied])])
    clean = tmp_path / "clean.jsonl"
    clean.write_text(
        json.dumps({"id": "c1", "text": _text(999), "source": "news"})
        + "\n"
        + json.dumps({"text": texts[train[3]], "source": "docs"})
        + "\n"
    )
    tok = train_bpe(iter(texts.values()), 400, 2)
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = Config()
    cfg.tokenizer.validation_fraction = 0.1
    cfg.data.spark_master = "local[2]"

    m = build_heldout_sets({"a": a, "b": b}, clean, tmp_path / "tokenizer.json", tmp_path / "held", cfg, max_docs=5)
    assert m == read_manifest(tmp_path / "held" / "manifest.json", stage="heldout")
    va = m["sets"]["val-a"]
    assert va["documents_before"] == min(5, len(val))
    assert va["removed_by_recipe"] == {"a": 0, "b": 1} and va["removed"] == 1  # the copy, not a's own validation
    assert m["sets"]["clean"]["removed_by_recipe"]["a"] == 1  # a trains on train[3]
    assert m["sets"]["clean"]["documents"] == 1
    # two sources: each is a set of its own too
    assert m["sets"]["clean-news"]["documents"] == 1 and m["sets"]["clean-docs"]["removed"] == 1
    assert m["sets"]["val-b"]["documents_before"] == 0  # b has no validation document
    split = open_split(heldout_split(m, "val-a"), "validation")
    assert split.num_documents == va["documents"] and len(split) == va["tokens"] > 0
    with pytest.raises(ValueError, match="no document left"):
        heldout_split(m, "val-b")


def test_read_texts_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not JSON"):
        read_texts(bad)
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError):
        read_texts(tmp_path / "d")
