"""T5 ↔ Hugging Face ``T5ForConditionalGeneration``.

Our fused projections split into T5's separate ones (self-attention ``qkv`` → ``q``, ``k``, ``v``;
cross-attention ``kv`` → ``k``, ``v``), the stack-level relative position bias lives in each stack's
first self-attention layer, and the one shared embedding appears under all four names Hugging Face
ties together (``shared``, both ``embed_tokens`` and ``lm_head``).

Only the tied model exports: in transformers 5.x ``T5ForConditionalGeneration`` always ties
``lm_head`` to the shared embedding (``tie_word_embeddings=False`` in a T5 config now only turns
off the ``d_model**-0.5`` output rescaling), so a model with its own ``lm_head`` has no equivalent,
and neither has a tied-but-unscaled Hugging Face model here.

Known transformers 5.24 limitation (not ours; the logits match): its cached ``generate`` sizes the
decoder cache by ``num_layers`` and fails with an IndexError when ``num_decoder_layers`` is larger;
``generate(..., use_cache=False)`` works.
"""

from __future__ import annotations

import torch
import transformers

from tokenmill.training.models.t5 import T5Config

HF_ARCHITECTURE = "T5ForConditionalGeneration"

# our activation → T5's feed_forward_proj ("gated-gelu" is the tanh approximation, gelu_new, in both)
_FEED_FORWARD = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "gated-gelu": "gated-gelu",
    "gated-silu": "gated-silu",
}
# (is_gated_act, dense_act_fn) of a Hugging Face config → our activation
_ACTIVATION = {
    (False, "relu"): "relu",
    (False, "gelu"): "gelu",
    (False, "gelu_new"): "gelu_tanh",
    (False, "gelu_pytorch_tanh"): "gelu_tanh",
    (True, "gelu_new"): "gated-gelu",
    (True, "gelu_pytorch_tanh"): "gated-gelu",
    (True, "silu"): "gated-silu",
    (True, "swish"): "gated-silu",
}


def hf_config(cfg: T5Config, specials: dict[str, int]) -> transformers.T5Config:
    """The Hugging Face config of ``cfg``; ValueError when it has no exact equivalent."""
    if cfg.position != "relative":
        raise ValueError(f"T5 position {cfg.position!r} has no Hugging Face T5 equivalent (relative only)")
    if not cfg.tie_embeddings:
        raise ValueError(
            "T5 with tie_embeddings=False (a separate lm_head) has no exact Hugging Face equivalent: "
            "transformers 5.x's T5ForConditionalGeneration always ties lm_head to the shared embedding"
        )
    if cfg.activation not in _FEED_FORWARD:
        raise ValueError(f"T5 activation {cfg.activation!r} has no Hugging Face T5 feed_forward_proj")
    if specials["pad"] != cfg.pad_id:
        raise ValueError(
            f"specials['pad'] = {specials['pad']} differs from the model's pad/decoder start id "
            f"cfg.pad_id = {cfg.pad_id}"
        )
    return transformers.T5Config(
        vocab_size=cfg.vocab_size,
        d_model=cfg.n_embd,
        d_kv=cfg.d_head,
        d_ff=cfg.d_ff or 4 * cfg.n_embd,
        num_layers=cfg.n_layer,
        num_decoder_layers=cfg.n_decoder_layer or cfg.n_layer,
        num_heads=cfg.n_head,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance,
        dropout_rate=cfg.dropout,
        layer_norm_epsilon=cfg.norm_eps,
        feed_forward_proj=_FEED_FORWARD[cfg.activation],
        tie_word_embeddings=True,
        pad_token_id=cfg.pad_id,
        decoder_start_token_id=cfg.pad_id,
        eos_token_id=specials["eot"],
        n_positions=cfg.block_size,
        architectures=[HF_ARCHITECTURE],
    )


def _plan(cfg: T5Config) -> list[tuple[str, list[str]]]:
    """``(our key, [Hugging Face keys])``; several HF keys are stacked along dim 0 into one fused tensor."""
    ff = ["wi_0", "wi_1"] if cfg.activation.startswith("gated") else ["wi"]
    plan = []
    for stack in ("encoder", "decoder"):  # the bias lives in the first layer's self-attention in HF
        plan += [
            (
                f"{stack}.rel_bias.embedding.weight",
                [f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
            ),
            (f"{stack}.ln_f.weight", [f"{stack}.final_layer_norm.weight"]),
        ]
    for stack, n_layer in (("encoder", cfg.n_layer), ("decoder", cfg.n_decoder_layer or cfg.n_layer)):
        for i in range(n_layer):
            ours, hf = f"{stack}.blocks.{i}", f"{stack}.block.{i}.layer"
            attn = f"{hf}.0.SelfAttention"
            plan += [
                (f"{ours}.ln_1.weight", [f"{hf}.0.layer_norm.weight"]),
                (f"{ours}.attn.qkv.weight", [f"{attn}.q.weight", f"{attn}.k.weight", f"{attn}.v.weight"]),
                (f"{ours}.attn.out.weight", [f"{attn}.o.weight"]),
            ]
            mlp = 1
            if stack == "decoder":
                cross, mlp = f"{hf}.1.EncDecAttention", 2
                plan += [
                    (f"{ours}.ln_cross.weight", [f"{hf}.1.layer_norm.weight"]),
                    (f"{ours}.cross.q.weight", [f"{cross}.q.weight"]),
                    (f"{ours}.cross.kv.weight", [f"{cross}.k.weight", f"{cross}.v.weight"]),
                    (f"{ours}.cross.out.weight", [f"{cross}.o.weight"]),
                ]
            dense = f"{hf}.{mlp}.DenseReluDense"
            plan += [
                (f"{ours}.ln_2.weight", [f"{hf}.{mlp}.layer_norm.weight"]),
                (f"{ours}.mlp.fc.weight", [f"{dense}.{ff[0]}.weight"]),
                (f"{ours}.mlp.proj.weight", [f"{dense}.wo.weight"]),
            ]
            if len(ff) == 2:
                plan.append((f"{ours}.mlp.gate.weight", [f"{dense}.wi_1.weight"]))
    return plan


def to_hf_state(state: dict[str, torch.Tensor], cfg: T5Config) -> dict[str, torch.Tensor]:
    """Our state dict → exactly the keys of ``T5ForConditionalGeneration.state_dict()``."""
    if not cfg.tie_embeddings:
        hf_config(cfg, {"pad": cfg.pad_id, "eot": 0})  # raises with the reason
    out = {}
    for ours, hf_keys in _plan(cfg):
        for key, part in zip(hf_keys, state[ours].chunk(len(hf_keys), dim=0)):
            out[key] = part.clone()
    embedding = state["wte.weight"]
    for key in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        out[key] = embedding  # one tensor under every tied name, as Hugging Face's own state_dict has it
    return out


def from_hf(
    hf_config: transformers.PretrainedConfig, hf_state: dict[str, torch.Tensor]
) -> tuple[T5Config, dict[str, torch.Tensor]]:
    """A Hugging Face T5 config and state dict → ``(T5Config, our state dict)``; ValueError naming
    the setting when the model is not an exact match."""
    if getattr(hf_config, "model_type", None) != "t5":
        raise ValueError(f"model_type {getattr(hf_config, 'model_type', None)!r} is not a T5 model")
    if not getattr(hf_config, "scale_decoder_outputs", True):
        raise ValueError(
            "scale_decoder_outputs=False (tie_word_embeddings=False in a T5 v1.1 config): "
            "our tied T5 always rescales the output by d_model**-0.5"
        )
    activation = _ACTIVATION.get((hf_config.is_gated_act, hf_config.dense_act_fn))
    if activation is None:
        raise ValueError(f"feed_forward_proj {hf_config.feed_forward_proj!r} has no equivalent T5 activation")
    if hf_config.pad_token_id is None:
        raise ValueError("pad_token_id is None: our T5 needs a pad id (also its decoder start id)")
    if hf_config.decoder_start_token_id != hf_config.pad_token_id:
        raise ValueError(
            f"decoder_start_token_id {hf_config.decoder_start_token_id} differs from pad_token_id "
            f"{hf_config.pad_token_id}: our T5 starts decoding with its pad id"
        )
    if "lm_head.weight" in hf_state and not torch.equal(hf_state["lm_head.weight"], hf_state["shared.weight"]):
        raise ValueError("lm_head.weight differs from shared.weight: our T5 ties the output to the shared embedding")
    cfg = T5Config(
        vocab_size=hf_config.vocab_size,
        block_size=getattr(hf_config, "n_positions", None) or 512,
        n_layer=hf_config.num_layers,
        n_decoder_layer=hf_config.num_decoder_layers,
        n_head=hf_config.num_heads,
        d_head=hf_config.d_kv,
        n_embd=hf_config.d_model,
        d_ff=None if hf_config.d_ff == 4 * hf_config.d_model else hf_config.d_ff,
        dropout=hf_config.dropout_rate,
        activation=activation,
        tie_embeddings=True,
        num_buckets=hf_config.relative_attention_num_buckets,
        max_distance=hf_config.relative_attention_max_distance,
        norm_eps=hf_config.layer_norm_epsilon,
        pad_id=hf_config.pad_token_id,
    )
    state = {ours: torch.cat([hf_state[k] for k in hf_keys], dim=0) for ours, hf_keys in _plan(cfg)}
    state["wte.weight"] = state["lm_head.weight"] = hf_state["shared.weight"]
    return cfg, state
