"""Our BERT ↔ transformers' ``BertForPreTraining``: config and weights, both ways, exactly.

Export covers learned positions and sinusoidal ones (the fixed table is written as the learned
``position_embeddings``, which reproduces it exactly); RoPE (the default) and ALiBi have no BERT equivalent.
Only post-LN BERT (``norm="post"``, the original) with NSP on the [CLS] state (``nsp_pool="cls"``) has an
equivalent; the pre-LN default, which compares the segments, does not. The original BERT is
``model.norm=post model.position=learned model.nsp_pool=cls`` (the ``bert-base`` and ``bert-large`` flavours).
``bias=False`` exports zeros for every bias BERT has (a zero bias is no bias), so the HF model
computes the same logits; importing it back gives ``bias=True`` with those zeros. The fused
``qkv`` projection is split into BERT's ``query``/``key``/``value``. HF's ``position_ids`` and
``token_type_ids`` buffers are not persistent, so neither state dict holds them.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, PretrainedConfig

from tokenmill.training.hf._state import ACT_FROM_HF, StateReader
from tokenmill.training.models.bert import BERTConfig
from tokenmill.training.models.layers import sinusoidal_positions

HF_ARCHITECTURE = "BertForPreTraining"

_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# (ours, BertConfig's) for the settings that carry over unchanged, in both directions.
_SAME = [
    ("vocab_size", "vocab_size"),
    ("block_size", "max_position_embeddings"),
    ("n_embd", "hidden_size"),
    ("n_layer", "num_hidden_layers"),
    ("n_head", "num_attention_heads"),
    ("type_vocab_size", "type_vocab_size"),
    ("dropout", "hidden_dropout_prob"),
    ("norm_eps", "layer_norm_eps"),
]
# (ours, HF) for the modules that map one to one; each has a weight and, in HF, a bias.
_EMBED = [("wte", "bert.embeddings.word_embeddings"), ("wtype", "bert.embeddings.token_type_embeddings")]
_TOP = [
    ("ln_emb", "bert.embeddings.LayerNorm"),
    ("pooler", "bert.pooler.dense"),
    ("nsp_head", "cls.seq_relationship"),
    ("mlm_dense", "cls.predictions.transform.dense"),
    ("mlm_ln", "cls.predictions.transform.LayerNorm"),
]
_LAYER = [
    ("attn.out", "attention.output.dense"),
    ("ln_1", "attention.output.LayerNorm"),
    ("mlp.fc", "intermediate.dense"),
    ("mlp.proj", "output.dense"),
    ("ln_2", "output.LayerNorm"),
]
_QKV = ("query", "key", "value")


def _check_exportable(cfg: BERTConfig) -> None:
    """ValueError unless ``cfg`` is the original BERT's shape: post-LN blocks, absolute positions, NSP on [CLS]."""
    fixes = {}  # key -> the value the original BERT has
    if cfg.position not in ("learned", "sinusoidal"):
        fixes["position"] = "learned"
    if cfg.norm != "post":
        fixes["norm"] = "post"
    if cfg.nsp_pool != "cls":
        fixes["nsp_pool"] = "cls"
    if fixes:
        differs = ", ".join(f"{key}={getattr(cfg, key)!r}" for key in fixes)
        verb = "have" if len(fixes) > 1 else "has"
        keys = " ".join(f"model.{key}={value}" for key, value in fixes.items())
        raise ValueError(
            f"BertForPreTraining is the original BERT, post-LN blocks with absolute positions and NSP on [CLS]; "
            f"{differs} {verb} no equivalent (train with {keys} for an exact Hugging Face export)"
        )


def hf_config(cfg: BERTConfig, specials: dict[str, int]) -> BertConfig:
    """The ``BertConfig`` of ``cfg`` (pad id from ``specials``); ValueError when BERT cannot compute the same."""
    _check_exportable(cfg)
    if cfg.activation not in _ACT_TO_HF:
        raise ValueError(f"activation {cfg.activation!r} has no BertForPreTraining equivalent")
    if cfg.n_embd % cfg.n_head:
        raise ValueError(f"n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
    return BertConfig(
        architectures=[HF_ARCHITECTURE],
        **{hf: getattr(cfg, ours) for ours, hf in _SAME},
        intermediate_size=cfg.d_ff or 4 * cfg.n_embd,
        hidden_act=_ACT_TO_HF[cfg.activation],
        attention_probs_dropout_prob=cfg.dropout,  # ours has one dropout rate
        initializer_range=0.02,
        pad_token_id=specials.get("pad", cfg.pad_id),
        tie_word_embeddings=True,
    )


def to_hf_state(state: dict[str, torch.Tensor], cfg: BERTConfig) -> dict[str, torch.Tensor]:
    """Our ``BERT`` state dict → exactly the keys of ``BertForPreTraining.state_dict()``."""
    _check_exportable(cfg)
    ref = state["wte.weight"]

    def bias_of(ours: str, size: int) -> torch.Tensor:
        # bias=False: BERT's bias slots get zeros, which leaves the function unchanged.
        return state.get(f"{ours}.bias", torch.zeros(size, dtype=ref.dtype, device=ref.device))

    out = {}
    for ours, hf in _EMBED:
        out[f"{hf}.weight"] = state[f"{ours}.weight"]
    if cfg.position == "learned":
        out["bert.embeddings.position_embeddings.weight"] = state["wpe.weight"]
    else:
        # The fixed table is a pure function of cfg; as a "learned" table it gives the same embeddings.
        out["bert.embeddings.position_embeddings.weight"] = sinusoidal_positions(cfg.block_size, cfg.n_embd).to(ref)
    for ours, hf in _TOP:
        w = state[f"{ours}.weight"]
        out[f"{hf}.weight"] = w
        out[f"{hf}.bias"] = bias_of(ours, w.size(0))
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        w = state[f"{p}attn.qkv.weight"]  # (3C, C): query rows, then key, then value
        b = bias_of(f"{p}attn.qkv", w.size(0))
        for name, wi, bi in zip(_QKV, w.chunk(3, dim=0), b.chunk(3, dim=0)):
            out[f"{q}attention.self.{name}.weight"], out[f"{q}attention.self.{name}.bias"] = wi, bi
        for ours, hf in _LAYER:
            w = state[f"{p}{ours}.weight"]
            out[f"{q}{hf}.weight"] = w
            out[f"{q}{hf}.bias"] = bias_of(f"{p}{ours}", w.size(0))
    out["cls.predictions.decoder.weight"] = state["wte.weight"]  # tied to the word embeddings
    out["cls.predictions.bias"] = out["cls.predictions.decoder.bias"] = bias_of("lm_head", cfg.vocab_size)
    return out


def from_hf(
    hf_config: PretrainedConfig, hf_state: dict[str, torch.Tensor]
) -> tuple[BERTConfig, dict[str, torch.Tensor]]:
    """A ``BertForPreTraining`` (config, state dict) → our ``(BERTConfig, state dict)``.

    ValueError naming the setting when the HF model computes something our BERT cannot. Dropout
    only matters in training; ours has one rate, taken from ``hidden_dropout_prob``.
    """
    c = hf_config
    if getattr(c, "model_type", "bert") != "bert":
        raise ValueError(f"model_type {c.model_type!r} is not 'bert'")
    if getattr(c, "position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type {c.position_embedding_type!r} is not supported (absolute only)")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        raise ValueError("is_decoder / add_cross_attention BERT (causal or cross-attending) is not supported")
    if not isinstance(c.hidden_act, str) or c.hidden_act not in ACT_FROM_HF:
        raise ValueError(f"hidden_act {c.hidden_act!r} is not supported; use one of {', '.join(ACT_FROM_HF)}")
    cfg = BERTConfig(
        **{ours: getattr(c, hf) for ours, hf in _SAME},
        d_ff=None if c.intermediate_size == 4 * c.hidden_size else c.intermediate_size,
        activation=ACT_FROM_HF[c.hidden_act],
        position="learned",
        norm="post",
        nsp_pool="cls",
        pad_id=c.pad_token_id if c.pad_token_id is not None else BERTConfig.pad_id,
        bias=True,
    )
    hf = {k: v for k, v in hf_state.items() if not k.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))}
    take = StateReader(hf, "HF state")
    wte = take("bert.embeddings.word_embeddings.weight")
    decoder = take("cls.predictions.decoder.weight")
    if not torch.equal(decoder, wte):
        raise ValueError("untied MLM decoder (cls.predictions.decoder.weight != word embeddings) is not supported")
    out_bias = take("cls.predictions.bias")
    if "cls.predictions.decoder.bias" in hf and not torch.equal(take("cls.predictions.decoder.bias"), out_bias):
        raise ValueError("cls.predictions.decoder.bias differs from cls.predictions.bias")

    state = {
        "wte.weight": wte,
        "wpe.weight": take("bert.embeddings.position_embeddings.weight"),
        "wtype.weight": take("bert.embeddings.token_type_embeddings.weight"),
    }
    for ours, hf_name in _TOP:
        state[f"{ours}.weight"], state[f"{ours}.bias"] = take(f"{hf_name}.weight"), take(f"{hf_name}.bias")
    for i in range(cfg.n_layer):
        p, q = f"blocks.{i}.", f"bert.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            state[f"{p}attn.qkv.{kind}"] = torch.cat([take(f"{q}attention.self.{n}.{kind}") for n in _QKV], dim=0)
            for ours, hf_name in _LAYER:
                state[f"{p}{ours}.{kind}"] = take(f"{q}{hf_name}.{kind}")
    state["lm_head.weight"], state["lm_head.bias"] = wte, out_bias
    left = take.unread()
    if left:
        raise ValueError(f"HF state has weights our BERT has no place for: {', '.join(left[:5])}")
    return cfg, state
