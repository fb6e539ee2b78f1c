"""tokenmill.training.models.t5: the T5 encoder-decoder (pre-norm RMSNorm, relative position bias)."""

from __future__ import annotations

import pytest
import torch
from encoder_decoder_checks import (
    check_a_few_steps_on_a_repeated_batch_reduce_the_loss,
    check_cached_decoding_matches_full_decoding,
    check_decoder_is_causal,
    check_generate_respects_eos,
    check_generate_with_and_without_cache_agree,
    check_shapes_and_attention_weights,
    check_source_padding_is_invisible,
)

from tokenmill.training.models.layers import RelativePositionBias
from tokenmill.training.models.t5 import T5, T5Config

V, PAD = 48, 1


def tiny(seed: int = 0, **kw) -> T5:
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=V,
        block_size=16,
        n_layer=2,
        n_decoder_layer=3,
        n_head=2,
        d_head=8,
        n_embd=32,
        d_ff=64,
        num_buckets=8,
        max_distance=16,
        pad_id=PAD,
    )
    return T5(T5Config(**{**cfg, **kw})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])
def test_shapes_and_attention_weights(activation):
    model = tiny(activation=activation)
    assert (model.encoder.blocks[0].mlp.gate is not None) == (activation == "gated-gelu")
    check_shapes_and_attention_weights(model)


def test_no_biases_and_inner_width_from_d_head():
    model = tiny(n_head=3, d_head=5)
    assert not any(name.endswith("bias") and "rel_bias" not in name for name, _ in model.named_parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.shape == (3 * 15, 32)
    assert model(tokens(1, 4), decoder_input_ids=tokens(1, 3)).shape == (1, 3, V)


def test_decoder_is_causal():
    check_decoder_is_causal(tiny())


def test_source_padding_is_invisible():
    check_source_padding_is_invisible(tiny())


def test_cached_decoding_matches_full_decoding():
    # 12 target tokens: longer than the exact buckets, so the log-spaced ones are used too
    check_cached_decoding_matches_full_decoding(tiny(), target_len=12, d_head=8)


def test_generate_with_and_without_cache_agree():
    model = tiny()
    check_generate_with_and_without_cache_agree(model, 10)
    with pytest.raises(ValueError, match="block_size"):
        model.generate(tokens(3, 7), 17)


def test_generate_respects_eos():
    check_generate_respects_eos(tiny())


def test_relative_position_buckets_by_hand():
    # bidirectional, 32 buckets: 16 per direction, distances 0-7 exact, 8-127 log-spaced over 8-15
    bi = RelativePositionBias(1, bidirectional=True, num_buckets=32, max_distance=128)
    rel = torch.tensor([0, -1, 1, -7, -8, -16, 20, -127, -128, -1000, 1000])
    assert bi.bucket(rel).tolist() == [0, 1, 17, 7, 8, 10, 26, 15, 15, 15, 31]
    # causal, 32 buckets: later keys (rel > 0) share bucket 0, 0-15 exact, 16-127 log-spaced over 16-31
    causal = RelativePositionBias(1, bidirectional=False, num_buckets=32, max_distance=128)
    rel = torch.tensor([0, 5, -1, -15, -16, -32, -64, -127, -128, -1000])
    assert causal.bucket(rel).tolist() == [0, 0, 1, 15, 16, 21, 26, 31, 31, 31]


def test_one_bias_per_stack_shared_by_its_layers():
    model = tiny()
    assert model.encoder.rel_bias.bidirectional and not model.decoder.rel_bias.bidirectional
    with torch.no_grad():
        model.decoder.rel_bias.embedding.weight.zero_()
        model.decoder.rel_bias.embedding.weight[1:, 0] = -1e4  # head 0 sees only its own position
        _, weights = model(tokens(1, 5), decoder_input_ids=tokens(1, 6), need_weights=True)
    for layer in weights["decoder"]:
        torch.testing.assert_close(layer[0, 0], torch.eye(6), rtol=0, atol=1e-6)


def test_tied_output_is_rescaled_and_untied_has_its_own_head():
    tied = tiny()
    assert tied.lm_head.weight is tied.wte.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == V * 32
    src, tgt = tokens(1, 5), tokens(1, 4, seed=1)
    with torch.no_grad():
        hidden = {}
        tied.decoder.ln_f.register_forward_hook(lambda m, i, o: hidden.update(h=o))
        logits = tied(src, decoder_input_ids=tgt)
    torch.testing.assert_close(logits, hidden["h"] * 32**-0.5 @ tied.wte.weight.T)


def test_only_relative_positions():
    with pytest.raises(ValueError, match="relative"):
        tiny(position="sinusoidal")


def test_a_few_steps_on_a_repeated_batch_reduce_the_loss():
    check_a_few_steps_on_a_repeated_batch_reduce_the_loss(tiny())
