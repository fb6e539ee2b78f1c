"""The tokenize job on local Spark: the tokenizer's sample, the indexed shards, the unigram counts and the manifest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from tokenmill.core.config import Config, TokenizerConfig
from tokenmill.core.indexed import IndexedShard
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
from tokenmill.core.tokenizer import SPLITS, load_pretrained, split_of, train_bpe
from tokenmill.spark_jobs.tokenize import in_sample, run_tokenize_job, sample_filter

ENGLISH = [
    "The cat sat on the mat. The dog sat on the log.",
    "A quick brown fox jumps over the lazy dog, and then the fox runs away.",
    "Language models learn the statistics of text: which words follow which.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Tokenizers split text into pieces; byte-level ones never meet an unknown character.",
]
KEPT_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("source", pa.string()), ("text", pa.string())])


def make_docs(n: int) -> list[dict]:
    return [
        {
            "id": f"{i:04d}-{'abcdef'[i % 6]}",
            "url": f"http://example.com/{i}",
            "source": "x.warc.gz",
            "text": f"{ENGLISH[i % len(ENGLISH)]} Document number {i}, café 東京.",
        }
        for i in range(n)
    ]


def fake_data_manifest(run: Path, docs: list[dict], shards: int = 3) -> Path:
    """A data manifest naming ``shards`` kept Parquet shards (documents dealt round-robin), as the data job writes."""
    kept = run / "data" / "kept"
    kept.mkdir(parents=True)
    outputs = []
    for s in range(shards):
        part = docs[s::shards]
        path = kept / f"part-{s:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(part, schema=KEPT_SCHEMA), path)
        outputs.append({"path": str(path), "rows": len(part), "sha256": sha256_file(path)})
    return write_manifest(
        run / "data" / "manifest.json",
        {"stage": "data", "outputs": {"kept": outputs, "rejected": [], "quarantine": []}},
    )


def input_partitions(spark, data_manifest: str | Path) -> int:
    """The Spark partitions the job's tasks read: one shard per task and split."""
    paths = [s["path"] for s in read_manifest(data_manifest, "data")["outputs"]["kept"]]
    return spark.read.parquet(*paths).rdd.getNumPartitions()


def config(**tokenizer) -> Config:
    cfg = Config()
    cfg.data.spark_master = "local[2]"
    cfg.tokenizer = TokenizerConfig(**{"vocab_size": 480, "min_frequency": 2, **tokenizer})
    return cfg


def shard_documents(split_info: dict) -> list[list[int]]:
    """Every document of a split's shards, read back from the files."""
    shards = [IndexedShard(info["prefix"]) for info in split_info["shards"]]
    return [shard.document(i).tolist() for shard in shards for i in range(shard.num_sequences)]


@pytest.fixture(scope="module")
def tokenized(spark, tmp_path_factory):
    run = tmp_path_factory.mktemp("tokenize") / "run"
    docs = make_docs(90)
    cfg = config(validation_fraction=0.25)
    assert {split_of(d["id"], 0.25) for d in docs} == {"train", "validation"}  # both splits get documents
    manifest = run_tokenize_job(fake_data_manifest(run, docs), run / "tokens", cfg)
    return run, docs, cfg, manifest


def test_every_document_is_in_one_split_encoded_as_the_tokenizer_encodes_it(tokenized):
    run, docs, cfg, manifest = tokenized
    tok = load_pretrained(manifest["tokenizer"]["path"])
    eot = manifest["tokenizer"]["eot_id"]
    assert eot == 0
    for split in SPLITS:
        expected = Counter(
            tuple(tok.encode(d["text"]).ids + [eot])
            for d in docs
            if split_of(d["id"], cfg.tokenizer.validation_fraction) == split
        )
        assert Counter(map(tuple, shard_documents(manifest["splits"][split]))) == expected
    assert sum(manifest["splits"][s]["documents"] for s in SPLITS) == len(docs)


def test_the_manifest_holds_the_contract_and_matches_the_files(spark, tokenized):
    run, docs, cfg, manifest = tokenized
    tasks = input_partitions(spark, run / "data" / "manifest.json")
    assert tasks > 1
    assert read_manifest(run / "tokens" / "manifest.json", "tokenize") == json.loads(json.dumps(manifest))
    assert set(manifest) == {"stage", "data_manifest", "tokenizer", "format", "splits", "config", "timings"}
    assert manifest["data_manifest"] == {
        "path": str((run / "data" / "manifest.json").resolve()),
        "sha256": sha256_file(run / "data" / "manifest.json"),
    }
    tok = manifest["tokenizer"]
    assert tok["path"] == str((run / "tokens" / "tokenizer.json").resolve())
    assert tok["sha256"] == sha256_file(tok["path"]) and tok["kind"] == "byte-level BPE"
    assert tok["encoder"] == "tiktoken"  # a trained byte-level BPE: tiktoken mirrors it
    assert tok["vocab_size"] == Tokenizer.from_file(tok["path"]).get_vocab_size() <= 480
    assert tok["special_tokens"]["eot"] == tok["eot_id"] == 0
    assert tok["sample"]["fraction"] == 1.0 and tok["sample"]["documents"] == len(docs)  # 1 GB > this corpus
    assert tok["sample"]["bytes"] == sum(len(d["text"].encode()) for d in docs)
    assert manifest["format"] == {"name": "megatron-indexed", "dtype": "uint16"}
    assert manifest["config"] == {
        "vocab_size": 480,
        "min_frequency": 2,
        "validation_fraction": 0.25,
        "from_pretrained": None,
        "sample_bytes": 1_000_000_000,
        "encoder": "auto",
    }
    assert manifest["timings"]["total_s"] > 0
    for split in SPLITS:
        info = manifest["splits"][split]
        assert set(info) == {"documents", "tokens", "unigram_counts", "shards"}
        assert len(info["shards"]) == tasks  # one per task and split: none is empty here
        assert [s["prefix"] for s in info["shards"]] == sorted(s["prefix"] for s in info["shards"])
        for shard in info["shards"]:
            assert set(shard) == {"prefix", "documents", "tokens", "sha256", "idx_sha256"}
            assert Path(shard["prefix"]).parent == (run / "tokens" / split).resolve()
            assert Path(shard["prefix"]).name.startswith("part-")
            read = IndexedShard(shard["prefix"])
            assert (read.num_sequences, read.num_tokens) == (shard["documents"], shard["tokens"])
            assert shard["sha256"] == sha256_file(shard["prefix"] + ".bin")
            assert shard["idx_sha256"] == sha256_file(shard["prefix"] + ".idx")
        assert info["documents"] == sum(s["documents"] for s in info["shards"])
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
    files = sorted(p.name for p in (run / "tokens").rglob("*") if p.is_file())
    assert not [f for f in files if ".tmp" in f]
    assert not [p for p in (run / "tokens").iterdir() if p.name.startswith(".shards")]


def test_the_tokenizers_encoder_writes_the_same_shards_byte_for_byte(tokenized, tmp_path):
    run, docs, cfg, manifest = tokenized
    slow = config(validation_fraction=0.25, encoder="tokenizers", from_pretrained=manifest["tokenizer"]["path"])
    other = run_tokenize_job(run / "data" / "manifest.json", tmp_path / "tokens", slow)
    assert other["tokenizer"]["encoder"] == "tokenizers"
    for split in SPLITS:
        fast_shards, slow_shards = manifest["splits"][split]["shards"], other["splits"][split]["shards"]
        assert [(s["sha256"], s["idx_sha256"]) for s in slow_shards] == [
            (s["sha256"], s["idx_sha256"]) for s in fast_shards
        ]


def test_unigram_counts_are_the_bincount_of_the_shards(tokenized):
    run, docs, cfg, manifest = tokenized
    vocab = manifest["tokenizer"]["vocab_size"]
    for split in SPLITS:
        info = manifest["splits"][split]
        counts = np.load(info["unigram_counts"])
        assert counts.dtype == np.int64 and counts.shape == (vocab,)
        tokens = np.concatenate([np.asarray(IndexedShard(s["prefix"]).tokens) for s in info["shards"]])
        assert np.array_equal(counts, np.bincount(tokens, minlength=vocab))
        assert counts.sum() == info["tokens"] and counts[0] == info["documents"]  # one EOT per document


def test_the_sample_depends_on_the_ids_alone(spark):
    docs = make_docs(400)
    frame = spark.createDataFrame([(d["id"], d["text"]) for d in docs], "id string, text string")
    expected = sorted(d["id"] for d in docs if in_sample(d["id"], 0.3))
    assert 0.2 * len(docs) < len(expected) < 0.4 * len(docs)
    for arranged in (frame.coalesce(1), frame.repartition(3), frame.orderBy("text", ascending=False).repartition(5)):
        assert sorted(r["id"] for r in arranged.filter(sample_filter(0.3)).select("id").collect()) == expected
    assert sorted(r["id"] for r in frame.filter(sample_filter(1.0)).collect()) == sorted(d["id"] for d in docs)
    assert frame.filter(sample_filter(0.0)).count() == 0


def test_a_bounded_sample_trains_the_same_tokenizer_on_any_layout(spark, tmp_path):
    docs = make_docs(300)
    total = sum(len(d["text"].encode()) for d in docs)
    cfg = config(validation_fraction=0.2, sample_bytes=total // 3)
    one = run_tokenize_job(fake_data_manifest(tmp_path / "a", docs, shards=1), tmp_path / "a" / "tokens", cfg)
    three = run_tokenize_job(fake_data_manifest(tmp_path / "b", docs[::-1], shards=3), tmp_path / "b" / "tokens", cfg)
    sample = one["tokenizer"]["sample"]
    assert sample == three["tokenizer"]["sample"]
    assert sample["fraction"] == pytest.approx(1 / 3, rel=1e-3)
    chosen = [d for d in docs if in_sample(d["id"], sample["fraction"])]
    assert sample["documents"] == len(chosen) and sample["bytes"] == sum(len(d["text"].encode()) for d in chosen)
    assert abs(sample["bytes"] - sample["fraction"] * total) < 0.25 * sample["fraction"] * total
    assert one["tokenizer"]["sha256"] == three["tokenizer"]["sha256"]  # the same sample, the same merges
    assert [len(s["shards"]) for s in one["splits"].values()] == [1, 1]
    tasks = input_partitions(spark, tmp_path / "b" / "data" / "manifest.json")
    assert tasks > 1 and [len(s["shards"]) for s in three["splits"].values()] == [tasks, tasks]
    for split in SPLITS:
        assert Counter(map(tuple, shard_documents(one["splits"][split]))) == Counter(
            map(tuple, shard_documents(three["splits"][split]))
        )
        assert np.array_equal(
            np.load(one["splits"][split]["unigram_counts"]), np.load(three["splits"][split]["unigram_counts"])
        )


def test_from_pretrained_is_used_as_is(spark, tmp_path):
    pretrained = train_bpe(iter([d["text"] for d in make_docs(40)] * 3), vocab_size=420, min_frequency=2)
    pretrained.save(str(tmp_path / "pre.json"))
    docs = make_docs(40)
    m = run_tokenize_job(
        fake_data_manifest(tmp_path, docs, shards=2),
        tmp_path / "tokens",
        config(validation_fraction=0.3, from_pretrained=str(tmp_path / "pre.json")),
    )
    assert m["tokenizer"]["kind"] == f"pretrained ({tmp_path / 'pre.json'})"
    assert m["tokenizer"]["sample"] == {"fraction": 0.0, "documents": 0, "bytes": 0}
    assert m["tokenizer"]["vocab_size"] == pretrained.get_vocab_size()
    tok = load_pretrained(tmp_path / "pre.json")
    assert load_pretrained(m["tokenizer"]["path"]).get_vocab() == tok.get_vocab()
    written = [doc for s in SPLITS for doc in shard_documents(m["splits"][s])]
    assert Counter(map(tuple, written)) == Counter(tuple(tok.encode(d["text"]).ids + [0]) for d in docs)


def test_a_literal_eot_in_a_page_is_text(spark, tmp_path):
    docs = make_docs(30)
    docs[0]["text"] = "GPT-2 separates documents with <|endoftext|> in its training data, and [MASK] too."
    m = run_tokenize_job(fake_data_manifest(tmp_path, docs), tmp_path / "tokens", config(validation_fraction=0.3))
    tok = Tokenizer.from_file(m["tokenizer"]["path"])
    mine = [d for s in SPLITS for d in shard_documents(m["splits"][s]) if tok.decode(d[:-1]) == docs[0]["text"]]
    assert len(mine) == 1 and mine[0].count(0) == 1 and mine[0][-1] == 0


def test_empty_split_and_wrong_manifest_are_clear_errors(spark, tmp_path):
    data = fake_data_manifest(tmp_path, make_docs(10))
    with pytest.raises(ValueError, match="validation split is empty"):
        run_tokenize_job(data, tmp_path / "tokens", config(min_frequency=1, validation_fraction=1e-9))
    assert not (tmp_path / "tokens" / "train").exists()  # nothing published
    assert not [p for p in (tmp_path / "tokens").iterdir() if p.name.startswith(".shards")]
    wrong = write_manifest(tmp_path / "m" / "m.json", {"stage": "train", "outputs": {"kept": []}})
    with pytest.raises(ValueError, match="expected 'data'"):
        run_tokenize_job(wrong, tmp_path / "tokens", config())


def test_a_moved_run_folder_still_resolves_and_retokenizes(spark, tmp_path):
    run = tmp_path / "runs" / "demo"
    docs = make_docs(30)
    cfg = config(validation_fraction=0.3)
    first = run_tokenize_job(fake_data_manifest(run, docs), run / "tokens", cfg)
    stored = json.loads((run / "tokens" / "manifest.json").read_text())
    assert stored["splits"]["train"]["shards"][0]["prefix"] == "./train/part-00000"
    assert stored["splits"]["train"]["unigram_counts"] == "./train/unigram_counts.npy"
    moved = tmp_path / "elsewhere" / "demo"
    shutil.copytree(run, moved)
    shutil.rmtree(run)

    tokens = read_manifest(moved / "tokens" / "manifest.json", "tokenize")
    assert tokens["data_manifest"]["path"] == str(moved / "data" / "manifest.json")
    assert tokens["tokenizer"]["path"] == str(moved / "tokens" / "tokenizer.json")
    for split in SPLITS:
        for shard in tokens["splits"][split]["shards"]:
            assert Path(shard["prefix"]).parent == moved / "tokens" / split
            assert IndexedShard(shard["prefix"]).num_tokens == shard["tokens"]
        assert np.load(tokens["splits"][split]["unigram_counts"]).sum() == tokens["splits"][split]["tokens"]
    again = run_tokenize_job(tokens["data_manifest"]["path"], moved / "tokens-again", cfg)
    for split in SPLITS:
        assert [s["sha256"] for s in again["splits"][split]["shards"]] == [
            s["sha256"] for s in first["splits"][split]["shards"]
        ]
