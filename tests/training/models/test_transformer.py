"""tokenmill.training.models.transformer: the original encoder-decoder Transformer (post-LN, sinusoidal positions)."""

from __future__ import annotations

import math

import pytest
import torch

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
    model = tiny()
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


def test_missing_decoder_input_ids_raises():
    with pytest.raises(ValueError, match="decoder_input_ids"):
        tiny()(tokens(1, 4))


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
        c = model(padded, decoder_input_ids=tgt)  # unmasked padding is attended to
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_cached_decoding_matches_full_decoding():
    model = tiny()
    src, tgt = tokens(2, 7), tokens(2, 9, seed=1)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(tgt, memory, mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :3], memory, mask, cache)]  # a prompt, then one token at a time
        steps += [model.decode(tgt[:, i:i + 1], memory, mask, cache) for i in range(3, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    assert cache[0]["self"]["k"].shape == (2, 2, 9, 16) and cache[0]["cross"]["k"].shape == (2, 2, 7, 16)


def test_generate_with_and_without_cache_agree():
    model = tiny()
    src = tokens(3, 7)
    greedy = model.generate(src, 8, temperature=0)
    assert greedy.shape == (3, 9) and torch.all(greedy[:, 0] == PAD)
    assert torch.equal(greedy, model.generate(src, 8, temperature=0, use_cache=False))
    a = model.generate(src, 8, generator=torch.Generator().manual_seed(3))
    b = model.generate(src, 8, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    with torch.no_grad():
        first = model(src, decoder_input_ids=greedy[:, :1])[:, -1].argmax(-1)
    assert torch.equal(greedy[:, 1], first)


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
    assert out.size(1) <= free.size(1)
    one = model.generate(src[:1], 8, temperature=0, eos_id=int(model.generate(src[:1], 1, temperature=0)[0, 1]))
    assert one.shape == (1, 2)  # stops as soon as every row has finished


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
