"""The tokenizer conventions (tokenmill.core.tokenizer: split by id, byte-level BPE, specials, load_pretrained)
and the saved copies of the tokenize job's tokenizer encoding alike."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from tokenmill.core.config import Config, TokenizerConfig
from tokenmill.core.indexed import IndexedShard
from tokenmill.core.manifest import write_manifest
from tokenmill.core.tokenizer import EOT, SPECIAL_TOKENS, load_pretrained, special_ids, split_of, train_bpe
from tokenmill.spark_jobs.tokenize import run_tokenize_job

ENGLISH = [
    "The cat sat on the mat. The dog sat on the log.",
    "A quick brown fox jumps over the lazy dog, and then the fox runs away.",
    "Language models learn the statistics of text: which words follow which.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Tokenizers split text into pieces; byte-level ones never meet an unknown character.",
]


def test_split_of_is_deterministic_and_close_to_fraction():
    ids = [f"doc-{i}" for i in range(10_000)]
    first = [split_of(i, 0.1) for i in ids]
    assert first == [split_of(i, 0.1) for i in ids]
    share = first.count("validation") / len(ids)
    assert 0.085 < share < 0.115
    assert set(first) == {"train", "validation"}


def test_split_of_extremes_and_nesting():
    ids = [f"doc-{i}" for i in range(2000)]
    assert all(split_of(i, 0.0) == "train" for i in ids)
    assert all(split_of(i, 1.0) == "validation" for i in ids)
    # growing the fraction only moves documents into validation, never out of it
    small = {i for i in ids if split_of(i, 0.05) == "validation"}
    large = {i for i in ids if split_of(i, 0.2) == "validation"}
    assert small < large


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(iter(ENGLISH * 4), vocab_size=480, min_frequency=2)


def test_eot_is_id_zero_and_vocab_bounded(tokenizer):
    assert tokenizer.token_to_id(EOT) == 0
    assert len(SPECIAL_TOKENS) + 256 < tokenizer.get_vocab_size() <= 480


def test_special_tokens_have_fixed_ids_and_are_not_page_text(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    ids = special_ids(tokenizer)
    assert (ids["eot"], ids["pad"], ids["cls"], ids["sep"], ids["mask"], ids["sentinel_0"]) == (0, 1, 2, 3, 4, 5)
    tokenizer.encode_special_tokens = True
    assert not set(tokenizer.encode("[MASK] <extra_id_3> [CLS]").ids) & set(ids.values())


def test_vocab_too_small_for_the_reserved_tokens_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(iter(ENGLISH), vocab_size=300, min_frequency=2)


def test_merges_were_learned(tokenizer):
    text = "the the the"
    assert len(tokenizer.encode(text).ids) < len(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        ENGLISH[0],
        "  leading and trailing spaces  ",
        "line one\nline two\n\n\ttabbed",
        "Unseen: café naïve Zürich — 東京 😀",
        "",
    ],
)
def test_encode_decode_round_trips_exactly(tokenizer, text):
    ids = tokenizer.encode(text).ids
    assert 0 not in ids or EOT in text
    assert tokenizer.decode(ids) == text


def test_saved_tokenizer_round_trips(tokenizer, tmp_path):
    path = tmp_path / "tok.json"
    tokenizer.save(str(path))
    loaded = Tokenizer.from_file(str(path))
    assert loaded.encode(ENGLISH[1]).ids == tokenizer.encode(ENGLISH[1]).ids
    assert loaded.decode(loaded.encode(ENGLISH[2]).ids) == ENGLISH[2]


def test_every_saved_copy_encodes_spelled_specials_as_training_did(spark, tmp_path):
    """``encode_special_tokens`` is not in ``tokenizer.json``: the stage's tokenizer, the model folder's copy and
    the Hugging Face export must still encode a page that spells special tokens as the token shards hold it."""
    from transformers import AutoTokenizer

    from tokenmill.training.hf import export
    from tokenmill.training.models.gpt import GPT, GPTConfig
    from tokenmill.training.weights import save_model_folder

    texts = [f"{ENGLISH[i % len(ENGLISH)]} Document number {i}." for i in range(30)]
    texts[0] = "Pages spell <|endoftext|>, [MASK] and <extra_id_0> as text."
    kept = tmp_path / "data" / "kept"
    kept.mkdir(parents=True)
    pq.write_table(pa.table({"id": [f"doc-{i}" for i in range(30)], "text": texts}), kept / "part-00000.parquet")
    data = write_manifest(
        tmp_path / "data" / "manifest.json",
        {"stage": "data", "outputs": {"kept": [{"path": str(kept / "part-00000.parquet")}]}},
    )
    cfg = Config(tokenizer=TokenizerConfig(vocab_size=480, min_frequency=2, validation_fraction=0.3))
    manifest = run_tokenize_job(data, tmp_path / "tokens", cfg)
    shard = IndexedShard(manifest["splits"][split_of("doc-0", 0.3)]["shards"][0]["prefix"])
    decoder = Tokenizer.from_file(manifest["tokenizer"]["path"])
    documents = [shard.document(i).tolist() for i in range(shard.num_sequences)]
    (trained,) = [d[:-1] for d in documents if decoder.decode(d[:-1]) == texts[0]]  # without the closing EOT
    assert not set(trained) & set(range(len(SPECIAL_TOKENS)))

    tok_path = manifest["tokenizer"]["path"]
    assert load_pretrained(tok_path).encode(texts[0]).ids == trained
    arch = GPTConfig(vocab_size=manifest["tokenizer"]["vocab_size"], block_size=8, n_layer=1, n_head=1, n_embd=8)
    model = GPT(arch).eval()
    folder = save_model_folder(tmp_path / "model", model.state_dict(), arch, tok_path)
    assert load_pretrained(folder).encode(texts[0]).ids == trained
    hf = AutoTokenizer.from_pretrained(export(model, tok_path, tmp_path / "hf"), local_files_only=True)
    assert hf(texts[0], add_special_tokens=False)["input_ids"] == trained
    # Tokenizer.from_file alone forgets the flag: the reason load_pretrained sets it
    assert Tokenizer.from_file(tok_path).encode(texts[0]).ids != trained
