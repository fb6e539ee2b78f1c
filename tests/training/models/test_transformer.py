"""tokenmill.training.models.transformer: the original encoder-decoder Transformer (post-LN, sinusoidal positions)."""

from __future__ import annotations

import math

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

from tokenmill.training.models.layers import sinusoidal_positions
from tokenmill.training.models.transformer import Transformer, TransformerConfig

V, T, PAD = 48, 16, 1


def tiny(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=T, n_layer=2, n_decoder_layer=3, n_head=2, n_embd=32, d_ff=64, pad_id=PAD)
    return Transformer(TransformerConfig(**{**cfg, **kw})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, V, (b, t), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_attention_weights():
    check_shapes_and_attention_weights(tiny())


def test_missing_decoder_input_ids_raises():
    with pytest.raises(ValueError, match="decoder_input_ids"):
        tiny()(tokens(1, 4))


def test_decoder_is_causal():
    check_decoder_is_causal(tiny())


def test_source_padding_is_invisible():
    check_source_padding_is_invisible(tiny())


def test_cached_decoding_matches_full_decoding():
    check_cached_decoding_matches_full_decoding(tiny(), target_len=9, d_head=16)


def test_generate_with_and_without_cache_agree():
    check_generate_with_and_without_cache_agree(tiny(), 8)


def test_generate_respects_eos():
    check_generate_respects_eos(tiny())


def test_sinusoidal_positions_and_embedding_scale():
    model = tiny()
    torch.testing.assert_close(model.decoder.pos_table, sinusoidal_positions(T, 32))
    assert model.embed_scale == math.sqrt(32)
    assert tiny(scale_embedding=False).embed_scale == 1.0
    learned = tiny(position="learned")
    assert learned.encoder.wpe.weight.shape == (T, 32)
    assert learned(tokens(1, 4), decoder_input_ids=tokens(1, 3)).shape == (1, 3, V)
    with pytest.raises(ValueError, match="sinusoidal or learned"):
        tiny(position="rope")


def test_too_long_sequences_raise():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(1, T + 1), decoder_input_ids=tokens(1, 2))
    with pytest.raises(ValueError, match="block_size"):
        model.generate(tokens(1, 3), T + 1)


def test_tied_embeddings_and_biases():
    tied = tiny()
    assert tied.lm_head.weight is tied.wte.weight and tied.lm_head.bias is not None
    untied = tiny(tie_embeddings=False)
    assert untied.num_params() - tied.num_params() == V * 32
    no_bias = tiny(bias=False)
    assert not any(name.endswith("bias") for name, _ in no_bias.named_parameters())


def test_a_few_steps_on_a_repeated_batch_reduce_the_loss():
    check_a_few_steps_on_a_repeated_batch_reduce_the_loss(tiny())
