"""What every encoder-decoder family (``EncoderDecoder``: T5, the original Transformer) must do, checked
on a small model that each family's test file builds: ``check_…(model)`` asserts it.

Sequences are random ids in ``[2, vocab)``; the model's ``cfg.pad_id`` pads them and starts decoding.
"""

from __future__ import annotations

import torch


def ids(model, b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, model.cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


def check_shapes_and_attention_weights(model) -> None:
    """Logits ``(B, L, V)``, memory ``(B, S, C)``, and one ``(B, H, Tq, Tk)`` weight per layer and kind."""
    cfg = model.cfg
    H, n_dec = cfg.n_head, cfg.n_decoder_layer or cfg.n_layer
    src, tgt = ids(model, 3, 10), ids(model, 3, 6, seed=1)
    logits = model(src, decoder_input_ids=tgt)
    assert logits.shape == (3, 6, cfg.vocab_size)
    assert model.encode(src).shape == (3, 10, cfg.n_embd)
    logits2, weights = model(src, decoder_input_ids=tgt, need_weights=True)
    torch.testing.assert_close(logits, logits2, rtol=0, atol=1e-5)
    assert [w.shape for w in weights["encoder"]] == [(3, H, 10, 10)] * cfg.n_layer
    assert [w.shape for w in weights["decoder"]] == [(3, H, 6, 6)] * n_dec
    assert [w.shape for w in weights["cross"]] == [(3, H, 6, 10)] * n_dec
    assert torch.all(weights["decoder"][0].triu(1) == 0)  # causal


def check_decoder_is_causal(model) -> None:
    """Changing target tokens from position 5 on leaves the logits before 5 alone."""
    src, tgt = ids(model, 2, 8), ids(model, 2, 10, seed=1)
    changed = tgt.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % model.cfg.vocab_size
    with torch.no_grad():
        a, b = model(src, decoder_input_ids=tgt), model(src, decoder_input_ids=changed)
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def check_source_padding_is_invisible(model) -> None:
    """Masked source padding changes nothing; the same padding unmasked does."""
    src, tgt = ids(model, 1, 6), ids(model, 1, 5, seed=1)
    padded = torch.cat([src, torch.full((1, 4), model.cfg.pad_id)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        a = model(src, decoder_input_ids=tgt)
        b = model(padded, mask, decoder_input_ids=tgt)
        c = model(padded, decoder_input_ids=tgt)  # unmasked padding is attended to
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def check_cached_decoding_matches_full_decoding(model, target_len: int, d_head: int) -> None:
    """A 3-token prompt, then one token at a time through the cache, gives the logits of one full pass."""
    src, tgt = ids(model, 2, 7), ids(model, 2, target_len, seed=1)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(tgt, memory, mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :3], memory, mask, cache)]  # a prompt, then one token at a time
        steps += [model.decode(tgt[:, i : i + 1], memory, mask, cache) for i in range(3, target_len)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    H = model.cfg.n_head
    assert cache[0]["self"]["k"].shape == (2, H, target_len, d_head)
    assert cache[0]["cross"]["k"].shape == (2, H, 7, d_head)


def check_generate_with_and_without_cache_agree(model, n: int) -> None:
    """``n`` new tokens, greedy and sampled, are the same with and without the cache; the first is the argmax."""
    src = ids(model, 3, 7)
    greedy = model.generate(src, n, temperature=0)
    assert greedy.shape == (3, n + 1) and torch.all(greedy[:, 0] == model.cfg.pad_id)
    assert torch.equal(greedy, model.generate(src, n, temperature=0, use_cache=False))
    a = model.generate(src, n, generator=torch.Generator().manual_seed(3))
    b = model.generate(src, n, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)
    with torch.no_grad():
        first = model(src, decoder_input_ids=greedy[:, :1])[:, -1].argmax(-1)
    assert torch.equal(greedy[:, 1], first)


def check_generate_respects_eos(model) -> None:
    """Rows match free generation up to their first eos, then pad; generation stops once every row has."""
    pad = model.cfg.pad_id
    src = ids(model, 3, 7)
    free = model.generate(src, 8, generator=torch.Generator().manual_seed(0))
    eos = int(free[0, 3])
    out = model.generate(src, 8, generator=torch.Generator().manual_seed(0), eos_id=eos)
    for row, full in zip(out, free):
        hits = (full[1:] == eos).nonzero()
        end = 1 + int(hits[0]) + 1 if len(hits) else full.numel()
        assert torch.equal(row[:end], full[:end])  # identical up to and including the first eos
        assert torch.all(row[end:] == pad)  # then padding
    assert out.size(1) <= free.size(1)
    one = model.generate(src[:1], 8, temperature=0, eos_id=int(model.generate(src[:1], 1, temperature=0)[0, 1]))
    assert one.shape == (1, 2)  # stops as soon as every row has finished


def check_a_few_steps_on_a_repeated_batch_reduce_the_loss(model) -> None:
    model.train()
    src, tgt = ids(model, 4, 8), ids(model, 4, 7, seed=1)
    inputs = torch.cat([torch.full((4, 1), model.cfg.pad_id), tgt[:, :-1]], dim=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(src, decoder_input_ids=inputs).flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
