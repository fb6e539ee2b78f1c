"""tokenmill.training.models.layers: the building blocks every family shares."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokenmill.training.models.layers import (
    Attention,
    FeedForward,
    LMHead,
    RelativePositionBias,
    RMSNorm,
    RotaryEmbedding,
    add_bias,
    alibi_bias,
    alibi_slopes,
    linear_cross_entropy,
    padding_bias,
    sample_next,
    sinusoidal_positions,
)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- positions --------------------------------------------------------------------------------


def test_sinusoidal_table_follows_the_formula_in_sin_cos_halves():
    d = 16
    table = sinusoidal_positions(64, d)
    assert table.shape == (64, d) and table.dtype == torch.float32
    for pos in (0, 1, 7, 63):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, d // 2 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(table[0], torch.cat([torch.zeros(d // 2), torch.ones(d // 2)]))


def test_sinusoidal_table_with_an_odd_width():
    table = sinusoidal_positions(5, 7)
    assert table.shape == (5, 7)
    assert table[3, 0].item() == pytest.approx(math.sin(3.0), abs=1e-6)
    assert table[3, 4].item() == pytest.approx(math.cos(3.0), abs=1e-6)


def test_rope_preserves_norms():
    rope = RotaryEmbedding(8, 32)
    x = randn(2, 3, 20, 8)
    for offset in (0, 5, 12):
        torch.testing.assert_close(rope(x, offset).norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rope(x[:, :, :1], 0), x[:, :, :1])  # position 0 is not rotated


def test_rope_dot_products_depend_only_on_the_relative_offset():
    rope = RotaryEmbedding(8, 64)
    q, k = randn(1, 1, 1, 8, seed=1), randn(1, 1, 1, 8, seed=2)

    def dot(m: int, n: int) -> float:
        return (rope(q, m) * rope(k, n)).sum().item()

    for m, n in ((3, 1), (10, 2), (4, 9)):
        reference = dot(m, n)
        for shift in (1, 7, 30):
            assert dot(m + shift, n + shift) == pytest.approx(reference, abs=1e-5)
    assert dot(5, 1) != pytest.approx(dot(5, 2), abs=1e-3)  # and it does depend on the offset


def test_rope_offset_matches_the_position_in_a_sequence():
    rope = RotaryEmbedding(8, 32)
    x = randn(1, 2, 10, 8)
    full = rope(x, 0)
    for i in (0, 4, 9):
        torch.testing.assert_close(rope(x[:, :, i : i + 1], i), full[:, :, i : i + 1])


def test_alibi_slopes():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    # Not a power of two: the 4-head slopes, then every other one of the 8-head sequence.
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]))


def test_alibi_bias_values():
    slopes = torch.tensor([0.5, 0.25])
    causal = alibi_bias(slopes, 3, 5, causal=True)  # queries at positions 2, 3, 4
    assert causal.shape == (1, 2, 3, 5)
    expected = torch.tensor([[2, 1, 0, 0, 0], [3, 2, 1, 0, 0], [4, 3, 2, 1, 0]], dtype=torch.float32)
    torch.testing.assert_close(causal[0, 0], -0.5 * expected)
    torch.testing.assert_close(causal[0, 1], -0.25 * expected)
    both = alibi_bias(slopes, 2, 3, causal=False)  # queries at 1, 2
    torch.testing.assert_close(both[0, 0], -0.5 * torch.tensor([[1.0, 0.0, 1.0], [2.0, 1.0, 0.0]]))


def test_relative_position_buckets_bidirectional():
    rpb = RelativePositionBias(2, bidirectional=True, num_buckets=32, max_distance=128)
    rel = torch.tensor([0, -1, -3, -7, -8, -20, -32, -64, -127, -128, -1000, 1, 3, 7, 8, 20, 1000])
    # 16 buckets per direction, 8 exact; keys after the query are offset by 16; far ones saturate.
    assert rpb.bucket(rel).tolist() == [0, 1, 3, 7, 8, 10, 12, 14, 15, 15, 15, 17, 19, 23, 24, 26, 31]


def test_relative_position_buckets_causal():
    rpb = RelativePositionBias(2, bidirectional=False, num_buckets=32, max_distance=128)
    rel = torch.tensor([0, -1, -5, -15, -16, -20, -32, -64, -128, -1000, 1, 5, 1000])
    # 32 buckets looking back, 16 exact; keys after the query (hidden anyway) share bucket 0.
    assert rpb.bucket(rel).tolist() == [0, 1, 5, 15, 16, 17, 21, 26, 31, 31, 0, 0, 0]


@pytest.mark.parametrize("bidirectional", (True, False))
def test_relative_position_buckets_match_t5(bidirectional):
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 301)
    ours = RelativePositionBias(2, bidirectional, num_buckets=32, max_distance=128).bucket(rel)
    assert torch.equal(ours, T5Attention._relative_position_bucket(rel, bidirectional, 32, 128))


def test_relative_position_bias_lookup():
    rpb = RelativePositionBias(3, bidirectional=True, num_buckets=8, max_distance=16)
    out = rpb(2, 4)  # queries at 2, 3
    assert out.shape == (1, 3, 2, 4)
    buckets = rpb.bucket(torch.arange(4)[None, :] - torch.tensor([[2], [3]]))
    torch.testing.assert_close(out[0], rpb.embedding.weight[buckets].permute(2, 0, 1))


# --- norms and feed-forward -------------------------------------------------------------------


def test_rmsnorm_output_rms_is_the_weight():
    norm = RMSNorm(64, eps=1e-6)
    x = 5 * randn(3, 7, 64) + 2
    rms = norm(x).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.ones(3, 7), atol=1e-4, rtol=0)
    with torch.no_grad():
        norm.weight.fill_(3.0)
    torch.testing.assert_close(norm(x).pow(2).mean(-1).sqrt(), torch.full((3, 7), 3.0), atol=1e-4, rtol=0)


def test_rmsnorm_does_not_centre():
    norm = RMSNorm(4)
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(norm(x), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ("gelu", "gelu_tanh", "relu", "gated-gelu", "gated-silu"))
def test_feedforward_activations(activation):
    torch.manual_seed(0)
    ff = FeedForward(16, 40, activation, bias=True)
    x = randn(2, 5, 16)
    out = ff(x)
    assert out.shape == (2, 5, 16)
    assert (ff.gate is not None) == activation.startswith("gated")
    act = {
        "gelu": F.gelu,
        "gelu_tanh": lambda h: F.gelu(h, approximate="tanh"),
        "relu": F.relu,
        "gated-gelu": lambda h: F.gelu(h, approximate="tanh"),
        "gated-silu": F.silu,
    }[activation]
    h = act(ff.fc(x))
    if ff.gate is not None:
        h = h * ff.gate(x)
    torch.testing.assert_close(out, ff.proj(h))


def test_feedforward_gate_is_used():
    torch.manual_seed(0)
    ff = FeedForward(8, 16, "gated-silu", bias=False)
    x = randn(1, 3, 8)
    before = ff(x)
    with torch.no_grad():
        ff.gate.weight.zero_()
    assert torch.equal(ff(x), torch.zeros_like(before))
    assert before.abs().max() > 0


def test_feedforward_rejects_unknown_activation():
    with pytest.raises(ValueError, match="swish"):
        FeedForward(8, 16, "swish")


# --- attention --------------------------------------------------------------------------------


def naive_attention(
    attn: Attention,
    x: torch.Tensor,
    memory: torch.Tensor | None = None,
    causal: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    B, Tq, _ = x.shape
    if attn.cross:
        q = attn.q(x)
        k, v = attn.kv(memory).chunk(2, dim=-1)
    else:
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
    q, k, v = (t.view(B, t.size(1), attn.n_head, attn.d_head).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) * attn.scale
    if bias is not None:
        scores = scores + bias
    if causal:
        Tk = k.size(2)
        scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(Tk - Tq + 1), float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.out(y.transpose(1, 2).reshape(B, Tq, -1))


def test_self_attention_matches_the_formula_and_need_weights_agrees():
    torch.manual_seed(0)
    attn = Attention(16, 4, bias=True).eval()
    x = randn(2, 6, 16)
    out, none = attn(x, causal=True)
    assert none is None
    torch.testing.assert_close(out, naive_attention(attn, x, causal=True), atol=1e-5, rtol=0)
    out_w, weights = attn(x, causal=True, need_weights=True)
    torch.testing.assert_close(out_w, out, atol=1e-5, rtol=0)
    assert weights.shape == (2, 4, 6, 6)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))


def test_attention_with_a_separate_head_width_and_no_scale():
    torch.manual_seed(0)
    attn = Attention(16, 2, d_head=5, scale=False).eval()
    assert attn.qkv.weight.shape == (30, 16) and attn.out.weight.shape == (16, 10)
    x = randn(1, 4, 16)
    torch.testing.assert_close(attn(x)[0], naive_attention(attn, x), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="divisible"):
        Attention(16, 3)


@pytest.mark.parametrize("use_rope", (False, True))
def test_self_attention_cache_equals_full_computation(use_rope):
    torch.manual_seed(0)
    attn = Attention(16, 2, bias=True).eval()
    rope = RotaryEmbedding(8, 32) if use_rope else None
    x = randn(2, 9, 16)
    full, _ = attn(x, causal=True, rope=rope)
    cache: dict = {}
    parts = [attn(x[:, :4], causal=True, rope=rope, cache=cache)[0]]
    parts += [attn(x[:, i : i + 1], causal=True, rope=rope, cache=cache)[0] for i in range(4, 9)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    assert cache["k"].shape == cache["v"].shape == (2, 2, 9, 8)


def test_cached_decode_step_with_need_weights_sees_all_earlier_keys():
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    x = randn(1, 5, 16)
    cache: dict = {}
    attn(x[:, :4], causal=True, cache=cache)
    _, weights = attn(x[:, 4:], causal=True, cache=cache, need_weights=True)
    assert weights.shape == (1, 2, 1, 5)
    assert (weights > 0).all()


def test_cross_attention_matches_the_formula_and_its_cache_reuses_keys_and_values():
    torch.manual_seed(0)
    attn = Attention(16, 2, cross=True, bias=True).eval()
    x, memory, other = randn(2, 3, 16), randn(2, 7, 16, seed=1), randn(2, 7, 16, seed=2)
    out, _ = attn(x, memory)
    torch.testing.assert_close(out, naive_attention(attn, x, memory), atol=1e-5, rtol=0)
    cache: dict = {}
    first, _ = attn(x, memory, cache=cache)
    assert cache["k"].shape == (2, 2, 7, 8)
    second, _ = attn(x, other, cache=cache)  # a different memory: the cached keys/values win
    torch.testing.assert_close(second, first, atol=0, rtol=0)
    assert not torch.allclose(attn(x, other)[0], first)


def test_padding_bias_values():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    bias = padding_bias(mask, torch.float32)
    assert bias.shape == (2, 1, 1, 3)
    low = torch.finfo(torch.float32).min
    assert bias.flatten().tolist() == [0.0, 0.0, low, 0.0, low, low]
    assert padding_bias(None, torch.float32) is None


@pytest.mark.parametrize("dtype", (torch.float32, torch.float16, torch.bfloat16))
def test_add_bias_does_not_overflow(dtype):
    mask = torch.tensor([[1, 0, 0]])
    a, b = padding_bias(mask, dtype), padding_bias(mask, dtype)
    total = add_bias(a, None, b, alibi_bias(torch.tensor([0.5]), 3, 3, causal=False).to(dtype))
    assert total.shape == (1, 1, 3, 3)
    assert torch.isfinite(total).all()
    assert total.min() == torch.finfo(dtype).min
    assert add_bias(None, None) is None
    assert add_bias(a) is not None and torch.equal(add_bias(a), a)


def test_fully_masked_rows_stay_finite():
    """A row whose every key is padded (double-masked) gives finite output, not NaN."""
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    x = randn(1, 3, 16)
    mask = torch.zeros(1, 3, dtype=torch.long)
    bias = add_bias(padding_bias(mask, torch.float32), padding_bias(mask, torch.float32))
    for need_weights in (False, True):
        out, _ = attn(x, bias=bias, causal=True, need_weights=need_weights)
        assert torch.isfinite(out).all()


def test_padding_bias_hides_keys_in_attention():
    torch.manual_seed(0)
    attn = Attention(16, 2).eval()
    x = randn(1, 5, 16)
    changed = x.clone()
    changed[:, 3:] = randn(1, 2, 16, seed=9)
    bias = padding_bias(torch.tensor([[1, 1, 1, 0, 0]]), torch.float32)
    a, _ = attn(x, bias=bias)
    b, _ = attn(changed, bias=bias)
    torch.testing.assert_close(a[:, :3], b[:, :3], atol=1e-6, rtol=0)


# --- sampling ---------------------------------------------------------------------------------


def draws(logits: torch.Tensor, n: int = 4000, seed: int = 0, **kw) -> set[int]:
    batch = logits.expand(n, -1)
    return set(sample_next(batch, generator=torch.Generator().manual_seed(seed), **kw).flatten().tolist())


def test_sample_next_greedy():
    logits = torch.tensor([[0.1, 3.0, -1.0], [2.0, 0.0, 1.0]])
    assert sample_next(logits, temperature=0).tolist() == [[1], [0]]
    assert sample_next(logits, temperature=0, top_k=2, top_p=0.1).shape == (2, 1)


def test_sample_next_plain_sampling_reaches_every_token():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    assert draws(logits) == {0, 1, 2, 3}


def test_sample_next_top_k():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.05, 0.3, 0.15]]))
    assert draws(logits, top_k=2) == {1, 3}
    assert draws(logits, top_k=1) == {1}
    assert draws(logits, top_k=100) == {0, 1, 2, 3, 4}


def test_sample_next_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.15, 0.5, 0.05, 0.3]]))  # sorted: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05)
    assert draws(logits, top_p=0.45) == {1}
    assert draws(logits, top_p=0.55) == {1, 3}
    assert draws(logits, top_p=0.9) == {1, 3, 0}
    assert draws(logits, top_p=0.99) == {0, 1, 2, 3}
    assert draws(logits, top_p=1.0) == {0, 1, 2, 3}
    assert draws(logits, top_p=0.0) == {1}  # nothing would reach p=0: the most likely token stays


def test_sample_next_top_p_renormalises():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    picks = sample_next(logits.expand(20000, -1), top_p=0.7, generator=torch.Generator().manual_seed(0))
    share = (picks == 0).float().mean().item()
    assert share == pytest.approx(0.5 / 0.8, abs=0.02)


def test_sample_next_temperature_sharpens():
    logits = torch.log(torch.tensor([[0.6, 0.4]]))
    cold = sample_next(logits.expand(20000, -1), temperature=0.25, generator=torch.Generator().manual_seed(0))
    expected = 0.6**4 / (0.6**4 + 0.4**4)
    assert (cold == 0).float().mean().item() == pytest.approx(expected, abs=0.02)


def test_sample_next_is_reproducible_with_a_generator():
    logits = randn(8, 50)
    a = sample_next(logits, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (8, 1)


# --- output layer and loss ----------------------------------------------------------------------


def _unfused_ce(hidden, weight, labels):
    logits = hidden.reshape(-1, hidden.size(-1)) @ weight.t()
    return F.cross_entropy(logits.float(), labels.reshape(-1), ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("chunk_rows", [None, 1, 5, 16, 1000])
def test_linear_cross_entropy_equals_cross_entropy_on_the_logits_in_value_and_gradient(chunk_rows):
    hidden, weight = randn(3, 16, 8, seed=1), 0.3 * randn(50, 8, seed=2)
    labels = torch.randint(0, 50, (3, 16), generator=torch.Generator().manual_seed(3))
    labels[0, :5] = -100  # unscored positions, a whole chunk of them for chunk_rows=5
    labels[2, 7] = -100
    grads = []
    for fused in (False, True):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        total = linear_cross_entropy(h, w, labels, chunk_rows) if fused else _unfused_ce(h, w, labels)
        (total / 7.0).backward()  # an upstream factor, as the mean over scored tokens gives
        grads.append((total.detach(), h.grad, w.grad))
    (ref, ref_h, ref_w), (got, got_h, got_w) = grads
    assert got.dtype == torch.float32 and got.ndim == 0
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got_h, ref_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got_w, ref_w, rtol=1e-5, atol=1e-7)
    assert got_h[0, :5].abs().max() == 0  # unscored positions get no gradient


def test_linear_cross_entropy_without_gradients_and_with_nothing_scored():
    hidden, weight = randn(2, 6, 4, seed=4), randn(11, 4, seed=5)
    labels = torch.randint(0, 11, (2, 6), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, labels, 4), _unfused_ce(hidden, weight, labels))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    total = linear_cross_entropy(h, w, torch.full((2, 6), -100), 4)
    total.backward()
    assert total.item() == 0.0 and h.grad.abs().max() == 0 and w.grad.abs().max() == 0


def test_lm_head_gives_logits_or_the_summed_loss():
    head = LMHead(8, 30, bias=False)
    x = randn(2, 5, 8, seed=7)
    labels = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(head(x), x @ head.weight.t())
    torch.testing.assert_close(head(x, labels=labels), _unfused_ce(x, head.weight, labels))
    with pytest.raises(ValueError, match="without bias"):
        LMHead(8, 30, bias=True)(x, labels=labels)
