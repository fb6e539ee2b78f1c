"""training.models: the GPT family and build_model."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmill.config import ModelConfig
from training.models import FAMILIES, build_model
from training.models.gpt import GPT, GPTConfig

V, T = 64, 16


def tiny(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=32)
    return GPT(GPTConfig(**{**cfg, **kw})).eval()


def tokens(b: int, t: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (b, t), generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_loss_only_with_targets():
    model = tiny()
    idx = tokens(3, 10)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, V)
    assert loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == () and torch.isfinite(loss)


def test_changing_future_tokens_leaves_past_logits_unchanged():
    model = tiny()
    idx = tokens(2, T)
    t = 6
    changed = idx.clone()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_changing_first_token_changes_later_logits():
    model = tiny()
    idx = tokens(1, T)
    changed = idx.clone()
    changed[0, 0] = (changed[0, 0] + 1) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    for pos in range(T):
        assert not torch.allclose(a[0, pos], b[0, pos]), pos


def test_untrained_loss_is_close_to_uniform():
    model = tiny()
    idx = tokens(8, T)
    with torch.no_grad():
        _, loss = model(idx, tokens(8, T, seed=1))
    assert abs(loss.item() - math.log(V)) < 0.3


def test_ignored_targets_do_not_count():
    model = tiny()
    idx, tgt = tokens(2, T), tokens(2, T, seed=1)
    masked = tgt.clone()
    masked[:, ::2] = -100
    with torch.no_grad():
        logits, loss_masked = model(idx, masked)
        keep = masked != -100
        expected = torch.nn.functional.cross_entropy(logits[keep], tgt[keep])
        _, loss_full = model(idx, tgt)
    torch.testing.assert_close(loss_masked, expected)
    assert not torch.isclose(loss_masked, loss_full)


def test_tied_embeddings_share_the_tensor():
    tied = tiny(tie_embeddings=True)
    assert tied.lm_head.weight is tied.wte.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == V * 32


def test_sequence_longer_than_block_size_raises():
    with pytest.raises(ValueError, match="block_size"):
        tiny()(tokens(1, T + 1))


def test_generate_length_and_prompt_preserved():
    model = tiny()
    prompt = tokens(2, 3)
    out = model.generate(prompt, max_new_tokens=5, temperature=0)
    assert out.shape == (2, 8)
    assert torch.equal(out[:, :3], prompt)
    assert int(out.min()) >= 0 and int(out.max()) < V


def test_generate_past_block_size_crops_context():
    out = tiny().generate(tokens(1, T - 2), max_new_tokens=T, temperature=0)
    assert out.shape == (1, 2 * T - 2)


def test_greedy_generation_is_deterministic_and_is_argmax():
    model = tiny()
    prompt = tokens(1, 4)
    a = model.generate(prompt, max_new_tokens=6, temperature=0)
    b = model.generate(prompt, max_new_tokens=6, temperature=0)
    assert torch.equal(a, b)
    with torch.no_grad():
        first = model(prompt)[0][0, -1].argmax()
    assert a[0, 4] == first


def test_sampling_is_reproducible_with_a_generator_and_top_k_one_is_greedy():
    model = tiny()
    prompt = tokens(1, 4)
    a = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(5))
    b = model.generate(prompt, 8, temperature=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    top1 = model.generate(prompt, 8, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(9))
    assert torch.equal(top1, model.generate(prompt, 8, temperature=0))


def test_a_few_steps_on_a_repeated_batch_reduce_the_loss():
    model = tiny().train()
    idx, tgt = tokens(4, T), tokens(4, T, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        _, loss = model(idx, tgt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_build_model_from_config():
    model = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, tie_embeddings=False), 40)
    assert isinstance(model, GPT)
    assert model.cfg.vocab_size == 40 and model.cfg.block_size == 8 and model.cfg.n_layer == 1
    assert model.cfg.tie_embeddings is False
    assert len(model.blocks) == 1


def test_build_model_rejects_unknown_family():
    with pytest.raises(ValueError, match="bert") as e:
        build_model(ModelConfig(family="bert"), 40)
    assert all(f in str(e.value) for f in FAMILIES)
