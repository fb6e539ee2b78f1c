"""Transformer ↔ Hugging Face ``MarianMTModel``.

Marian is the original Transformer as ``transformer.py`` builds it: post-LN layers with no final or
embedding LayerNorm, token embeddings × sqrt(d_model) (``scale_embedding``), fixed sinusoidal
positions counted from 0 and laid out [sin | cos] (its ``embed_positions`` tables are
``layers.sinusoidal_positions``), one embedding shared by source and target (and the output when
tied), and ``final_logits_bias``, which is our ``lm_head.bias``. The decoder starts with the pad id.
With ``tie_word_embeddings=False`` transformers 5.x unties ``lm_head`` and also both stacks'
``embed_tokens`` from ``model.shared``: an untied model exports the one embedding under all three
names, and imports only when encoder and decoder embeddings are equal.

Marian always has biases and LayerNorms with eps 1e-5: a ``bias=False`` model exports with zero
biases (the same function) and comes back as ``bias=True``. Learned positions, gated MLPs, another
``norm_eps``, and separate source/target vocabularies have no equivalent.
"""

from __future__ import annotations

import torch
import transformers

from tokenmill.training.models.layers import sinusoidal_positions
from tokenmill.training.models.transformer import TransformerConfig

HF_ARCHITECTURE = "MarianMTModel"

_ACT_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}
_ACT_FROM_HF = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_MARIAN_EPS = 1e-5  # Marian's nn.LayerNorm(d_model) default; not configurable


def hf_config(cfg: TransformerConfig, specials: dict[str, int]) -> transformers.MarianConfig:
    """The Hugging Face config of ``cfg``; ValueError when it has no exact equivalent."""
    if cfg.position != "sinusoidal":
        raise ValueError(f"Transformer position {cfg.position!r} has no Marian equivalent (fixed sinusoidal only)")
    if cfg.activation not in _ACT_TO_HF:
        raise ValueError(
            f"Transformer activation {cfg.activation!r} has no Marian equivalent (one of {', '.join(_ACT_TO_HF)})"
        )
    if cfg.norm_eps != _MARIAN_EPS:
        raise ValueError(f"norm_eps {cfg.norm_eps} has no Marian equivalent: its LayerNorms use eps {_MARIAN_EPS}")
    if specials["pad"] != cfg.pad_id:
        raise ValueError(
            f"specials['pad'] = {specials['pad']} differs from the model's pad/decoder start id "
            f"cfg.pad_id = {cfg.pad_id}"
        )
    d_ff = cfg.d_ff or 4 * cfg.n_embd
    n_decoder_layer = cfg.n_decoder_layer or cfg.n_layer
    return transformers.MarianConfig(
        vocab_size=cfg.vocab_size,
        decoder_vocab_size=cfg.vocab_size,
        max_position_embeddings=cfg.block_size,
        d_model=cfg.n_embd,
        encoder_layers=cfg.n_layer,
        decoder_layers=n_decoder_layer,
        encoder_attention_heads=cfg.n_head,
        decoder_attention_heads=cfg.n_head,
        encoder_ffn_dim=d_ff,
        decoder_ffn_dim=d_ff,
        activation_function=_ACT_TO_HF[cfg.activation],
        dropout=cfg.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=cfg.scale_embedding,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=cfg.pad_id,
        decoder_start_token_id=cfg.pad_id,
        eos_token_id=specials["eot"],
        bos_token_id=None,
        forced_eos_token_id=None,  # our generate() forces nothing
        architectures=[HF_ARCHITECTURE],
    )


def _plan(n_layer: int, n_decoder_layer: int) -> list[tuple[str, list[str]]]:
    """``(our prefix, [Hugging Face prefixes])`` of every Linear/LayerNorm (``.weight`` and ``.bias``);
    several HF tensors are stacked along dim 0 into one fused projection."""
    plan = []
    for stack, n in (("encoder", n_layer), ("decoder", n_decoder_layer)):
        for i in range(n):
            ours, hf = f"{stack}.blocks.{i}", f"model.{stack}.layers.{i}"
            attn = f"{hf}.self_attn"
            plan += [
                (f"{ours}.attn.qkv", [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"]),
                (f"{ours}.attn.out", [f"{attn}.out_proj"]),
                (f"{ours}.ln_1", [f"{hf}.self_attn_layer_norm"]),
            ]
            if stack == "decoder":
                plan += [
                    (f"{ours}.cross.q", [f"{hf}.encoder_attn.q_proj"]),
                    (f"{ours}.cross.kv", [f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"]),
                    (f"{ours}.cross.out", [f"{hf}.encoder_attn.out_proj"]),
                    (f"{ours}.ln_cross", [f"{hf}.encoder_attn_layer_norm"]),
                ]
            plan += [
                (f"{ours}.mlp.fc", [f"{hf}.fc1"]),
                (f"{ours}.mlp.proj", [f"{hf}.fc2"]),
                (f"{ours}.ln_2", [f"{hf}.final_layer_norm"]),
            ]
    return plan


def to_hf_state(state: dict[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """Our state dict → exactly the keys of ``MarianMTModel.state_dict()``."""
    hf_config(cfg, {"pad": cfg.pad_id, "eot": 0})  # raises when there is no equivalent
    out = {}
    for ours, hf_prefixes in _plan(cfg.n_layer, cfg.n_decoder_layer or cfg.n_layer):
        weight = state[f"{ours}.weight"]
        bias = state.get(f"{ours}.bias")
        if bias is None:  # bias=False: Marian's zero biases compute the same thing
            bias = torch.zeros(weight.size(0), dtype=weight.dtype, device=weight.device)
        for name, t in (("weight", weight), ("bias", bias)):
            for prefix, part in zip(hf_prefixes, t.chunk(len(hf_prefixes), dim=0)):
                out[f"{prefix}.{name}"] = part.clone()
    embedding = state["wte.weight"]
    for key in ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
        out[key] = embedding  # one tensor under every tied name, as Hugging Face's own state_dict has it
    out["lm_head.weight"] = state.get("lm_head.weight", embedding)
    positions = sinusoidal_positions(cfg.block_size, cfg.n_embd).to(embedding)
    out["model.encoder.embed_positions.weight"] = positions
    out["model.decoder.embed_positions.weight"] = positions.clone()
    bias = state.get("lm_head.bias")
    out["final_logits_bias"] = (bias if bias is not None else embedding.new_zeros(cfg.vocab_size))[None].clone()
    return out


def from_hf(
    hf_config: transformers.PretrainedConfig, hf_state: dict[str, torch.Tensor]
) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    """A Hugging Face Marian config and state dict → ``(TransformerConfig, our state dict)``; ValueError
    naming the setting when the model is not an exact match."""
    c = hf_config
    if getattr(c, "model_type", None) != "marian":
        raise ValueError(f"model_type {getattr(c, 'model_type', None)!r} is not a Marian model")
    mismatches = {
        "share_encoder_decoder_embeddings": (c.share_encoder_decoder_embeddings, True),
        "decoder_vocab_size": (c.decoder_vocab_size, c.vocab_size),
        "decoder_attention_heads": (c.decoder_attention_heads, c.encoder_attention_heads),
        "decoder_ffn_dim": (c.decoder_ffn_dim, c.encoder_ffn_dim),
        "decoder_start_token_id": (c.decoder_start_token_id, c.pad_token_id),  # ours starts with its pad id
        "attention_dropout": (c.attention_dropout, 0.0),  # ours drops sub-layer outputs only, as the paper
        "activation_dropout": (c.activation_dropout, 0.0),
        "encoder_layerdrop": (c.encoder_layerdrop, 0.0),
        "decoder_layerdrop": (c.decoder_layerdrop, 0.0),
    }
    for name, (got, want) in mismatches.items():
        if got != want:
            raise ValueError(f"Marian {name}={got!r} has no Transformer equivalent (needs {want!r})")
    if c.activation_function not in _ACT_FROM_HF:
        raise ValueError(f"Marian activation_function {c.activation_function!r} has no Transformer equivalent")
    if c.pad_token_id is None:
        raise ValueError("Marian pad_token_id is None: our Transformer needs a pad id (also its decoder start id)")
    cfg = TransformerConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.encoder_layers,
        n_decoder_layer=c.decoder_layers,
        n_head=c.encoder_attention_heads,
        n_embd=c.d_model,
        d_ff=None if c.encoder_ffn_dim == 4 * c.d_model else c.encoder_ffn_dim,
        dropout=c.dropout,
        activation=_ACT_FROM_HF[c.activation_function],
        position="sinusoidal",
        norm_eps=_MARIAN_EPS,
        tie_embeddings=c.tie_word_embeddings,
        scale_embedding=c.scale_embedding,
        bias=True,
        pad_id=c.pad_token_id,
    )
    state = {}
    for ours, hf_prefixes in _plan(cfg.n_layer, cfg.n_decoder_layer):
        for name in ("weight", "bias"):
            state[f"{ours}.{name}"] = torch.cat([hf_state[f"{p}.{name}"] for p in hf_prefixes], dim=0)
    # Untied (tie_word_embeddings=False), transformers 5.x also unties both embed_tokens from model.shared
    # (which then goes unused); ours has one embedding for source and target, so they must agree.
    source = hf_state.get("model.encoder.embed_tokens.weight", hf_state["model.shared.weight"])
    target = hf_state.get("model.decoder.embed_tokens.weight", source)
    if not torch.equal(source, target):
        raise ValueError(
            "Marian's encoder and decoder embed_tokens differ (tie_word_embeddings=False unties them "
            "in transformers 5.x): our Transformer shares one token embedding"
        )
    state["wte.weight"] = source
    state["lm_head.weight"] = source if cfg.tie_embeddings else hf_state["lm_head.weight"]
    state["lm_head.bias"] = hf_state["final_logits_bias"][0].clone()
    for key in ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"):
        table = hf_state.get(key)  # Marian's fixed table; a state that disagrees is not the model we build
        if table is not None and not torch.allclose(table.float(), sinusoidal_positions(*table.shape), atol=1e-6):
            raise ValueError(f"{key} is not the fixed sinusoidal table our Transformer uses")
    return cfg, state
