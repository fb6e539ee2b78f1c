"""GPT: a decoder-only Transformer trained as a causal language model.

Pre-LN blocks (LayerNorm before attention and MLP, as in GPT-2), positions learned (GPT-1/2/3),
sinusoidal, RoPE or ALiBi, optional tied input/output embeddings, PyTorch's fused
``scaled_dot_product_attention``, and a key/value cache for generation. Plain single-device
PyTorch: the DeepSpeed wrapping lives in ``tokenmill.training.distributed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from tokenmill.training.models.layers import (
    Attention,
    Cache,
    FeedForward,
    LMHead,
    SingleStack,
    StackConfig,
    sample_next,
)


@dataclass
class GPTConfig(StackConfig):
    # from StackConfig: vocab_size=8192, block_size=128, n_layer=4, n_head=4, n_embd=256, d_ff=None (4 × n_embd)
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True
    position: str = "learned"  # learned, sinusoidal, rope, alibi
    activation: str = "gelu_tanh"
    norm_eps: float = 1e-5


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.attn = Attention(cfg.n_embd, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = FeedForward(cfg.n_embd, cfg.d_ff or 4 * cfg.n_embd, cfg.activation, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, rope, cache, need_weights):
        a, weights = self.attn(self.ln_1(x), bias=bias, causal=True, rope=rope, cache=cache, need_weights=need_weights)
        x = x + self.resid_dropout(a)
        return x + self.resid_dropout(self.mlp(self.ln_2(x))), weights


class GPT(SingleStack):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.position not in ("learned", "sinusoidal", "rope", "alibi"):
            raise ValueError(f"GPT positions must be learned, sinusoidal, rope or alibi, got {cfg.position!r}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self._init_positions(cfg)  # wpe (learned), wpe_table (sinusoidal), rope, slopes (alibi)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.lm_head = LMHead(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)  # SingleStack's: N(0, 0.02) weights, zero biases
        # GPT-2: scale the residual projections by 1/sqrt(2·n_layer) so the residual stream's variance stays put.
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def new_cache(self) -> list[Cache]:
        return [{} for _ in self.blocks]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: list[Cache] | None = None,
        need_weights: bool = False,
        labels: torch.Tensor | None = None,
    ):
        """Logits ``(B, T, vocab)`` for ``input_ids`` ``(B, T)``.

        ``attention_mask`` ``(B, P + T)`` marks real (1) and padding (0) keys, ``P`` being the
        positions already in ``cache``. With ``need_weights`` returns ``(logits, [per-layer (B, H, T, P + T)])``.
        With ``labels`` ``(B, T)`` (``-100`` where not scored) returns instead the summed float32 cross entropy of
        the logits against them, computed a chunk of rows at a time without holding the logits (``LMHead``).
        """
        B, T = input_ids.shape
        past = cache[0]["k"].size(2) if cache and "k" in cache[0] else 0
        if past + T > self.cfg.block_size and self.cfg.position in ("learned", "sinusoidal", "rope"):
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.drop(self._add_positions(self.wte(input_ids), past))  # (B, T, C)
        bias = self._attention_bias(attention_mask, x.dtype, T, past, causal=True)  # (B|1, 1|H, T, P + T)
        attentions = []
        for i, block in enumerate(self.blocks):
            x, weights = block(x, bias, self.rope, cache[i] if cache is not None else None, need_weights)
            attentions.append(weights)
        if labels is not None:
            if need_weights:
                raise ValueError("labels give the loss alone: call with need_weights=False")
            return self.lm_head(self.ln_f(x), labels=labels)  # () float32, summed over scored positions
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return (logits, attentions) if need_weights else logits

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        eos_id: int | None = None,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` tokens to ``idx`` ``(B, T)``; ``temperature=0`` is greedy.

        With ``use_cache`` each step feeds only the new token and reuses earlier keys/values;
        once the window is full it falls back to re-reading the last ``block_size`` tokens.
        Stops early when every row has produced ``eos_id``.
        """
        cache = self.new_cache() if use_cache else None
        feed = idx
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if cache is not None and idx.size(1) > self.cfg.block_size:
                cache = None  # learned/sinusoidal positions cannot slide: recompute on the cropped window
            if cache is None:
                feed = idx[:, -self.cfg.block_size :]
            logits = self(feed, cache=cache)[:, -1, :]  # (B, vocab)
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            feed = nxt
            if eos_id is not None:
                done |= nxt[:, 0] == eos_id
                if bool(done.all()):
                    break
        return idx
