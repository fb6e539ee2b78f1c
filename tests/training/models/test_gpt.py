"""training.models.gpt: the decoder-only family (logits only; the loss lives in training.objectives)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokenmill.training.models.gpt import GPT, GPTConfig

V, T = 64, 16
POSITIONS = ("learned", "sinusoidal", "rope", "alibi")


def tiny(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)


def test_forward_returns_logits_only():
    logits = tiny()(tokens(3, 10))
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, 10, V)


def test_unknown_position_is_rejected():
    with pytest.raises(ValueError, match="relative"):
        tiny(position="relative")


@pytest.mark.parametrize("position", POSITIONS)
def test_changing_future_tokens_leaves_past_logits_unchanged(position):
    model = tiny(position=position)
    idx = tokens(2, T)
    t = 6
    changed = idx.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % V
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("position", POSITIONS)
def test_changing_first_token_changes_later_logits(position):
    model = tiny(position=position)
    idx = tokens(1, T)
    changed = idx.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    with torch.no_grad():
        a, b = model(idx), model(changed)
    for pos in range(T):
        assert not torch.allclose(a[0, pos], b[0, pos]), pos


@pytest.mark.parametrize("position", POSITIONS)
def test_untrained_loss_is_close_to_uniform(position):
    model = tiny(position=position)
    with torch.no_grad():
        loss = lm_loss(model(tokens(8, T)), tokens(8, T, seed=1))
    assert abs(loss.item() - math.log(V)) < 0.3


@pytest.mark.parametrize("position", ("learned", "rope"))
def test_position_information_is_used(position):
    """Swapping two earlier tokens changes the last position's logits (attention alone is order-blind)."""
    model = tiny(position=position)
    idx = tokens(1, 8)
    swapped = idx.clone()
    swapped[0, [1, 2]] = idx[0, [2, 1]]
    with torch.no_grad():
        assert not torch.allclose(model(idx)[0, -1], model(swapped)[0, -1])


@pytest.mark.parametrize("tie", [True, False])
def test_labels_give_the_summed_loss_and_the_gradients_of_the_logits_path(tie):
    """``model(x, labels=y)`` (the fused, chunked output layer and loss) is the summed cross entropy of
    ``model(x)``'s logits, with the same gradient for every parameter (the tied embedding included)."""
    x, y = tokens(3, 12, seed=1), tokens(3, 12, seed=2)
    y[1, :4] = -100
    grads = []
    for fused in (False, True):
        model = tiny(seed=3, tie_embeddings=tie).train()
        total = model(x, labels=y) if fused else lm_loss(model(x), y) * int((y != -100).sum())
        (total / 30.0).backward()
        grads.append((total.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ref, ref_grads), (got, got_grads) = grads
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    assert ref_grads.keys() == got_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(got_grads[name], ref_grads[name], rtol=1e-4, atol=1e-7, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(tiny(seed=3, tie_embeddings=tie)(x, labels=y), ref, rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="need_weights"):
        tiny()(x, labels=y, need_weights=True)


def test_tied_embeddings_share_the_tensor():
    tied = tiny(tie_embeddings=True)
    assert tied.lm_head.weight is tied.wte.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == V * 32


def test_position_tables_and_parameters():
    assert tiny(position="learned").wpe.weight.shape == (T, 32)
    for position in ("sinusoidal", "rope", "alibi"):
        model = tiny(position=position)
        assert not hasattr(model, "wpe")
        assert model.num_params() == tiny(position="learned").num_params() - T * 32
        assert not any("wpe" in k or "slopes" in k or "rope" in k for k in model.state_dict())


@pytest.mark.parametrize("position", ("learned", "sinusoidal", "rope"))
def test_sequence_longer_than_block_size_raises(position):
    with pytest.raises(ValueError, match="block_size"):
        tiny(position=position)(tokens(1, T + 1))


def test_alibi_reads_past_block_size():
    model = tiny(position="alibi")
    with torch.no_grad():
        long = model(tokens(1, T + 4))
        short = model(tokens(1, T + 4)[:, :T])
    torch.testing.assert_close(long[:, :T], short, rtol=0, atol=1e-5)


# --- cache, padding, attention weights --------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_step_by_step_logits_equal_full_sequence(position):
    model = tiny(position=position, bias=True)
    idx = tokens(2, 12)
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache()
        first = model(idx[:, :5], cache=cache)  # a multi-token prefill, then one token at a time
        steps = [first] + [model(idx[:, i : i + 1], cache=cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-5)
    assert cache[0]["k"].shape == (2, 2, 12, 16)


@pytest.mark.parametrize("position", POSITIONS)
def test_right_padding_leaves_real_positions_unchanged(position):
    model = tiny(position=position, bias=True)
    idx = tokens(2, 9)
    padded = torch.cat([idx, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 9), torch.zeros(2, 4)], dim=1).long()
    with torch.no_grad():
        plain = model(idx)
        masked = model(padded, attention_mask=mask)
    torch.testing.assert_close(masked[:, :9], plain, rtol=0, atol=1e-5)
    assert torch.isfinite(masked).all()


@pytest.mark.parametrize("position", POSITIONS)
def test_attention_mask_hides_padded_keys(position):
    """Left padding: a real token's logits do not depend on what the padded positions hold."""
    model = tiny(position=position)
    idx = tokens(1, 10)
    other = idx.clone()
    other[0, :3] = (other[0, :3] + 7) % V
    mask = torch.tensor([[0] * 3 + [1] * 7])
    with torch.no_grad():
        a = model(idx, attention_mask=mask)
        b = model(other, attention_mask=mask)
    torch.testing.assert_close(a[:, 3:], b[:, 3:], rtol=0, atol=1e-5)
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("position", POSITIONS)
def test_need_weights_returns_causal_probabilities(position):
    model = tiny(position=position)
    idx = tokens(2, 7)
    with torch.no_grad():
        logits, attentions = model(idx, need_weights=True)
        plain = model(idx)
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
    assert len(attentions) == 2
    for w in attentions:
        assert w.shape == (2, 2, 7, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 7))
        assert (w >= 0).all()
        assert torch.equal(w.triu(1), torch.zeros_like(w))


def test_need_weights_gives_padded_keys_no_weight():
    model = tiny()
    mask = torch.tensor([[1] * 5 + [0] * 2])
    with torch.no_grad():
        _, attentions = model(tokens(1, 7), attention_mask=mask, need_weights=True)
    for w in attentions:
        assert w[..., 5:].abs().max() == 0
        torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 7))


# --- generation -------------------------------------------------------------------------------


def test_generate_length_and_prompt_preserved():
    model = tiny()
    prompt = tokens(2, 3)
    out = model.generate(prompt, max_new_tokens=5, temperature=0)
    assert out.shape == (2, 8)
    assert torch.equal(out[:, :3], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < V


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("use_cache", (True, False))
def test_generate_past_block_size_crops_context(position, use_cache):
    model = tiny(position=position)
    out = model.generate(tokens(1, T - 2), max_new_tokens=T, temperature=0, use_cache=use_cache)
    assert out.shape == (1, 2 * T - 2)
    # The last token is greedy on the last block_size tokens before it.
    with torch.no_grad():
        expected = model(out[:, -T - 1 : -1])[0, -1].argmax()
    assert out[0, -1] == expected


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_generation_equals_uncached(position):
    model = tiny(position=position, bias=True)
    prompt = tokens(2, 4)
    greedy = model.generate(prompt, 10, temperature=0, use_cache=True)
    assert torch.equal(greedy, model.generate(prompt, 10, temperature=0, use_cache=False))
    sampled = model.generate(prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3))
    again = model.generate(prompt, 10, temperature=1.0, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(sampled, again)
    assert not torch.equal(sampled, greedy)  # the sampled run really sampled


def test_greedy_generation_is_deterministic_and_is_argmax():
    model = tiny()
    prompt = tokens(1, 4)
    a = model.generate(prompt, max_new_tokens=6, temperature=0)
    b = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert torch.equal(a, b)
    with torch.no_grad():
        for i in range(4, 10):
            assert a[0, i] == model(a[:, :i])[0, -1].argmax()


def test_sampling_is_reproducible_with_a_generator_and_top_k_one_is_greedy():
    model = tiny()
    prompt = tokens(1, 4)
    a = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    top1 = model.generate(prompt, 8, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(9))
    assert torch.equal(top1, model.generate(prompt, 8, temperature=0))


def test_top_p_tiny_is_greedy_and_top_p_one_is_plain_sampling():
    model = tiny()
    prompt = tokens(2, 4)
    greedy = model.generate(prompt, 8, temperature=0)
    for p in (1e-6, 0.0):
        nucleus = model.generate(prompt, 8, temperature=1.0, top_p=p, generator=torch.Generator().manual_seed(1))
        assert torch.equal(nucleus, greedy)
    plain = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(2))
    full = model.generate(prompt, 8, temperature=1.0, top_p=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(plain, full)


@pytest.mark.parametrize("use_cache", (True, False))
def test_eos_id_stops_early(use_cache):
    model = tiny()
    prompt = tokens(1, 4)
    free = model.generate(prompt, 10, temperature=0, use_cache=use_cache)
    eos = int(free[0, 6])  # the third generated token
    first = int((free[0, 4:] == eos).nonzero()[0])  # it may appear earlier too
    stopped = model.generate(prompt, 10, temperature=0, eos_id=eos, use_cache=use_cache)
    assert stopped.shape == (1, 4 + first + 1)
    assert torch.equal(stopped, free[:, : 4 + first + 1])


def test_eos_id_waits_for_every_row():
    model = tiny()
    prompt = tokens(2, 4)
    free = model.generate(prompt, 10, temperature=0)
    only_row0 = [int(t) for t in free[0, 4:] if not (free[1, 4:] == t).any()]
    assert only_row0, "pick another seed: both rows generate the same tokens"
    out = model.generate(prompt, 10, temperature=0, eos_id=only_row0[0])
    assert torch.equal(out, free)  # row 1 never produces it, so all 10 tokens are generated


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("position", POSITIONS)
def test_a_few_steps_on_a_repeated_batch_reduce_the_loss(position):
    model = tiny(position=position).train()
    idx, tgt = tokens(4, T), tokens(4, T, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = lm_loss(model(idx), tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
