"""T5 (Raffel et al. 2020): an encoder-decoder trained on span corruption.

Pre-norm blocks with RMSNorm and no biases, no absolute positions: a learned bias per head and
relative-distance bucket, computed once per stack (bidirectional in the encoder, causal in the
decoder) and added to every layer's attention scores, which are not scaled by 1/sqrt(d) (T5 folds
that into its initialisation). One token embedding is shared by encoder and decoder; the tied
output projection rescales by 1/sqrt(d_model) first, as T5 does. ``relu`` is T5 v1.0's MLP,
``gated-gelu`` v1.1's. Forward, decode, caches and generation come from ``EncoderDecoder``; the
Hugging Face equivalent is ``T5ForConditionalGeneration`` (``training/hf/t5.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from tokenmill.training.models.layers import (
    Attention,
    FeedForward,
    RelativePositionBias,
    RMSNorm,
    add_bias,
    padding_bias,
)
from tokenmill.training.models.transformer import EncoderDecoder, cache_length


@dataclass
class T5Config:
    vocab_size: int = 8192
    block_size: int = 128  # encoder input length trained on; bounds generation (relative positions need no table)
    n_layer: int = 4  # encoder layers
    n_decoder_layer: int | None = None  # None: n_layer
    n_head: int = 4
    d_head: int = 64  # T5's d_kv: n_head × d_head need not equal n_embd
    n_embd: int = 256
    d_ff: int | None = None  # None: 4 × n_embd
    dropout: float = 0.1
    activation: str = "relu"  # relu (T5 v1.0) or gated-gelu (v1.1)
    tie_embeddings: bool = True  # tied: logits = (x / sqrt(n_embd)) @ wte; untied: a separate lm_head
    num_buckets: int = 32  # relative-distance buckets per direction pair
    max_distance: int = 128  # distances beyond this share the last bucket
    norm_eps: float = 1e-6
    pad_id: int = 1  # padding id, also the decoder start id
    position: str = "relative"


class Block(nn.Module):
    """Pre-norm layer: ``x + dropout(sublayer(RMSNorm(x)))`` for self-attention, cross-attention
    (decoder only, ``cross=True``) and the MLP."""

    def __init__(self, cfg: T5Config, cross: bool):
        super().__init__()
        C = cfg.n_embd
        self.ln_1 = RMSNorm(C, cfg.norm_eps)
        self.attn = Attention(C, cfg.n_head, cfg.d_head, bias=False, dropout=cfg.dropout, scale=False)
        if cross:
            self.ln_cross = RMSNorm(C, cfg.norm_eps)
            self.cross = Attention(C, cfg.n_head, cfg.d_head, bias=False, dropout=cfg.dropout, cross=True, scale=False)
        self.ln_2 = RMSNorm(C, cfg.norm_eps)
        self.mlp = FeedForward(C, cfg.d_ff or 4 * C, cfg.activation, bias=False, dropout=cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, causal=False, memory=None, memory_bias=None, cache=None, need_weights=False):
        a, self_weights = self.attn(
            self.ln_1(x),
            bias=bias,
            causal=causal,
            cache=cache["self"] if cache is not None else None,
            need_weights=need_weights,
        )
        x = x + self.drop(a)
        cross_weights = None
        if memory is not None:
            a, cross_weights = self.cross(
                self.ln_cross(x),
                memory,
                bias=memory_bias,
                cache=cache["cross"] if cache is not None else None,
                need_weights=need_weights,
            )
            x = x + self.drop(a)
        x = x + self.drop(self.mlp(self.ln_2(x)))
        return x, self_weights, cross_weights


class Stack(nn.Module):
    """An encoder or a decoder: one relative position bias shared by all its layers, the layers, a final norm."""

    def __init__(self, cfg: T5Config, n_layer: int, decoder: bool):
        super().__init__()
        self.rel_bias = RelativePositionBias(
            cfg.n_head, bidirectional=not decoder, num_buckets=cfg.num_buckets, max_distance=cfg.max_distance
        )
        self.blocks = nn.ModuleList(Block(cfg, cross=decoder) for _ in range(n_layer))
        self.ln_f = RMSNorm(cfg.n_embd, cfg.norm_eps)


class T5(EncoderDecoder):
    def __init__(self, cfg: T5Config):
        super().__init__()
        if cfg.position != "relative":
            raise ValueError(f"T5 positions must be relative, got {cfg.position!r}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # shared by encoder, decoder (and the tied output)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Stack(cfg, cfg.n_layer, decoder=False)
        self.decoder = Stack(cfg, cfg.n_decoder_layer or cfg.n_layer, decoder=True)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """T5's initialisation (factor 1): each projection ~ N(0, 1/fan_in), the queries' also carrying
        the 1/sqrt(d_head) that attention leaves out."""
        C, H, D = self.cfg.n_embd, self.cfg.n_head, self.cfg.d_head
        if isinstance(module, Attention):
            if module.cross:
                q, (k, v) = module.q.weight, module.kv.weight.split(H * D)
            else:
                q, k, v = module.qkv.weight.split(H * D)  # views: initialised in place
            nn.init.normal_(q, mean=0.0, std=(C * D) ** -0.5)
            nn.init.normal_(k, mean=0.0, std=C**-0.5)
            nn.init.normal_(v, mean=0.0, std=C**-0.5)
            nn.init.normal_(module.out.weight, mean=0.0, std=(H * D) ** -0.5)
        elif isinstance(module, FeedForward):
            for w in (module.fc, module.gate):
                if w is not None:
                    nn.init.normal_(w.weight, mean=0.0, std=C**-0.5)
            nn.init.normal_(module.proj.weight, mean=0.0, std=module.proj.in_features**-0.5)
        elif isinstance(module, RelativePositionBias):
            nn.init.normal_(module.embedding.weight, mean=0.0, std=C**-0.5)
        elif module is self:
            nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
            if not self.cfg.tie_embeddings:
                # Untied, nothing rescales the output: 1/sqrt(d) keeps the first logits about unit size.
                nn.init.normal_(self.lm_head.weight, mean=0.0, std=C**-0.5)

    def _encode(self, input_ids, attention_mask, need_weights):
        S = input_ids.size(1)
        x = self.drop(self.wte(input_ids))  # (B, S, C)
        bias = add_bias(padding_bias(attention_mask, x.dtype), self.encoder.rel_bias(S, S).to(x.dtype))  # (B, H, S, S)
        x, weights = self._encoder_blocks(x, bias, need_weights)
        return self.drop(self.encoder.ln_f(x)), weights

    def _decode(self, decoder_input_ids, memory, attention_mask, cache, decoder_attention_mask, need_weights):
        past, L = cache_length(cache), decoder_input_ids.size(1)
        x = self.drop(self.wte(decoder_input_ids))  # (B, L, C)
        # Queries at positions past … past + L - 1 against every key so far; Attention adds the causal mask.
        bias = add_bias(
            padding_bias(decoder_attention_mask, x.dtype), self.decoder.rel_bias(L, past + L).to(x.dtype)
        )  # (B, H, L, P + L)
        memory_bias = padding_bias(attention_mask, x.dtype)  # (B, 1, 1, S)
        x, self_weights, cross_weights = self._decoder_blocks(x, bias, memory, memory_bias, cache, need_weights)
        x = self.drop(self.decoder.ln_f(x))
        if self.cfg.tie_embeddings:
            x = x * self.cfg.n_embd**-0.5  # the embedding's scale suits inputs, not logits
        return self.lm_head(x), self_weights, cross_weights  # (B, L, vocab)
