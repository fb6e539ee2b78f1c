"""Our GPT ↔ transformers' ``GPT2LMHeadModel``: config and weights, both ways, exactly.

GPT-2 is the same pre-LN decoder (LayerNorm → attention → residual, LayerNorm → MLP → residual,
final LayerNorm, tied or untied head) with learned absolute positions, so:

- ``position="learned"`` exports as is; ``"sinusoidal"`` exports its fixed table as the learned
  ``wpe`` (a pure function of the config, so the HF model computes the same thing); RoPE and ALiBi
  have no GPT-2 equivalent and raise ``ValueError``.
- GPT-2 always has biases, in every projection and LayerNorm. ``bias=False`` exports zeros there
  (a zero bias is no bias: same logits); importing such a model gives ``bias=True`` with zeros.
- GPT-2's projections are ``Conv1D`` modules whose weight is stored ``(in, out)``: the transpose of
  ``nn.Linear``'s ``(out, in)``. The fused ``c_attn`` holds q, k, v in that order, like our ``qkv``.
- Our ``gelu_tanh`` is GPT-2's ``gelu_new`` (the same tanh formula, written out instead of
  ``F.gelu(approximate="tanh")``: equal up to float rounding); ``gelu`` and ``relu`` keep their names.
- transformers 5.x keeps no ``attn.bias``/``masked_bias`` buffers in the state dict (the causal mask
  is built per call), so ``state_dict()`` holds exactly the parameters; ``lm_head.weight`` is listed
  even when tied (it is then the same tensor as ``transformer.wte.weight``).
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, PretrainedConfig

from tokenmill.training.hf._state import ACT_FROM_HF, StateReader
from tokenmill.training.models.gpt import GPTConfig
from tokenmill.training.models.layers import sinusoidal_positions

HF_ARCHITECTURE = "GPT2LMHeadModel"

_ACT_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# (ours, GPT2Config's) for the settings that carry over unchanged, in both directions.
_SAME = [
    ("vocab_size", "vocab_size"),
    ("block_size", "n_positions"),
    ("n_embd", "n_embd"),
    ("n_layer", "n_layer"),
    ("n_head", "n_head"),
    ("d_ff", "n_inner"),  # d_ff=None is 4 × n_embd, and so is n_inner=None
    ("norm_eps", "layer_norm_epsilon"),
]
# (ours, HF, is_conv1d) for each block's modules: Conv1D weights are stored transposed.
_LAYER = [
    ("ln_1", "ln_1", False),
    ("attn.qkv", "attn.c_attn", True),
    ("attn.out", "attn.c_proj", True),
    ("ln_2", "ln_2", False),
    ("mlp.fc", "mlp.c_fc", True),
    ("mlp.proj", "mlp.c_proj", True),
]
# Buffers that older transformers versions kept in GPT-2 state dicts; they hold no weights.
_LEGACY_BUFFERS = (".attn.bias", ".attn.masked_bias")


def _check_exportable(cfg: GPTConfig) -> None:
    if cfg.position not in ("learned", "sinusoidal"):
        raise ValueError(
            f"GPT2LMHeadModel has only learned absolute positions (wpe); position={cfg.position!r} "
            "has no equivalent there: export a model trained with learned or sinusoidal positions"
        )
    if cfg.activation not in _ACT_TO_HF:
        raise ValueError(
            f"activation {cfg.activation!r} has no GPT2LMHeadModel equivalent (supported: {', '.join(_ACT_TO_HF)})"
        )
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")


def hf_config(cfg: GPTConfig, specials: dict[str, int]) -> GPT2Config:
    """The ``GPT2Config`` of ``cfg``; ValueError when ``GPT2LMHeadModel`` cannot compute the same function."""
    _check_exportable(cfg)
    eot = specials.get("eot")
    return GPT2Config(
        architectures=[HF_ARCHITECTURE],
        **{hf: getattr(cfg, ours) for ours, hf in _SAME},
        activation_function=_ACT_TO_HF[cfg.activation],
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        initializer_range=0.02,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=specials.get("pad"),
        tie_word_embeddings=cfg.tie_embeddings,
    )


def to_hf_state(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our ``GPT`` state dict → exactly the keys of ``GPT2LMHeadModel.state_dict()``."""
    _check_exportable(cfg)
    wte = state["wte.weight"]

    def zeros(size: int) -> torch.Tensor:
        return torch.zeros(size, dtype=wte.dtype, device=wte.device)

    out = {"transformer.wte.weight": wte}
    if cfg.position == "learned":
        out["transformer.wpe.weight"] = state["wpe.weight"]
    else:  # the fixed table, written as the learned one: same embeddings
        out["transformer.wpe.weight"] = sinusoidal_positions(cfg.block_size, cfg.n_embd).to(wte)
    for i in range(cfg.n_layer):
        for ours, hf, conv in _LAYER:
            weight = state[f"blocks.{i}.{ours}.weight"]
            out[f"transformer.h.{i}.{hf}.weight"] = weight.t().contiguous() if conv else weight
            # bias=False: GPT-2's bias slots get zeros, which leaves the function unchanged.
            out[f"transformer.h.{i}.{hf}.bias"] = state.get(f"blocks.{i}.{ours}.bias", zeros(weight.size(0)))
    out["transformer.ln_f.weight"] = state["ln_f.weight"]
    out["transformer.ln_f.bias"] = state.get("ln_f.bias", zeros(cfg.n_embd))
    # Tied: the same tensor as wte (HF ties them again on load and saves it once).
    out["lm_head.weight"] = wte if cfg.tie_embeddings else state["lm_head.weight"]
    return out


def from_hf(
    hf_config: PretrainedConfig, hf_state: dict[str, torch.Tensor]
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A ``GPT2LMHeadModel``'s config and state dict → our ``(GPTConfig, state)``; ValueError when not exact."""
    c = hf_config
    if getattr(c, "model_type", None) != "gpt2":
        raise ValueError(f"expected a GPT-2 config (model_type 'gpt2'), got {getattr(c, 'model_type', None)!r}")
    if c.activation_function not in ACT_FROM_HF:
        raise ValueError(
            f"activation_function {c.activation_function!r} has no tokenmill equivalent "
            f"(supported: {', '.join(ACT_FROM_HF)})"
        )
    if not getattr(c, "scale_attn_weights", True):
        raise ValueError("scale_attn_weights=False (no 1/sqrt(head_dim) scaling) is not supported")
    if getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise ValueError("scale_attn_by_inverse_layer_idx=True (attention scaled by 1/(layer+1)) is not supported")
    if getattr(c, "add_cross_attention", False):
        raise ValueError("add_cross_attention=True (GPT-2 as a decoder with cross-attention) is not supported")
    # reorder_and_upcast_attn only changes the order and precision of the same arithmetic: accepted.
    if c.n_embd % c.n_head:
        raise ValueError(f"n_embd {c.n_embd} is not divisible by n_head {c.n_head}")
    tied = bool(getattr(c, "tie_word_embeddings", True))
    cfg = GPTConfig(
        **{ours: getattr(c, hf) for ours, hf in _SAME},
        dropout=float(c.resid_pdrop),
        bias=True,
        tie_embeddings=tied,
        position="learned",
        activation=ACT_FROM_HF[c.activation_function],
    )

    hf_state = {k: v for k, v in hf_state.items() if not k.endswith(_LEGACY_BUFFERS)}
    take = StateReader(hf_state, "GPT-2 state dict")
    wte = take("transformer.wte.weight")
    state = {"wte.weight": wte, "wpe.weight": take("transformer.wpe.weight")}
    for i in range(c.n_layer):
        for ours, hf, conv in _LAYER:
            weight = take(f"transformer.h.{i}.{hf}.weight")
            state[f"blocks.{i}.{ours}.weight"] = weight.t().contiguous() if conv else weight
            state[f"blocks.{i}.{ours}.bias"] = take(f"transformer.h.{i}.{hf}.bias")
    state["ln_f.weight"] = take("transformer.ln_f.weight")
    state["ln_f.bias"] = take("transformer.ln_f.bias")
    if tied:
        take.skip("lm_head.weight")  # the same tensor as wte when present
        state["lm_head.weight"] = wte
    else:
        state["lm_head.weight"] = take("lm_head.weight")
    extra = take.unread()
    if extra:
        raise ValueError(
            f"GPT-2 weights tokenmill has no place for: {', '.join(extra[:5])}"
            + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        )
    return cfg, state
