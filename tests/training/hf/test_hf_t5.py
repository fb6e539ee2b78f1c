"""tokenmill.training.hf.t5: our T5 ↔ transformers' T5ForConditionalGeneration, exact both ways."""

from __future__ import annotations

import pytest
import torch
import transformers

from tokenmill.training.hf import t5 as hf_t5
from tokenmill.training.models.t5 import T5, T5Config

V = 64
SPECIALS = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4}
TOL = 1e-4


def tiny(activation: str = "relu", seed: int = 0, **kw) -> T5:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, n_layer=2, n_decoder_layer=3, n_head=4, d_head=8, n_embd=32, d_ff=48, num_buckets=8,
               max_distance=16, activation=activation, pad_id=SPECIALS["pad"])
    return T5(T5Config(**{**cfg, **kw})).eval()


def to_hf(model: T5) -> transformers.T5ForConditionalGeneration:
    hf = transformers.T5ForConditionalGeneration(hf_t5.hf_config(model.cfg, SPECIALS)).eval()
    hf.load_state_dict(hf_t5.to_hf_state(model.state_dict(), model.cfg), strict=True)
    return hf


def padded_batch():
    """Source and target batches with right padding in both, and their masks."""
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(2, V, (3, 20), generator=g), torch.randint(2, V, (3, 18), generator=g)
    tgt[:, 0] = SPECIALS["pad"]  # the decoder start id
    src_mask, tgt_mask = torch.ones_like(src), torch.ones_like(tgt)
    src_mask[1, 13:] = src_mask[2, 4:] = 0
    tgt_mask[0, 11:] = tgt_mask[2, 3:] = 0
    src[src_mask == 0] = SPECIALS["pad"]
    tgt[tgt_mask == 0] = SPECIALS["pad"]
    return src, src_mask, tgt, tgt_mask


def max_diff(ours: T5, hf) -> float:
    src, src_mask, tgt, tgt_mask = padded_batch()
    with torch.no_grad():
        a = ours(src, src_mask, tgt, tgt_mask)
        b = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt, decoder_attention_mask=tgt_mask).logits
    keep = tgt_mask.bool()  # logits at padded target positions are never used
    return (a - b)[keep].abs().max().item()


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])
def test_ours_to_hf_logits_match(activation):
    model = tiny(activation)
    assert max_diff(model, to_hf(model)) <= TOL


def test_hf_state_has_exactly_hf_keys_and_tied_names():
    model = tiny()
    hf = transformers.T5ForConditionalGeneration(hf_t5.hf_config(model.cfg, SPECIALS))
    state = hf_t5.to_hf_state(model.state_dict(), model.cfg)
    assert set(state) == set(hf.state_dict())
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        assert state[key] is state["shared.weight"]


@pytest.mark.parametrize("proj", ["relu", "gated-gelu"])
def test_random_hf_to_ours_logits_match(proj):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3,
                                   num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                                   feed_forward_proj=proj, pad_token_id=1, decoder_start_token_id=1, eos_token_id=0)
    hf = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "layer_norm" in name:  # away from their initial ones, so a misplaced norm would show
                p.uniform_(0.5, 1.5)
    cfg, state = hf_t5.from_hf(hf.config, hf.state_dict())
    assert cfg.activation == proj and cfg.n_decoder_layer == 3 and cfg.d_head == 8
    model = T5(cfg).eval()
    model.load_state_dict(state, strict=True)
    assert max_diff(model, hf) <= TOL


def test_round_trip_is_exact():
    model = tiny("gated-gelu")
    original = model.state_dict()
    cfg, state = hf_t5.from_hf(hf_t5.hf_config(model.cfg, SPECIALS), hf_t5.to_hf_state(original, model.cfg))
    assert cfg == model.cfg
    assert set(state) == set(original)
    assert all(torch.equal(state[k], original[k]) for k in original)


def test_save_pretrained_loads_without_custom_code(tmp_path):
    model = tiny()
    to_hf(model).save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == hf_t5.HF_ARCHITECTURE
    assert max_diff(model, loaded) <= TOL


def test_greedy_generation_matches_hf():
    # As many decoder as encoder layers: transformers 5.24's cached T5 generate sizes its cache by
    # num_layers and fails when num_decoder_layers is larger (the logits themselves match, see above).
    model = tiny(seed=3, n_decoder_layer=2)
    with torch.no_grad():  # a random T5 mostly repeats its last token; these make its greedy output vary
        model.wte.weight.mul_(0.1)
        for stack in (model.encoder, model.decoder):
            stack.rel_bias.embedding.weight.normal_(0.0, 4.0)
    hf = to_hf(model)
    src, src_mask, _, _ = padded_batch()
    n = 12
    free = model.generate(src, n, src_mask, temperature=0)
    eos = int(free[0, 2])  # a token the model does produce, so eos handling is exercised
    assert eos != SPECIALS["pad"] and len(set(free[0].tolist())) > 2
    for eos_id in (SPECIALS["eot"], eos):
        ours = model.generate(src, n, src_mask, temperature=0, eos_id=eos_id)
        theirs = hf.generate(input_ids=src, attention_mask=src_mask, do_sample=False, num_beams=1, max_new_tokens=n,
                             eos_token_id=eos_id, pad_token_id=SPECIALS["pad"],
                             decoder_start_token_id=SPECIALS["pad"])
        assert torch.equal(ours, theirs), (eos_id, ours, theirs)
    assert torch.all(ours[0, 3:] == SPECIALS["pad"])  # the row that produced eos is padded after it


def test_hf_config_fields():
    c = hf_t5.hf_config(tiny("gated-gelu").cfg, SPECIALS)
    assert (c.d_model, c.d_kv, c.d_ff, c.num_layers, c.num_decoder_layers, c.num_heads) == (32, 8, 48, 2, 3, 4)
    assert c.feed_forward_proj == "gated-gelu" and c.is_gated_act
    assert c.pad_token_id == c.decoder_start_token_id == 1 and c.eos_token_id == 0
    assert c.tie_word_embeddings and c.scale_decoder_outputs
    assert c.relative_attention_num_buckets == 8 and c.relative_attention_max_distance == 16


def test_unsupported_settings_raise():
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        hf_t5.hf_config(tiny(tie_embeddings=False).cfg, SPECIALS)
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        untied = tiny(tie_embeddings=False)
        hf_t5.to_hf_state(untied.state_dict(), untied.cfg)
    with pytest.raises(ValueError, match="pad"):
        hf_t5.hf_config(tiny().cfg, {**SPECIALS, "pad": 7})
    base = dict(vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, pad_token_id=1,
                decoder_start_token_id=1)
    unscaled = transformers.T5Config(**base, tie_word_embeddings=False)
    with pytest.raises(ValueError, match="scale_decoder_outputs"):
        hf_t5.from_hf(unscaled, transformers.T5ForConditionalGeneration(unscaled).state_dict())
    gated_relu = transformers.T5Config(**base, feed_forward_proj="gated-relu")
    with pytest.raises(ValueError, match="feed_forward_proj"):
        hf_t5.from_hf(gated_relu, transformers.T5ForConditionalGeneration(gated_relu).state_dict())
    other_start = transformers.T5Config(**{**base, "decoder_start_token_id": 0})
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        hf_t5.from_hf(other_start, transformers.T5ForConditionalGeneration(other_start).state_dict())
    with pytest.raises(ValueError, match="model_type"):
        hf_t5.from_hf(transformers.MarianConfig(), {})
