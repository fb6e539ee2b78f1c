"""tokenmill.training.hf.gpt2: our GPT ↔ transformers' GPT2LMHeadModel, checked on logits and generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, GPT2Config, GPT2LMHeadModel

from tokenmill.training.hf import gpt2
from tokenmill.training.models.gpt import GPT, GPTConfig

V, T = 64, 16
SPECIALS = {"eot": 0, "pad": 1}
TOL = 1e-4


def perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random values in every parameter (biases and LayerNorm weights too, which start at 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # a tied tensor is listed once
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def ours(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**dict(vocab_size=V, block_size=T, n_layer=2, n_head=4, n_embd=32, d_ff=48), **kw})
    return perturb(GPT(cfg), seed + 100)


def exported(model: GPT, attn_implementation: str | None = None) -> GPT2LMHeadModel:
    config = gpt2.hf_config(model.cfg, SPECIALS)
    if attn_implementation:
        config._attn_implementation = attn_implementation
    hf = GPT2LMHeadModel(config)
    hf.load_state_dict(gpt2.to_hf_state(model.state_dict(), model.cfg), strict=True)
    return hf.eval()


def hf_random(seed: int = 0, **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        **{
            **dict(
                vocab_size=V,
                n_positions=T,
                n_embd=32,
                n_layer=2,
                n_head=4,
                n_inner=48,
                bos_token_id=0,
                eos_token_id=0,
                pad_token_id=1,
            ),
            **kw,
        }
    )
    return perturb(GPT2LMHeadModel(config), seed + 100)


def imported(hf: GPT2LMHeadModel) -> GPT:
    cfg, state = gpt2.from_hf(hf.config, hf.state_dict())
    model = GPT(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of 12 tokens; the second is 8 real tokens then 4 pads (right padding)."""
    ids = torch.randint(2, V, (2, 12), generator=torch.Generator().manual_seed(7))
    mask = torch.ones(2, 12, dtype=torch.long)
    ids[1, 8:], mask[1, 8:] = SPECIALS["pad"], 0
    return ids, mask


def max_diff_on_real_positions(a: GPT, b: GPT2LMHeadModel) -> float:
    ids, mask = padded_batch()
    with torch.no_grad():
        mine = a(ids, attention_mask=mask)
        theirs = b(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert torch.isfinite(mine[real]).all() and torch.isfinite(theirs[real]).all()
    return (mine[real] - theirs[real]).abs().max().item()


# --- export -----------------------------------------------------------------------------------


@pytest.mark.parametrize("position", ("learned", "sinusoidal"))
@pytest.mark.parametrize("tie", (True, False))
@pytest.mark.parametrize("bias", (True, False))
def test_exported_model_computes_the_same_logits(position, tie, bias):
    model = ours(position=position, tie_embeddings=tie, bias=bias)
    hf = exported(model)
    assert max_diff_on_real_positions(model, hf) <= TOL
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == tie


@pytest.mark.parametrize("activation", ("gelu", "relu"))
@pytest.mark.parametrize("attn_implementation", ("eager", "sdpa"))
def test_exported_activations_and_attention_implementations(activation, attn_implementation):
    model = ours(activation=activation, d_ff=None, norm_eps=1e-6)
    hf = exported(model, attn_implementation)
    assert hf.config._attn_implementation == attn_implementation
    assert max_diff_on_real_positions(model, hf) <= TOL


def test_hf_config_fields():
    cfg = GPTConfig(
        vocab_size=V,
        block_size=T,
        n_layer=3,
        n_head=4,
        n_embd=32,
        d_ff=80,
        dropout=0.1,
        norm_eps=1e-6,
        tie_embeddings=False,
    )
    c = gpt2.hf_config(cfg, {"eot": 5, "pad": 6, "cls": 7})
    assert (c.n_positions, c.n_embd, c.n_layer, c.n_head, c.n_inner) == (T, 32, 3, 4, 80)
    assert c.activation_function == "gelu_new" and c.layer_norm_epsilon == 1e-6
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (5, 5, 6)
    assert c.tie_word_embeddings is False and c.architectures == ["GPT2LMHeadModel"]
    assert c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.1
    assert gpt2.HF_ARCHITECTURE == "GPT2LMHeadModel"


def test_state_keys_are_exactly_gpt2s_and_conv1d_weights_are_transposed():
    model = ours(bias=False)
    state = gpt2.to_hf_state(model.state_dict(), model.cfg)
    reference = GPT2LMHeadModel(gpt2.hf_config(model.cfg, SPECIALS)).state_dict()
    assert list(state) == list(reference)
    for k in reference:
        assert state[k].shape == reference[k].shape, k
    assert torch.equal(state["transformer.h.0.attn.c_attn.weight"], model.blocks[0].attn.qkv.weight.t())
    assert torch.equal(state["transformer.h.1.mlp.c_fc.weight"], model.blocks[1].mlp.fc.weight.t())
    assert state["transformer.h.1.ln_2.bias"].abs().max() == 0  # bias=False: zeros
    assert state["lm_head.weight"] is state["transformer.wte.weight"]


def test_sinusoidal_exports_its_table_as_wpe():
    from tokenmill.training.models.layers import sinusoidal_positions

    model = ours(position="sinusoidal")
    state = gpt2.to_hf_state(model.state_dict(), model.cfg)
    assert torch.equal(state["transformer.wpe.weight"], sinusoidal_positions(T, 32))
    assert torch.equal(state["transformer.wpe.weight"], model.wpe_table)


@pytest.mark.parametrize("position", ("rope", "alibi"))
def test_rope_and_alibi_have_no_gpt2_equivalent(position):
    model = ours(position=position)
    with pytest.raises(ValueError, match="learned absolute positions"):
        gpt2.hf_config(model.cfg, SPECIALS)
    with pytest.raises(ValueError, match=position):
        gpt2.to_hf_state(model.state_dict(), model.cfg)


def test_gated_activations_have_no_gpt2_equivalent():
    with pytest.raises(ValueError, match="gated-silu"):
        gpt2.hf_config(
            GPTConfig(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16, activation="gated-silu"), SPECIALS
        )


# --- import -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", (True, False))
@pytest.mark.parametrize("activation", ("gelu_new", "gelu", "gelu_pytorch_tanh"))
def test_imported_model_computes_the_same_logits(tie, activation):
    hf = hf_random(tie_word_embeddings=tie, activation_function=activation)
    model = imported(hf)
    assert model.cfg.bias is True and model.cfg.position == "learned"
    assert model.cfg.tie_embeddings == tie and model.cfg.d_ff == 48 and model.cfg.block_size == T
    assert max_diff_on_real_positions(model, hf) <= TOL


def test_reorder_and_upcast_attn_is_the_same_function():
    hf = hf_random(reorder_and_upcast_attn=True)
    hf.config._attn_implementation = "eager"  # the only implementation that reads the flag
    assert max_diff_on_real_positions(imported(hf), hf) <= TOL


@pytest.mark.parametrize(
    "setting, match",
    [
        (dict(activation_function="quick_gelu"), "quick_gelu"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        (dict(scale_attn_weights=False), "scale_attn_weights"),
        (dict(add_cross_attention=True), "add_cross_attention"),
    ],
)
def test_unsupported_gpt2_settings_raise(setting, match):
    hf = hf_random(**setting)
    with pytest.raises(ValueError, match=match):
        gpt2.from_hf(hf.config, hf.state_dict())


def test_other_configs_and_unknown_weights_raise():
    with pytest.raises(ValueError, match="gpt2"):
        gpt2.from_hf(BertConfig(), {})
    hf = hf_random()
    state = dict(hf.state_dict())
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, T, T)  # an old checkpoint's mask buffer: ignored
    gpt2.from_hf(hf.config, state)
    state["transformer.h.0.extra.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="extra"):
        gpt2.from_hf(hf.config, state)
    del state["transformer.h.1.ln_1.bias"]
    with pytest.raises(ValueError, match="ln_1.bias"):
        gpt2.from_hf(hf.config, state)


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", (True, False))
def test_round_trip_is_exact(tie):
    model = ours(bias=True, tie_embeddings=tie)
    hf = exported(model)
    cfg, state = gpt2.from_hf(hf.config, hf.state_dict())
    assert cfg == model.cfg
    original = model.state_dict()
    assert set(state) == set(original)
    for k in original:
        assert torch.equal(state[k], original[k]), k


def test_round_trip_of_bias_free_and_sinusoidal_models_keeps_the_function():
    model = ours(bias=False, position="sinusoidal")
    cfg, state = gpt2.from_hf(gpt2.hf_config(model.cfg, SPECIALS), gpt2.to_hf_state(model.state_dict(), model.cfg))
    assert cfg == dataclasses.replace(model.cfg, bias=True, position="learned")
    assert all(state[k].abs().max() == 0 for k in state if k.endswith(".bias"))
    back = GPT(cfg)
    back.load_state_dict(state, strict=True)
    ids, mask = padded_batch()
    with torch.no_grad():
        assert torch.equal(back.eval()(ids, attention_mask=mask), model(ids, attention_mask=mask))


@pytest.mark.parametrize("tie", (True, False))
def test_save_pretrained_loads_with_transformers_alone(tmp_path, tie):
    model = ours(tie_embeddings=tie, bias=False)
    exported(model).save_pretrained(tmp_path)
    for cls in (GPT2LMHeadModel, AutoModelForCausalLM):
        loaded = cls.from_pretrained(tmp_path, local_files_only=True).eval()
        assert type(loaded) is GPT2LMHeadModel
        assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == tie
        assert max_diff_on_real_positions(model, loaded) <= TOL
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


# --- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", (True, False))
@pytest.mark.parametrize("position", ("learned", "sinusoidal"))
def test_greedy_generation_matches_transformers(position, use_cache):
    model = ours(position=position)
    hf = exported(model)
    for seed in range(3):
        prompt = torch.randint(2, V, (1, 4), generator=torch.Generator().manual_seed(seed))
        n = T - 4
        mine = model.generate(prompt, n, temperature=0, use_cache=use_cache, eos_id=SPECIALS["eot"])
        theirs = hf.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            num_beams=1,
            max_new_tokens=n,
            pad_token_id=SPECIALS["pad"],
        )
        assert torch.equal(mine, theirs), (seed, mine, theirs)
