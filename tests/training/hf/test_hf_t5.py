"""tokenmill.training.hf.t5: our T5 ↔ transformers' T5ForConditionalGeneration, exact both ways."""

from __future__ import annotations

import pytest
import torch
import transformers
from seq2seq_parity import (
    SPECIALS,
    TOL,
    check_greedy_generation_matches_hf,
    check_round_trip_is_exact,
    check_save_pretrained_loads_without_custom_code,
    export,
    exported_state,
    jitter,
    max_diff,
)

from tokenmill.training.hf import t5 as hf_t5
from tokenmill.training.models.t5 import T5, T5Config

V = 64


def tiny(activation: str = "relu", seed: int = 0, **kw) -> T5:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=V,
        n_layer=2,
        n_decoder_layer=3,
        n_head=4,
        d_head=8,
        n_embd=32,
        d_ff=48,
        num_buckets=8,
        max_distance=16,
        activation=activation,
        pad_id=SPECIALS["pad"],
    )
    return T5(T5Config(**{**cfg, **kw})).eval()


def to_hf(model: T5) -> transformers.T5ForConditionalGeneration:
    return export(hf_t5, transformers.T5ForConditionalGeneration, model)


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])
def test_ours_to_hf_logits_match(activation):
    model = tiny(activation)
    assert max_diff(model, to_hf(model)) <= TOL


def test_hf_state_has_exactly_hf_keys_and_tied_names():
    state, _ = exported_state(hf_t5, transformers.T5ForConditionalGeneration, tiny())
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        assert state[key] is state["shared.weight"]


@pytest.mark.parametrize("proj", ["relu", "gated-gelu"])
def test_random_hf_to_ours_logits_match(proj):
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=V,
        d_model=32,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=3,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj=proj,
        pad_token_id=1,
        decoder_start_token_id=1,
        eos_token_id=0,
    )
    hf = transformers.T5ForConditionalGeneration(config).eval()
    jitter(hf, norm="layer_norm")  # T5 has no biases: only its norms move
    cfg, state = hf_t5.from_hf(hf.config, hf.state_dict())
    assert cfg.activation == proj and cfg.n_decoder_layer == 3 and cfg.d_head == 8
    model = T5(cfg).eval()
    model.load_state_dict(state, strict=True)
    assert max_diff(model, hf) <= TOL


def test_round_trip_is_exact():
    check_round_trip_is_exact(hf_t5, tiny("gated-gelu"))


def test_save_pretrained_loads_without_custom_code(tmp_path):
    model = tiny()
    check_save_pretrained_loads_without_custom_code(hf_t5, to_hf(model), model, tmp_path)


def test_greedy_generation_matches_hf():
    # As many decoder as encoder layers: transformers 5.24's cached T5 generate sizes its cache by
    # num_layers and fails when num_decoder_layers is larger (the logits themselves match, see above).
    model = tiny(seed=3, n_decoder_layer=2)
    with torch.no_grad():  # a random T5 mostly repeats its last token; these make its greedy output vary
        model.wte.weight.mul_(0.1)
        for stack in (model.encoder, model.decoder):
            stack.rel_bias.embedding.weight.normal_(0.0, 4.0)
    check_greedy_generation_matches_hf(
        model, to_hf(model), pad_token_id=SPECIALS["pad"], decoder_start_token_id=SPECIALS["pad"]
    )


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
    base = dict(
        vocab_size=V, d_model=32, d_kv=8, d_ff=48, num_layers=1, num_heads=4, pad_token_id=1, decoder_start_token_id=1
    )
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
