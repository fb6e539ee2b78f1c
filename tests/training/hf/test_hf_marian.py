"""tokenmill.training.hf.marian: our Transformer ↔ transformers' MarianMTModel, exact both ways."""

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

from tokenmill.training.hf import marian as hf_marian
from tokenmill.training.models.layers import sinusoidal_positions
from tokenmill.training.models.transformer import Transformer, TransformerConfig

V, T = 64, 32


def tiny(seed: int = 0, **kw) -> Transformer:
    """A random Transformer whose biases and LayerNorms are random too, so a misplaced one would show."""
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=V, block_size=T, n_layer=2, n_decoder_layer=3, n_head=4, n_embd=32, d_ff=48, pad_id=SPECIALS["pad"]
    )
    model = Transformer(TransformerConfig(**{**cfg, **kw})).eval()
    jitter(model, norm=".ln_")
    return model


def to_hf(model: Transformer) -> transformers.MarianMTModel:
    return export(hf_marian, transformers.MarianMTModel, model)


VARIANTS = [dict(), dict(tie_embeddings=False), dict(bias=False), dict(scale_embedding=False, activation="gelu")]


@pytest.mark.parametrize("kw", VARIANTS, ids=["default", "untied", "no-bias", "unscaled-gelu"])
def test_ours_to_hf_logits_match(kw):
    model = tiny(**kw)
    assert max_diff(model, to_hf(model)) <= TOL


def test_hf_state_has_exactly_hf_keys():
    model = tiny()
    state, hf_state = exported_state(hf_marian, transformers.MarianMTModel, model)
    for stack in ("encoder", "decoder"):  # Marian's own table is layers.sinusoidal_positions
        key = f"model.{stack}.embed_positions.weight"
        torch.testing.assert_close(state[key], hf_state[key], rtol=0, atol=0)
    torch.testing.assert_close(state["final_logits_bias"][0], model.lm_head.bias.detach())


@pytest.mark.parametrize("tie", [True, False])
def test_random_hf_to_ours_logits_match(tie):
    torch.manual_seed(0)
    config = transformers.MarianConfig(
        vocab_size=V,
        d_model=32,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=T,
        activation_function="relu",
        scale_embedding=True,
        tie_word_embeddings=tie,
        pad_token_id=1,
        decoder_start_token_id=1,
        eos_token_id=0,
    )
    hf = transformers.MarianMTModel(config).eval()
    jitter(hf, norm="layer_norm")
    with torch.no_grad():
        hf.final_logits_bias.normal_()
        if not tie:  # transformers 5.x unties both embed_tokens from shared too; ours has one source/target embedding
            hf.model.encoder.embed_tokens.weight.copy_(hf.model.shared.weight)
            hf.model.decoder.embed_tokens.weight.copy_(hf.model.shared.weight)
    cfg, state = hf_marian.from_hf(hf.config, hf.state_dict())
    assert cfg.tie_embeddings == tie and cfg.n_decoder_layer == 3 and cfg.bias and cfg.position == "sinusoidal"
    model = Transformer(cfg).eval()
    model.load_state_dict(state, strict=True)
    assert max_diff(model, hf) <= TOL


@pytest.mark.parametrize("tie", [True, False])
def test_round_trip_is_exact(tie):
    check_round_trip_is_exact(hf_marian, tiny(tie_embeddings=tie))


@pytest.mark.parametrize("tie", [True, False])
def test_save_pretrained_loads_without_custom_code(tmp_path, tie):
    model = tiny(tie_embeddings=tie)
    check_save_pretrained_loads_without_custom_code(hf_marian, to_hf(model), model, tmp_path)


def test_greedy_generation_matches_hf():
    model = tiny(tie_embeddings=False)  # a tied random model mostly repeats its last token; this one varies
    check_greedy_generation_matches_hf(model, to_hf(model))


def test_hf_config_fields():
    c = hf_marian.hf_config(tiny(tie_embeddings=False, scale_embedding=False).cfg, SPECIALS)
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads) == (32, 2, 3, 4)
    assert c.encoder_ffn_dim == c.decoder_ffn_dim == 48
    assert c.max_position_embeddings == T and c.activation_function == "relu"
    assert not c.tie_word_embeddings and c.share_encoder_decoder_embeddings and not c.scale_embedding
    assert c.pad_token_id == c.decoder_start_token_id == 1 and c.eos_token_id == 0 and c.forced_eos_token_id is None


def test_sinusoidal_table_matches_marian_for_odd_width():
    # Marian puts sin in the first ceil(d/2) columns and cos in the rest; so does sinusoidal_positions
    emb = transformers.models.marian.modeling_marian.MarianSinusoidalPositionalEmbedding(10, 7)
    torch.testing.assert_close(emb.create_weight(), sinusoidal_positions(10, 7), rtol=0, atol=0)


def test_unsupported_settings_raise():
    for kw, match in (
        (dict(position="learned"), "position"),
        (dict(activation="gated-gelu"), "activation"),
        (dict(norm_eps=1e-6), "norm_eps"),
    ):
        model = tiny(**kw)
        with pytest.raises(ValueError, match=match):
            hf_marian.hf_config(model.cfg, SPECIALS)
        with pytest.raises(ValueError, match=match):
            hf_marian.to_hf_state(model.state_dict(), model.cfg)
    with pytest.raises(ValueError, match="pad"):
        hf_marian.hf_config(tiny().cfg, {**SPECIALS, "pad": 7})
    base = dict(
        vocab_size=V,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=T,
        pad_token_id=1,
        decoder_start_token_id=1,
    )
    for kw, match in (
        (dict(share_encoder_decoder_embeddings=False), "share_encoder_decoder_embeddings"),
        (dict(activation_function="swish"), "activation_function"),
        (dict(attention_dropout=0.1), "attention_dropout"),
        (dict(decoder_ffn_dim=64), "decoder_ffn_dim"),
        (dict(decoder_start_token_id=0), "decoder_start_token_id"),
    ):
        config = transformers.MarianConfig(**{**base, **kw})
        with pytest.raises(ValueError, match=match):
            hf_marian.from_hf(config, transformers.MarianMTModel(config).state_dict())
    untied = transformers.MarianConfig(**base, tie_word_embeddings=False)
    with pytest.raises(ValueError, match="embed_tokens differ"):  # random, separate source and target embeddings
        hf_marian.from_hf(untied, transformers.MarianMTModel(untied).state_dict())
    with pytest.raises(ValueError, match="model_type"):
        hf_marian.from_hf(transformers.T5Config(), {})
