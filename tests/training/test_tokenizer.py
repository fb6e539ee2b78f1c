"""tokenmill.training.tokenizer: deterministic split, byte-level BPE, the tokenize stage and its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from tokenmill.core.config import TokenizerConfig
from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
from tokenmill.core.tokenizer import EOT, SPECIAL_TOKENS, load_pretrained, special_ids, split_of, train_bpe
from tokenmill.training.tokenizer import load_tokens, run_tokenize

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


# --- the tokenize stage -----------------------------------------------------------------------


def make_docs(n: int) -> list[dict]:
    return [
        {
            "id": f"{i:04d}-{'abcdef'[i % 6]}",
            "url": f"http://example.com/{i}",
            "source": "x.warc.gz",
            "text": f"{ENGLISH[i % len(ENGLISH)]} Document number {i}.",
        }
        for i in range(n)
    ]


def fake_data_manifest(tmp_path: Path, docs: list[dict], shards: int = 2) -> Path:
    kept = tmp_path / "data" / "kept"
    kept.mkdir(parents=True)
    outputs = []
    for s in range(shards):
        part = docs[s::shards]
        path = kept / f"part-{s:05d}.parquet"
        pq.write_table(
            pa.Table.from_pylist(
                part,
                schema=pa.schema(
                    [("id", pa.string()), ("url", pa.string()), ("source", pa.string()), ("text", pa.string())]
                ),
            ),
            path,
        )
        outputs.append({"path": str(path), "rows": len(part)})
    return write_manifest(
        tmp_path / "data" / "manifest.json",
        {"stage": "data", "outputs": {"kept": outputs, "rejected": [], "quarantine": []}},
    )


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tokenize")
    docs = make_docs(60)
    cfg = TokenizerConfig(vocab_size=480, min_frequency=2, validation_fraction=0.25)
    assert {split_of(d["id"], 0.25) for d in docs} == {"train", "validation"}  # both splits get documents
    manifest = run_tokenize(fake_data_manifest(tmp, docs), tmp / "tokens", cfg)
    return tmp, docs, cfg, manifest


def read_split(path) -> dict[str, list[int]]:
    table = pq.read_table(path)
    return dict(zip(table.column("id").to_pylist(), table.column("input_ids").to_pylist()))


def test_every_document_lands_in_exactly_one_split(tokenized):
    tmp, docs, cfg, manifest = tokenized
    train = read_split(manifest["splits"]["train"]["path"])
    val = read_split(manifest["splits"]["validation"]["path"])
    assert not set(train) & set(val)
    assert set(train) | set(val) == {d["id"] for d in docs}
    assert all(split_of(i, cfg.validation_fraction) == "validation" for i in val)
    assert all(split_of(i, cfg.validation_fraction) == "train" for i in train)


def test_manifest_counts_match_files(tokenized):
    tmp, docs, cfg, manifest = tokenized
    for split in ("train", "validation"):
        info = manifest["splits"][split]
        rows = read_split(info["path"])
        assert info["documents"] == len(rows)
        assert info["tokens"] == sum(len(t) for t in rows.values())
        assert info["sha256"] == sha256_file(info["path"])
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["validation"]["documents"] == len(docs)


def test_documents_end_in_eot_and_decode_to_their_text(tokenized):
    tmp, docs, cfg, manifest = tokenized
    eot = manifest["tokenizer"]["eot_id"]
    assert eot == 0
    tok = Tokenizer.from_file(manifest["tokenizer"]["path"])
    texts = {d["id"]: d["text"] for d in docs}
    for split in ("train", "validation"):
        for doc_id, tokens in read_split(manifest["splits"][split]["path"]).items():
            assert tokens[-1] == eot
            assert eot not in tokens[:-1]
            assert tok.decode(tokens[:-1]) == texts[doc_id]


def test_manifest_is_written_and_points_at_inputs(tokenized):
    tmp, docs, cfg, manifest = tokenized
    on_disk = read_manifest(tmp / "tokens" / "manifest.json", "tokenize")
    assert on_disk == json.loads(json.dumps(manifest))
    assert Path(manifest["data_manifest"]["path"]) == (tmp / "data" / "manifest.json").resolve()
    assert manifest["tokenizer"]["sha256"] == sha256_file(manifest["tokenizer"]["path"])
    assert manifest["tokenizer"]["vocab_size"] <= cfg.vocab_size
    assert manifest["config"]["validation_fraction"] == cfg.validation_fraction
    assert not list((tmp / "tokens").glob("*.tmp"))


def test_load_tokens_concatenates_documents_in_file_order(tokenized):
    tmp, docs, cfg, manifest = tokenized
    path = manifest["splits"]["train"]["path"]
    stream = load_tokens(path)
    expected = [t for tokens in pq.read_table(path).column("input_ids").to_pylist() for t in tokens]
    assert stream.dtype == np.int64
    assert stream.tolist() == expected
    assert len(stream) == manifest["splits"]["train"]["tokens"]


def test_load_tokens_across_row_groups(tmp_path):
    schema = pa.schema([("id", pa.string()), ("input_ids", pa.list_(pa.int32()))])
    path = tmp_path / "t.parquet"
    with pq.ParquetWriter(path, schema) as w:
        w.write_table(pa.table({"id": ["a"], "input_ids": [[1, 2, 0]]}, schema=schema))
        w.write_table(pa.table({"id": ["b", "c"], "input_ids": [[3, 0], [4, 5, 6, 0]]}, schema=schema))
    assert load_tokens(path).tolist() == [1, 2, 0, 3, 0, 4, 5, 6, 0]


def test_load_tokens_reads_shards_written_before_the_column_was_input_ids(tmp_path):
    path = tmp_path / "old.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "tokens": [[1, 0], [2, 3, 0]]}), path)
    assert load_tokens(path).tolist() == [1, 0, 2, 3, 0]


def test_empty_split_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="validation split is empty"):
        run_tokenize(
            fake_data_manifest(tmp_path, make_docs(10)),
            tmp_path / "tokens",
            TokenizerConfig(vocab_size=480, min_frequency=1, validation_fraction=0.0),
        )


def test_literal_eot_text_in_a_page_does_not_split_the_document(tmp_path):
    """Web pages can contain the literal string ``<|endoftext|>`` (e.g. pages about LLMs).

    It is page text, not a document boundary: the EOT id may only appear once, at the end of
    each document, and the document must decode back to its text.
    """
    docs = make_docs(30)
    docs[0]["text"] = "GPT-2 separates documents with <|endoftext|> in its training data."
    manifest = run_tokenize(
        fake_data_manifest(tmp_path, docs),
        tmp_path / "tokens",
        TokenizerConfig(vocab_size=480, min_frequency=2, validation_fraction=0.3),
    )
    tok = Tokenizer.from_file(manifest["tokenizer"]["path"])
    eot = manifest["tokenizer"]["eot_id"]
    rows = {**read_split(manifest["splits"]["train"]["path"]), **read_split(manifest["splits"]["validation"]["path"])}
    tokens = rows[docs[0]["id"]]
    assert tokens.count(eot) == 1 and tokens[-1] == eot
    assert tok.decode(tokens[:-1]) == docs[0]["text"]


def test_wrong_stage_manifest_is_rejected(tmp_path):
    path = write_manifest(tmp_path / "m.json", {"stage": "train", "outputs": {"kept": []}})
    with pytest.raises(ValueError, match="expected 'data'"):
        run_tokenize(path, tmp_path / "tokens", TokenizerConfig())


def test_every_saved_copy_encodes_spelled_specials_as_training_did(tmp_path):
    """``encode_special_tokens`` is not in ``tokenizer.json``: the stage's tokenizer, the model folder's copy and
    the Hugging Face export must still encode a page that spells special tokens as the token shards hold it."""
    from transformers import AutoTokenizer

    from tokenmill.training.hf import export
    from tokenmill.training.models.gpt import GPT, GPTConfig
    from tokenmill.training.weights import save_model_folder

    docs = make_docs(30)
    docs[0]["text"] = "Pages spell <|endoftext|>, [MASK] and <extra_id_0> as text."
    manifest = run_tokenize(
        fake_data_manifest(tmp_path, docs),
        tmp_path / "tokens",
        TokenizerConfig(vocab_size=480, min_frequency=2, validation_fraction=0.3),
    )
    rows = {**read_split(manifest["splits"]["train"]["path"]), **read_split(manifest["splits"]["validation"]["path"])}
    trained = rows[docs[0]["id"]][:-1]  # without the closing EOT
    assert not set(trained) & set(range(len(SPECIAL_TOKENS)))

    tok_path = manifest["tokenizer"]["path"]
    assert load_pretrained(tok_path).encode(docs[0]["text"]).ids == trained
    arch = GPTConfig(vocab_size=manifest["tokenizer"]["vocab_size"], block_size=8, n_layer=1, n_head=1, n_embd=8)
    model = GPT(arch).eval()
    folder = save_model_folder(tmp_path / "model", model.state_dict(), arch, tok_path)
    assert load_pretrained(folder).encode(docs[0]["text"]).ids == trained
    hf = AutoTokenizer.from_pretrained(export(model, tok_path, tmp_path / "hf"), local_files_only=True)
    assert hf(docs[0]["text"], add_special_tokens=False)["input_ids"] == trained
    # Tokenizer.from_file alone forgets the flag: the reason load_pretrained sets it
    assert Tokenizer.from_file(tok_path).encode(docs[0]["text"]).ids != trained


def test_a_moved_run_folder_still_tokenizes_and_loads(tmp_path):
    """A run folder copied elsewhere (the original gone): the tokenize stage reads the kept shards its data
    manifest names in the copy, and the token loader reads the shards the moved tokens manifest names."""
    import shutil

    run = tmp_path / "runs" / "demo"
    docs = make_docs(30)
    cfg = TokenizerConfig(vocab_size=480, min_frequency=2, validation_fraction=0.3)
    run_tokenize(fake_data_manifest(run, docs), run / "tokens", cfg)
    assert json.loads((run / "tokens" / "manifest.json").read_text())["splits"]["train"]["path"] == "./train.parquet"
    moved = tmp_path / "elsewhere" / "demo"
    shutil.copytree(run, moved)
    shutil.rmtree(run)

    tokens = read_manifest(moved / "tokens" / "manifest.json", "tokenize")
    assert tokens["data_manifest"]["path"] == str(moved / "data" / "manifest.json")
    assert tokens["tokenizer"]["path"] == str(moved / "tokens" / "tokenizer.json")
    train = load_tokens(tokens["splits"]["train"]["path"])
    assert len(train) == tokens["splits"]["train"]["tokens"]
    again = run_tokenize(tokens["data_manifest"]["path"], moved / "tokens-again", cfg)
    assert load_tokens(again["splits"]["train"]["path"]).tolist() == train.tolist()
