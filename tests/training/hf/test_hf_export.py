"""tokenmill.training.hf.export: the folder's tokenizer knows the model's context, encodes like training, and the
folder carries a model card that Hugging Face can read."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tokenmill.core.tokenizer import SPECIAL_TOKENS, load_pretrained, train_bpe
from tokenmill.training.hf import export, model_card
from tokenmill.training.models.bert import BERT, BERTConfig
from tokenmill.training.models.gpt import GPT, GPTConfig

TEXTS = [
    "The cat sat on the mat. The dog sat on the log.",
    "A quick brown fox jumps over the lazy dog, and then the fox runs away.",
    "Language models learn the statistics of text: which words follow which.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
]
CONTEXT = 16
# a one-layer original BERT (post-LN, learned positions, NSP on [CLS]): the BERT that has a Hugging Face equivalent
ORIGINAL_BERT = dict(n_layer=1, n_head=2, n_embd=16, d_ff=32, norm="post", position="learned", nsp_pool="cls")
SPELLED = "a <|endoftext|> b [MASK] c <extra_id_0> d"


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    tok = train_bpe(iter(TEXTS * 4), vocab_size=480, min_frequency=2)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def tiny_gpt(vocab: int) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, block_size=CONTEXT, n_layer=1, n_head=2, n_embd=16, d_ff=32)).eval()


@pytest.fixture(scope="module")
def gpt_folder(tokenizer_path, tmp_path_factory):
    model = tiny_gpt(load_pretrained(tokenizer_path).get_vocab_size())
    facts = {
        "tokens_seen": 123_456,
        "steps": 200,
        "metrics": {"val/token_loss": 3.25, "val/unigram_baseline_loss": 5.5},
        "config": {"train.lr": 0.0006, "train.batch_size": 8},
    }
    return export(model, tokenizer_path, tmp_path_factory.mktemp("hf") / "hf", facts)


def front_matter(folder) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    assert body.strip()
    return yaml.safe_load(head)


def test_every_file_has_the_mode_open_gives(gpt_folder):
    """``save_pretrained`` writes ``model.safetensors`` 0600 (through a temp file); the export gives every file the
    mode a plain ``open()`` gives under the umask, so a group can read a shared model folder."""
    import os
    import stat

    from tokenmill.core.files import current_umask

    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in gpt_folder.iterdir()}
    assert "model.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~current_umask()}, modes


def test_tokenizer_config_holds_the_context(gpt_folder):
    config = json.loads((gpt_folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == CONTEXT
    assert config["truncation_side"] == "left"  # a decoder keeps the end of its prompt
    assert config["split_special_tokens"] is True


def test_long_prompt_is_cut_to_fit_and_generates(gpt_folder):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(gpt_folder), device="cpu")
    prompt = " ".join(TEXTS)  # far more than CONTEXT tokens
    assert len(pipe.tokenizer(prompt)["input_ids"]) > CONTEXT
    out = pipe(prompt, max_new_tokens=4, do_sample=False, handle_long_generation="hole", return_tensors=True)
    ids = out[0]["generated_token_ids"]
    assert len(ids) == CONTEXT  # the prompt's last CONTEXT - 4 tokens and 4 new ones
    assert ids[: CONTEXT - 4] == pipe.tokenizer(prompt)["input_ids"][-(CONTEXT - 4) :]


def test_more_new_tokens_than_the_context_is_a_clear_error(gpt_folder):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(gpt_folder), device="cpu")
    with pytest.raises(ValueError, match="max length"):
        pipe("The cat", max_new_tokens=CONTEXT + 4, do_sample=False, handle_long_generation="hole")


def test_truncation_keeps_the_end_of_the_prompt(gpt_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt_folder, local_files_only=True)
    prompt = " ".join(TEXTS)
    ids = tok(prompt, truncation=True)["input_ids"]
    assert ids == tok(prompt)["input_ids"][-CONTEXT:]


def test_model_card_front_matter(gpt_folder):
    meta = front_matter(gpt_folder)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert "tokenmill" in meta["tags"] and "gpt" in meta["tags"]
    assert meta["license"] == "other" and meta["license_name"] and meta["license_link"]
    body = (gpt_folder / "README.md").read_text()
    assert "123,456" in body and "3.2500" in body and "5.5000" in body and "train.lr" in body
    assert 'handle_long_generation="hole"' in body


def test_model_card_defaults_and_other_families():
    card = model_card(tiny_gpt(400))
    assert "tokens seen: not recorded" in card and "Validation losses: not recorded" in card
    bert = BERT(BERTConfig(vocab_size=400, block_size=CONTEXT, **ORIGINAL_BERT))
    meta = yaml.safe_load(model_card(bert, {"license": "mit"}).split("---\n")[1])
    assert meta["pipeline_tag"] == "fill-mask" and meta["license"] == "mit" and "license_name" not in meta
    other = model_card(bert, {"data_input": "/crawl/*.warc.gz"})
    assert yaml.safe_load(other.split("---\n")[1])["license"] == "unknown" and "/crawl/*.warc.gz" in other
    sample = model_card(bert, {"data_input": "data/sample/*.warc.gz"})
    assert yaml.safe_load(sample.split("---\n")[1])["license"] == "other" and "sample crawl" in sample


def test_exported_tokenizer_encodes_spelled_specials_as_training_did(gpt_folder, tokenizer_path):
    from transformers import AutoTokenizer

    training = load_pretrained(tokenizer_path).encode(SPELLED).ids
    assert not set(training) & set(range(len(SPECIAL_TOKENS)))  # plain text, no special id
    hf = AutoTokenizer.from_pretrained(gpt_folder, local_files_only=True)
    assert hf(SPELLED, add_special_tokens=False)["input_ids"] == training
    # a prompt may still name a special token on purpose
    eot = hf.convert_tokens_to_ids("<|endoftext|>")
    assert eot in hf("a <|endoftext|> b", split_special_tokens=False)["input_ids"]
    # the reloaded folder exports the same again: the flag survives a second save
    assert load_pretrained(gpt_folder).encode(SPELLED).ids == training


def test_bert_export_fill_mask_with_a_spelled_mask(tokenizer_path, tmp_path):
    from transformers import pipeline

    vocab = load_pretrained(tokenizer_path).get_vocab_size()
    torch.manual_seed(0)
    bert = BERT(BERTConfig(vocab_size=vocab, block_size=CONTEXT, **ORIGINAL_BERT)).eval()
    folder = export(bert, tokenizer_path, tmp_path / "hf")
    assert json.loads((folder / "tokenizer_config.json").read_text())["truncation_side"] == "right"
    assert front_matter(folder)["pipeline_tag"] == "fill-mask"
    pipe = pipeline("fill-mask", model=str(folder), device="cpu")
    out = pipe("The cat [MASK] on the mat.", tokenizer_kwargs={"split_special_tokens": False}, top_k=2)
    assert len(out) == 2
