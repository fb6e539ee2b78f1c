"""The tokenizer conventions (tokenmill.core.tokenizer: split by id, byte-level BPE, specials, load_pretrained),
the saved copies of the tokenize job's tokenizer encoding alike, and ``DocumentEncoder``: tiktoken's BPE gives
the ids ``tokenizers`` gives, on every code point and on hostile text; tokenizers it cannot mirror, and documents
its regex cannot take, go to ``tokenizers``."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

import tokenmill.core.tokenizer as tokenizer_module
from tokenmill.core.config import Config, TokenizerConfig
from tokenmill.core.indexed import IndexedShard
from tokenmill.core.manifest import write_manifest
from tokenmill.core.tokenizer import (
    EOT,
    SPECIAL_TOKENS,
    DocumentEncoder,
    load_pretrained,
    special_ids,
    split_of,
    tiktoken_ranks,
    train_bpe,
)
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


WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or which have not had but "
    "tokenizer language model data pipeline crawl page text corpus learn merge byte token shard spark "
    "Straße naïve café 東京 北京 данные язык μοντέλο لغة ভাষা 言語 😀 🚀 don't we'll it's I'm they've she'd"
).split()


def page(rng: random.Random) -> str:
    """A page of random words, numbers, punctuation and whitespace of every width."""
    parts = []
    for _ in range(rng.randint(20, 120)):
        r = rng.random()
        if r < 0.7:
            parts.append(rng.choice(WORDS))
        elif r < 0.8:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        else:
            parts.append(rng.choice([",", ".", "!?", "...", "--", "(x)", "'s", "'S", "$5", "#1", "\u00a0", "\u3000"]))
        parts.append(rng.choice([" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n ", ""]))
    return "".join(parts)


@pytest.fixture(scope="module")
def tok():
    rng = random.Random(0)
    trained = train_bpe(iter([page(rng) for _ in range(600)]), vocab_size=1500, min_frequency=2)
    trained.encode_special_tokens = True  # as the tokenize stage prepares it
    trained.post_processor = None
    return trained


def hf_ids(tok, texts):
    return [e.ids for e in tok.encode_batch(texts)]


def test_a_trained_bpe_is_encoded_by_tiktoken_with_the_same_ids(tok):
    encoder = DocumentEncoder(tok)
    assert encoder.kind == "tiktoken"
    rng = random.Random(1)
    texts = [page(rng) for _ in range(400)]
    assert encoder.encode(texts) == hf_ids(tok, texts)
    assert sum(map(len, encoder.encode(texts))) > 20_000  # merges were applied, not just bytes


def test_every_code_point_in_every_context_gets_the_same_ids(tok):
    encoder = DocumentEncoder(tok)
    contexts = ["a{}b", " {} ", "{}{}", "x {}\n", "1{}2", "'{}s", " {}{} the", "{}  \t", "é{}", "{} 's"]
    pieces = [
        random.Random(c).choice(contexts).format(chr(c), chr(c)) for c in range(0x110000) if not 0xD800 <= c < 0xE000
    ]
    texts = ["".join(pieces[i : i + 300]) for i in range(0, len(pieces), 300)]
    assert encoder.encode(texts) == hf_ids(tok, texts)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\n\n",
        "<|endoftext|> a spelled special is text [MASK] <extra_id_0>",
        "'S 'LL 'll'd's",
        "\x00\x01\x7f\u200b\u200d\ufeff",
        "e\u0301\u0301\u0301 combining marks",
        "שלום עולם مرحبا",
        "x\u0085y\u2028z\u2029",
        "a" * 300_000,
        "0123456789" * 30_000,
    ],
)
def test_hostile_text_gets_the_same_ids(tok, text):
    assert DocumentEncoder(tok).encode([text]) == hf_ids(tok, [text])


def test_a_document_longer_than_tiktoken_takes_goes_to_tokenizers(tok, monkeypatch):
    spaces = " " * 1_200_000 + "end"  # tiktoken's regex gives up (a Rust panic) on a run this long
    encoder = DocumentEncoder(tok)
    expected = hf_ids(tok, ["short one", spaces, "another"])
    assert encoder.encode(["short one", spaces, "another"]) == expected
    # past the length guard, the panic itself is caught and the document re-encoded
    monkeypatch.setattr(tokenizer_module, "_TIKTOKEN_MAX_CHARS", 10**9)
    assert encoder.encode(["short one", spaces, "another"]) == expected


def structure(tok) -> dict:
    return json.loads(tok.to_str())


def rebuilt(spec: dict):
    out = Tokenizer.from_str(json.dumps(spec))
    out.encode_special_tokens = True
    out.post_processor = None
    return out


def test_tokenizers_tiktoken_cannot_mirror_are_left_to_tokenizers(tok):
    spec = structure(tok)
    assert tiktoken_ranks(json.dumps(spec)) is not None
    merges = spec["model"]["merges"]

    def variant(edit) -> dict:
        other = json.loads(json.dumps(spec))
        edit(other)
        return other

    broken = {
        "merges out of id order": variant(
            lambda s: s["model"].__setitem__("merges", [merges[1], merges[0], *merges[2:]])
        ),
        "a normalizer": variant(lambda s: s.__setitem__("normalizer", {"type": "NFC"})),
        "a prefix space": variant(lambda s: s["pre_tokenizer"].__setitem__("add_prefix_space", True)),
        "BPE dropout": variant(lambda s: s["model"].__setitem__("dropout", 0.1)),
        "a non-special added token": variant(lambda s: s["added_tokens"][0].__setitem__("special", False)),
    }
    texts = ["the data pipeline learns", "Straße 東京 don't"]
    for why, other in broken.items():
        assert tiktoken_ranks(json.dumps(other)) is None, why
        slow = rebuilt(other)
        encoder = DocumentEncoder(slow)
        assert encoder.kind == "tokenizers", why
        if why != "BPE dropout":  # dropout draws: two encodings differ by design
            assert encoder.encode(texts) == hf_ids(slow, texts), why


def test_two_merges_making_one_token_are_left_to_tokenizers():
    # "abc" from ab+c and from a+bc: tiktoken would merge either pair at one rank, tokenizers only the listed pair
    chars = tokenizer_module._byte_level_chars()
    vocab = {c: i for i, c in enumerate(sorted(chars, key=chars.get))}
    for token in ["ab", "bc", "abc"]:
        vocab[token] = len(vocab)
    merges = [["a", "b"], ["b", "c"], ["ab", "c"], ["a", "bc"]]
    slow = Tokenizer(models.BPE(vocab, [tuple(m) for m in merges]))
    slow.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    slow.encode_special_tokens = True
    assert tiktoken_ranks(slow.to_str()) is None
    assert DocumentEncoder(slow).kind == "tokenizers"


def test_the_tokenizers_setting_and_a_post_processor_turn_tiktoken_off(tok):
    assert DocumentEncoder(tok, "tokenizers").kind == "tokenizers"
    with_specials_spelled = Tokenizer.from_str(tok.to_str())
    with_specials_spelled.encode_special_tokens = False  # a spelled special would be one id: not tiktoken's split
    assert DocumentEncoder(with_specials_spelled).kind == "tokenizers"
    normalized = Tokenizer.from_str(tok.to_str())
    normalized.encode_special_tokens = True
    normalized.normalizer = normalizers.Lowercase()
    assert DocumentEncoder(normalized).kind == "tokenizers"
    with pytest.raises(ValueError, match="tokenizer.encoder must be one of auto, tokenizers"):
        DocumentEncoder(tok, "fast")


def test_verify_names_the_document_whose_ids_differ(tok, monkeypatch):
    encoder = DocumentEncoder(tok)
    encoder.verify(["the data", "a pipeline"], ["doc-a", "doc-b"])  # agreeing: no error

    class Off:  # a stand-in for a tiktoken that splits one document differently
        def encode_ordinary(self, text):
            ids = list(tok.encode(text).ids)
            return ids[:-1] if text == "a pipeline" else ids

    monkeypatch.setattr(encoder, "_fast", Off())
    with pytest.raises(ValueError, match="document doc-b differs .*tokenizer.encoder=tokenizers"):
        encoder.verify(["the data", "a pipeline"], ["doc-a", "doc-b"])


def test_the_reserved_tokens_are_not_ranks(tok):
    ranks = tiktoken_ranks(tok.to_str())
    ids = set(ranks.values())
    assert not ids & {tok.token_to_id(t) for t in SPECIAL_TOKENS}
    assert len(ranks) == tok.get_vocab_size() - len(SPECIAL_TOKENS)  # 256 bytes + one token per merge
