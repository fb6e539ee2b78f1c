"""tokenmill.training.hf.mlflow_model: every family's export saves as an MLflow model that loads back through
``mlflow.pyfunc`` (and ``mlflow.transformers`` where transformers has the pipeline) and predicts."""

from __future__ import annotations

import pytest
import torch
import yaml

from tokenmill.core.tokenizer import load_pretrained, special_ids, train_bpe
from tokenmill.training.families import spec_for
from tokenmill.training.hf import export
from tokenmill.training.hf.mlflow_model import DEFAULT_NEW_TOKENS, save_mlflow_model
from tokenmill.training.models.bert import BERT, BERTConfig
from tokenmill.training.models.gpt import GPT, GPTConfig
from tokenmill.training.models.t5 import T5, T5Config
from tokenmill.training.models.transformer import Transformer, TransformerConfig

TEXTS = [
    "The cat sat on the mat. The dog sat on the log.",
    "A quick brown fox jumps over the lazy dog, and then the fox runs away.",
    "Language models learn the statistics of text: which words follow which.",
]
CONTEXT = 16


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(iter(TEXTS * 4), vocab_size=420, min_frequency=2).save(str(path))
    return path


def tiny(family: str, tokenizer_path) -> torch.nn.Module:
    tok = load_pretrained(tokenizer_path)
    vocab, pad = tok.get_vocab_size(), special_ids(tok)["pad"]
    torch.manual_seed(0)
    small = dict(vocab_size=vocab, n_layer=1, n_head=2, n_embd=16, d_ff=32)
    if family == "gpt":
        return GPT(GPTConfig(block_size=CONTEXT, **small))
    if family == "bert":
        return BERT(BERTConfig(block_size=CONTEXT, norm="post", position="learned", nsp_pool="cls", **small))
    if family == "t5":
        return T5(T5Config(n_decoder_layer=1, d_head=8, num_buckets=8, max_distance=16, pad_id=pad, **small))
    return Transformer(TransformerConfig(block_size=CONTEXT, n_decoder_layer=1, pad_id=pad, **small))


@pytest.fixture(scope="module")
def saved(tokenizer_path, tmp_path_factory):
    """family → the saved MLflow model folder."""
    out = {}
    for family in ("gpt", "bert", "t5", "transformer"):
        base = tmp_path_factory.mktemp(family)
        folder = export(tiny(family, tokenizer_path).eval(), tokenizer_path, base / "hf")
        out[family] = save_mlflow_model(folder, spec_for(family), base / "mlflow")
    return out


def test_every_family_has_an_mlmodel_with_a_pyfunc_flavour_and_pinned_requirements(saved):
    for family, path in saved.items():
        mlmodel = yaml.safe_load((path / "MLmodel").read_text())
        assert "python_function" in mlmodel["flavors"], family
        assert ("transformers" in mlmodel["flavors"]) == (family in ("gpt", "bert")), family
        reqs = (path / "requirements.txt").read_text()
        assert "transformers==" in reqs and "torch==" in reqs, family
        licence = (path / "LICENSE.txt").read_text()  # the card's, not a pointer to the Hub
        assert "License: other" in licence and "tokenmill-sample-sources" in licence, family
        assert "huggingface.co" not in licence, family


def test_gpt_generates_through_pyfunc_and_transformers(saved):
    import mlflow.pyfunc
    import mlflow.transformers

    model = mlflow.pyfunc.load_model(str(saved["gpt"]))
    (text,) = model.predict(["The cat sat"], params={"max_new_tokens": 4})
    assert text.startswith("The cat sat") and len(text) > len("The cat sat")
    pipe = mlflow.transformers.load_model(str(saved["gpt"]))
    assert type(pipe).__name__ == "TextGenerationPipeline"
    assert pipe.tokenizer.model_max_length == CONTEXT


def test_gpt_pyfunc_past_the_context_truncates_or_refuses_never_an_index_error(saved):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(saved["gpt"]))
    long = " ".join(TEXTS * 4)  # far more than CONTEXT tokens
    (text,) = model.predict([long], params={"max_new_tokens": 4})  # the end of the prompt is kept
    assert len(text) > 0
    with pytest.raises(Exception, match="exceeds the models max length|desired tokens") as err:
        model.predict(["The cat"], params={"max_new_tokens": CONTEXT + 4})
    assert not isinstance(err.value, IndexError)


def test_gpt_default_new_tokens_come_from_the_model_config(saved):
    mlmodel = yaml.safe_load((saved["gpt"] / "MLmodel").read_text())
    config = mlmodel["flavors"]["python_function"]["config"]
    assert config == {"handle_long_generation": "hole", "truncation": True, "max_new_tokens": DEFAULT_NEW_TOKENS}


def test_bert_fills_a_spelled_mask_through_pyfunc(saved):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(saved["bert"]))
    (word,) = model.predict(["The cat [MASK] on the mat."])  # the top token, as text
    assert isinstance(word, str) and word
    with pytest.raises(Exception, match="No mask_token"):
        model.predict(["The cat sat on the mat."])


@pytest.mark.parametrize("family", ["t5", "transformer"])
def test_encoder_decoders_generate_through_pyfunc(saved, family):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(str(saved[family]))
    out = model.predict(["The cat sat on the mat."], params={"max_new_tokens": 3})
    assert len(out) == 1 and isinstance(out[0], str)
