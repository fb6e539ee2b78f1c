"""tokenmill.training.hf.bert: our BERT ↔ transformers' BertForPreTraining give the same logits, both ways."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForPreTraining

from tokenmill.training.hf import bert as hf_bert
from tokenmill.training.models.bert import BERT, BERTConfig

V, T, PAD = 96, 16, 1
SPECIALS = {"eot": 0, "pad": PAD, "cls": 2, "sep": 3, "mask": 4}
TOL = 1e-4


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at random (biases and LayerNorms too, so a mis-mapped one shows up)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith("bias") else 0.2
            base = 1.0 if ("ln" in name or "LayerNorm" in name) and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model.eval()


def ours(seed: int = 0, **kw) -> BERT:
    # post-LN, learned positions, NSP on [CLS]: the original BERT, the one with a BertForPreTraining equivalent
    cfg = dict(vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=32, d_ff=48, pad_id=PAD)
    cfg.update(norm="post", position="learned", nsp_pool="cls")
    return randomised(BERT(BERTConfig(**{**cfg, **kw})), seed)


def batch():
    """Two rows, the second padded after 10 tokens; segment B starts at 6 (5 on the padded row)."""
    idx = torch.randint(5, V, (2, T), generator=torch.Generator().manual_seed(1))
    idx[:, 0] = SPECIALS["cls"]
    mask = torch.ones(2, T, dtype=torch.long)
    mask[1, 10:] = 0
    idx[1, 10:] = PAD
    segments = torch.zeros(2, T, dtype=torch.long)
    segments[0, 6:] = 1
    segments[1, 5:10] = 1
    return idx, segments, mask


def export(model: BERT) -> BertForPreTraining:
    hf = BertForPreTraining(hf_bert.hf_config(model.cfg, SPECIALS))
    hf.load_state_dict(hf_bert.to_hf_state(model.state_dict(), model.cfg), strict=True)
    return hf.eval()


def max_diff(model: BERT, hf: BertForPreTraining) -> float:
    """The largest difference between the two models' MLM logits (at real tokens) and NSP logits on ``batch``."""
    idx, segments, mask = batch()
    with torch.no_grad():
        ours_out = model(idx, segments, mask)
        hf_out = hf(input_ids=idx, token_type_ids=segments, attention_mask=mask)
    real = mask.bool()
    mlm = (ours_out[0][real] - hf_out.prediction_logits[real]).abs().max()
    nsp = (ours_out[1] - hf_out.seq_relationship_logits).abs().max()
    return max(mlm.item(), nsp.item())


@pytest.mark.parametrize(
    "kw", [{}, {"activation": "gelu_tanh"}, {"activation": "relu"}, {"position": "sinusoidal"}, {"bias": False}]
)
def test_export_gives_the_same_logits(kw):
    model = ours(**kw)
    hf = export(model)
    d = max_diff(model, hf)
    assert d <= TOL, d


def test_exported_config_and_keys():
    model = ours()
    c = hf_bert.hf_config(model.cfg, SPECIALS)
    assert hf_bert.HF_ARCHITECTURE == "BertForPreTraining"
    assert (c.hidden_act, c.layer_norm_eps, c.max_position_embeddings, c.pad_token_id) == ("gelu", 1e-12, T, PAD)
    assert (c.intermediate_size, c.type_vocab_size, c.tie_word_embeddings) == (48, 2, True)
    assert set(hf_bert.to_hf_state(model.state_dict(), model.cfg)) == set(BertForPreTraining(c).state_dict())


def test_exported_attentions_match():
    model = ours()
    hf = export(model)
    hf.set_attn_implementation("eager")  # SDPA does not return probabilities
    idx, segments, mask = batch()
    with torch.no_grad():
        *_, attentions = model(idx, segments, mask, need_weights=True)
        theirs = hf(input_ids=idx, token_type_ids=segments, attention_mask=mask, output_attentions=True).attentions
    for a, b in zip(attentions, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


def test_import_gives_the_same_logits():
    torch.manual_seed(0)
    c = BertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=T,
        pad_token_id=PAD,
        hidden_act="gelu_new",
    )
    hf = randomised(BertForPreTraining(c), seed=3)
    cfg, state = hf_bert.from_hf(c, hf.state_dict())
    assert (cfg.n_embd, cfg.n_head, cfg.d_ff, cfg.activation, cfg.position) == (32, 4, 48, "gelu_tanh", "learned")
    model = BERT(cfg).eval()
    model.load_state_dict(state, strict=True)
    assert model.lm_head.weight is model.wte.weight
    d = max_diff(model, hf)
    assert d <= TOL, d


def test_round_trip_reproduces_config_and_state():
    model = ours()
    state = model.state_dict()
    cfg, back = hf_bert.from_hf(hf_bert.hf_config(model.cfg, SPECIALS), hf_bert.to_hf_state(state, model.cfg))
    assert cfg == model.cfg
    assert set(back) == set(state)
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_save_pretrained_loads_with_plain_transformers(tmp_path):
    model = ours()
    export(model).save_pretrained(tmp_path)
    hf = BertForPreTraining.from_pretrained(tmp_path).eval()
    assert hf.config.architectures == ["BertForPreTraining"]
    d = max_diff(model, hf)
    assert d <= TOL, d


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_export_refuses_relative_positions(position):
    model = ours(position=position)
    with pytest.raises(ValueError, match="position"):
        hf_bert.hf_config(model.cfg, SPECIALS)
    with pytest.raises(ValueError, match="position"):
        hf_bert.to_hf_state(model.state_dict(), model.cfg)


def test_the_default_bert_is_refused_with_the_keys_of_the_original():
    model = BERT(BERTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16, pad_id=PAD))
    assert (model.cfg.norm, model.cfg.position, model.cfg.nsp_pool) == ("pre", "rope", "segments")
    with pytest.raises(ValueError, match="model.position=learned model.norm=post model.nsp_pool=cls"):
        hf_bert.hf_config(model.cfg, SPECIALS)


def test_export_refuses_nsp_on_the_segments():
    model = ours(nsp_pool="segments")
    with pytest.raises(ValueError, match=r"nsp_pool='segments' has no equivalent \(train with model.nsp_pool=cls"):
        hf_bert.to_hf_state(model.state_dict(), model.cfg)


def test_export_refuses_pre_ln():
    model = ours(norm="pre")
    with pytest.raises(ValueError, match="post-LN"):
        hf_bert.hf_config(model.cfg, SPECIALS)
    with pytest.raises(ValueError, match="model.norm=post"):
        hf_bert.to_hf_state(model.state_dict(), model.cfg)


def small_hf_config(**kw) -> BertConfig:
    return BertConfig(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=T,
        **kw,
    )


@pytest.mark.parametrize(
    "kw, setting",
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"hidden_act": "silu"}, "hidden_act"),
        ({"is_decoder": True}, "is_decoder"),
    ],
)
def test_import_refuses_what_our_bert_cannot_compute(kw, setting):
    c = small_hf_config(**kw)
    state = BertForPreTraining(small_hf_config()).state_dict()
    with pytest.raises(ValueError, match=setting):
        hf_bert.from_hf(c, state)


def test_import_refuses_untied_decoder():
    c = small_hf_config()
    state = dict(BertForPreTraining(c).state_dict())
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ValueError, match="decoder"):
        hf_bert.from_hf(c, state)
