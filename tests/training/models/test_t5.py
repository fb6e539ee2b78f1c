"""tokenmill.training.models.t5: the T5 encoder-decoder (pre-norm RMSNorm, relative position bias)."""

from __future__ import annotations

import pytest
import torch

from tokenmill.training.models.layers import RelativePositionBias
from tokenmill.training.models.t5 import T5, T5Config

V, PAD = 48, 1


def tiny(seed: int = 0, **kw) -> T5:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=16, n_layer=2, n_decoder_layer=3, n_head=2, d_head=8, n_embd=32, d_ff=64,
               num_buckets=8, max_distance=16, pad_id=PAD)
    return T5(T5Config(**{**cfg, **kw})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("activation", ["relu", "gated-gelu"])
def test_shapes_and_attention_weights(activation):
    model = tiny(activation=activation)
    assert (model.encoder.blocks[0].mlp.gate is not None) == (activation == "gated-gelu")
    src, tgt = tokens(3, 10), tokens(3, 6, seed=1)
    logits = model(src, decoder_input_ids=tgt)
    assert logits.shape == (3, 6, V)
    assert model.encode(src).shape == (3, 10, 32)
    logits2, weights = model(src, decoder_input_ids=tgt, need_weights=True)
    torch.testing.assert_close(logits, logits2, rtol=0, atol=1e-5)
    assert [w.shape for w in weights["encoder"]] == [(3, 2, 10, 10)] * 2
    assert [w.shape for w in weights["decoder"]] == [(3, 2, 6, 6)] * 3
    assert [w.shape for w in weights["cross"]] == [(3, 2, 6, 10)] * 3
    assert torch.all(weights["decoder"][0].triu(1) == 0)  # causal


def test_no_biases_and_inner_width_from_d_head():
    model = tiny(n_head=3, d_head=5)
    assert not any(name.endswith("bias") and "rel_bias" not in name for name, _ in model.named_parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.shape == (3 * 15, 32)
    assert model(tokens(1, 4), decoder_input_ids=tokens(1, 3)).shape == (1, 3, V)


def test_decoder_is_causal():
    model = tiny()
    src, tgt = tokens(2, 8), tokens(2, 10, seed=1)
    changed = tgt.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % V
    with torch.no_grad():
        a, b = model(src, decoder_input_ids=tgt), model(src, decoder_input_ids=changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_source_padding_is_invisible():
    model = tiny()
    src, tgt = tokens(1, 6), tokens(1, 5, seed=1)
    padded = torch.cat([src, torch.full((1, 4), PAD)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        a = model(src, decoder_input_ids=tgt)
        b = model(padded, mask, decoder_input_ids=tgt)
        c = model(padded, decoder_input_ids=tgt)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_cached_decoding_matches_full_decoding():
    model = tiny()
    src, tgt = tokens(2, 7), tokens(2, 12, seed=1)  # longer than the exact buckets: the log-spaced ones too
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(tgt, memory, mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :3], memory, mask, cache)]  # a prompt, then one token at a time
        steps += [model.decode(tgt[:, i:i + 1], memory, mask, cache) for i in range(3, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    assert cache[0]["self"]["k"].shape == (2, 2, 12, 8) and cache[0]["cross"]["k"].shape == (2, 2, 7, 8)


def test_generate_with_and_without_cache_agree():
    model = tiny()
    src = tokens(3, 7)
    greedy = model.generate(src, 10, temperature=0)
    assert greedy.shape == (3, 11) and torch.all(greedy[:, 0] == PAD)
    assert torch.equal(greedy, model.generate(src, 10, temperature=0, use_cache=False))
    a = model.generate(src, 10, generator=torch.Generator().manual_seed(3))
    b = model.generate(src, 10, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    with torch.no_grad():
        first = model(src, decoder_input_ids=greedy[:, :1])[:, -1].argmax(-1)
    assert torch.equal(greedy[:, 1], first)
    with pytest.raises(ValueError, match="block_size"):
        model.generate(src, 17)


def test_generate_respects_eos():
    model = tiny()
    src = tokens(3, 7)
    free = model.generate(src, 8, generator=torch.Generator().manual_seed(0))
    eos = int(free[0, 3])
    out = model.generate(src, 8, generator=torch.Generator().manual_seed(0), eos_id=eos)
    for row, full in zip(out, free):
        hits = (full[1:] == eos).nonzero()
        end = 1 + int(hits[0]) + 1 if len(hits) else full.numel()
        assert torch.equal(row[:end], full[:end])  # identical up to and including the first eos
        assert torch.all(row[end:] == PAD)  # then padding
    one = model.generate(src[:1], 8, temperature=0, eos_id=int(model.generate(src[:1], 1, temperature=0)[0, 1]))
    assert one.shape == (1, 2)  # stops as soon as every row has finished


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
    torch.testing.assert_close(logits, hidden["h"] * 32 ** -0.5 @ tied.wte.weight.T)


def test_only_relative_positions():
    with pytest.raises(ValueError, match="relative"):
        tiny(position="sinusoidal")


def test_a_few_steps_on_a_repeated_batch_reduce_the_loss():
    model = tiny().train()
    src, tgt = tokens(4, 8), tokens(4, 7, seed=1)
    inputs = torch.cat([torch.full((4, 1), PAD), tgt[:, :-1]], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(src, decoder_input_ids=inputs).flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
