"""The original Transformer ("Attention is all you need", Vaswani et al. 2017): an encoder-decoder.

Post-LN blocks (``x = LayerNorm(x + sublayer(x))``), absolute positions (fixed sinusoidal as in the
paper, or learned) added to token embeddings scaled by sqrt(d_model), one token embedding shared by
source, target and (tied) output, and key/value caches for generation. ``EncoderDecoder`` holds what
the encoder-decoder families share (forward, decode, generate, caches); ``t5.py`` builds on it too.
Its Hugging Face equivalent is ``MarianMTModel`` (``training/hf/marian.py``).
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
    padding_bias,
    sample_next,
    sinusoidal_positions,
)


@dataclass
class TransformerConfig:
    vocab_size: int = 8192
    block_size: int = 128  # longest source or target sequence (rows of the position tables)
    n_layer: int = 4  # encoder layers
    n_decoder_layer: int | None = None  # None: n_layer
    n_head: int = 4
    n_embd: int = 256
    d_ff: int | None = None  # None: 4 × n_embd
    dropout: float = 0.1  # on embeddings and on every sub-layer's output, as in the paper
    activation: str = "relu"
    position: str = "sinusoidal"  # sinusoidal or learned
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # the output projection is the shared token embedding
    scale_embedding: bool = True  # token embeddings × sqrt(n_embd) before the positions are added
    bias: bool = True  # biases in projections and LayerNorms, and an output bias on the logits
    pad_id: int = 1  # padding id, also the decoder start id


# --- what the encoder-decoder families share ---------------------------------------------------


def cache_length(cache: list[dict[str, Cache]] | None) -> int:
    """Target positions already held by a decoder ``cache``."""
    return cache[0]["self"]["k"].size(2) if cache and "k" in cache[0]["self"] else 0


class EncoderDecoder(nn.Module):
    """Forward, encode, decode, caches and generation for an encoder-decoder family.

    A subclass sets ``cfg`` (with ``pad_id``, the decoder start id, and ``block_size``),
    ``encoder.blocks`` and ``decoder.blocks`` (called as ``block(x, bias, causal, memory, memory_bias,
    cache, need_weights) -> (x, self_weights, cross_weights)``), and implements
    ``_encode(input_ids, attention_mask, need_weights) -> (memory, weights)`` and ``_decode(decoder_input_ids,
    memory, attention_mask, cache, decoder_attention_mask, need_weights) -> (logits, self_weights,
    cross_weights)``, which embed and run ``_encoder_blocks`` / ``_decoder_blocks``.
    """

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> list[dict[str, Cache]]:
        """One ``{"self": {...}, "cross": {...}}`` per decoder layer, filled as decoding goes."""
        return [{"self": {}, "cross": {}} for _ in self.decoder.blocks]

    def _encoder_blocks(self, x: torch.Tensor, bias: torch.Tensor | None, need_weights: bool):
        """``x`` ``(B, S, C)`` through every encoder block → ``(x, [per-layer weights])``."""
        weights = []
        for block in self.encoder.blocks:
            x, w, _ = block(x, bias, need_weights=need_weights)
            weights.append(w)
        return x, weights

    def _decoder_blocks(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        memory: torch.Tensor,
        memory_bias: torch.Tensor | None,
        cache: list[dict[str, Cache]] | None,
        need_weights: bool,
    ):
        """``x`` ``(B, L, C)`` through every decoder block, attending to ``memory`` ``(B, S, C)``
        → ``(x, [per-layer self-attention weights], [per-layer cross-attention weights])``."""
        self_weights, cross_weights = [], []
        for i, block in enumerate(self.decoder.blocks):
            x, ws, wc = block(
                x,
                bias,
                causal=True,
                memory=memory,
                memory_bias=memory_bias,
                cache=cache[i] if cache is not None else None,
                need_weights=need_weights,
            )
            self_weights.append(ws)
            cross_weights.append(wc)
        return x, self_weights, cross_weights

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        """Logits ``(B, L, vocab)`` for target ``decoder_input_ids`` ``(B, L)`` (the targets shifted right
        behind the start id ``cfg.pad_id``) given source ``input_ids`` ``(B, S)``.

        The masks mark real (1) and padding (0) tokens. With ``need_weights`` returns
        ``(logits, {"encoder": [...], "decoder": [...], "cross": [...]})``, one ``(B, H, Tq, Tk)`` per layer.
        """
        if decoder_input_ids is None:
            raise ValueError(
                "decoder_input_ids is required: the targets shifted right behind the start id "
                f"(cfg.pad_id = {self.cfg.pad_id})"
            )
        memory, enc_weights = self._encode(input_ids, attention_mask, need_weights)
        logits, self_weights, cross_weights = self._decode(
            decoder_input_ids, memory, attention_mask, None, decoder_attention_mask, need_weights
        )
        if need_weights:
            return logits, {"encoder": enc_weights, "decoder": self_weights, "cross": cross_weights}
        return logits

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output ``(B, S, C)``, the memory the decoder attends to."""
        return self._encode(input_ids, attention_mask, False)[0]

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: list[dict[str, Cache]] | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, L, vocab)`` for ``decoder_input_ids`` ``(B, L)`` attending to ``memory`` ``(B, S, C)``.

        ``attention_mask`` ``(B, S)`` is the source padding mask; ``decoder_attention_mask`` covers
        ``(B, P + L)`` target positions, ``P`` being those already in ``cache`` (from ``new_cache()``).
        """
        return self._decode(decoder_input_ids, memory, attention_mask, cache, decoder_attention_mask, False)[0]

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        attention_mask: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        eos_id: int | None = None,
    ) -> torch.Tensor:
        """Decoder ids ``(B, 1 + n)``, ``n <= max_new_tokens``, starting with the start id ``cfg.pad_id``.

        ``temperature=0`` is greedy. The source is encoded once; with ``use_cache`` each step feeds
        only the newest token. A row that has produced ``eos_id`` continues with ``pad_id`` (as Hugging
        Face's ``generate`` does), and generation stops once every row has.
        """
        if max_new_tokens > self.cfg.block_size:
            raise ValueError(f"max_new_tokens {max_new_tokens} exceeds block_size {self.cfg.block_size}")
        memory = self.encode(input_ids, attention_mask)  # (B, S, C)
        out = torch.full((input_ids.size(0), 1), self.cfg.pad_id, dtype=torch.long, device=input_ids.device)
        cache = self.new_cache() if use_cache else None
        done = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            feed = out[:, -1:] if cache is not None else out
            logits = self.decode(feed, memory, attention_mask, cache)[:, -1, :]  # (B, vocab)
            nxt = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            if eos_id is not None:
                nxt = nxt.masked_fill(done[:, None], self.cfg.pad_id)
                done |= nxt[:, 0] == eos_id
            out = torch.cat([out, nxt], dim=1)
            if eos_id is not None and bool(done.all()):
                break
        return out


# --- the Transformer ----------------------------------------------------------------------------


class Block(nn.Module):
    """Post-LN layer: each sub-layer's output is dropped out, added to its input, then normalised.

    Decoder layers (``cross=True``) attend to the encoder's output between self-attention and the MLP.
    """

    def __init__(self, cfg: TransformerConfig, cross: bool):
        super().__init__()
        C = cfg.n_embd
        self.attn = Attention(C, cfg.n_head, bias=cfg.bias)  # the paper drops sub-layer outputs, not attention weights
        self.ln_1 = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias)
        if cross:
            self.cross = Attention(C, cfg.n_head, bias=cfg.bias, cross=True)
            self.ln_cross = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias)
        self.mlp = FeedForward(C, cfg.d_ff or 4 * C, cfg.activation, bias=cfg.bias)
        self.ln_2 = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, bias, causal=False, memory=None, memory_bias=None, cache=None, need_weights=False):
        a, self_weights = self.attn(
            x, bias=bias, causal=causal, cache=cache["self"] if cache is not None else None, need_weights=need_weights
        )
        x = self.ln_1(x + self.drop(a))
        cross_weights = None
        if memory is not None:
            a, cross_weights = self.cross(
                x,
                memory,
                bias=memory_bias,
                cache=cache["cross"] if cache is not None else None,
                need_weights=need_weights,
            )
            x = self.ln_cross(x + self.drop(a))
        x = self.ln_2(x + self.drop(self.mlp(x)))
        return x, self_weights, cross_weights


class Stack(nn.Module):
    """An encoder or a decoder: its own position table and layers (the token embedding is shared)."""

    def __init__(self, cfg: TransformerConfig, n_layer: int, decoder: bool):
        super().__init__()
        if cfg.position == "learned":
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        else:
            self.register_buffer("pos_table", sinusoidal_positions(cfg.block_size, cfg.n_embd), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg, cross=decoder) for _ in range(n_layer))

    def positions(self, past: int, T: int, device: torch.device) -> torch.Tensor:
        """``(T, C)`` encodings of positions ``past … past + T - 1``."""
        pos = torch.arange(past, past + T, device=device)
        return self.wpe(pos) if hasattr(self, "wpe") else self.pos_table[pos]


class Transformer(EncoderDecoder):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.position not in ("sinusoidal", "learned"):
            raise ValueError(f"Transformer positions must be sinusoidal or learned, got {cfg.position!r}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # source and target share one vocabulary
        self.embed_scale = math.sqrt(cfg.n_embd) if cfg.scale_embedding else 1.0
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = Stack(cfg, cfg.n_layer, decoder=False)
        self.decoder = Stack(cfg, cfg.n_decoder_layer or cfg.n_layer, decoder=True)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.bias)
        self.apply(self._init_weights)
        # Embeddings ~ N(0, 1/d): scaled by sqrt(d) they are about unit size, like the positions they are added to.
        nn.init.normal_(self.wte.weight, mean=0.0, std=cfg.n_embd**-0.5)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.n_embd**-0.5)
        elif isinstance(module, Attention):
            # ``apply`` reaches the projections first; redo the fused ones as the separate
            # d×d matrices of the paper, so Xavier sees each projection's own fan-out.
            for proj in (module.q, module.kv) if module.cross else (module.qkv,):
                for w in proj.weight.split(module.n_head * module.d_head):
                    nn.init.xavier_uniform_(w)

    def _embed(self, stack: Stack, ids: torch.Tensor, past: int) -> torch.Tensor:
        T = ids.size(1)
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.wte(ids) * self.embed_scale  # (B, T, C)
        return self.drop(x + stack.positions(past, T, ids.device).to(x.dtype))

    def _encode(self, input_ids, attention_mask, need_weights):
        x = self._embed(self.encoder, input_ids, 0)  # (B, S, C)
        bias = padding_bias(attention_mask, x.dtype)  # (B, 1, 1, S)
        return self._encoder_blocks(x, bias, need_weights)  # post-LN: the last block's output is already normalised

    def _decode(self, decoder_input_ids, memory, attention_mask, cache, decoder_attention_mask, need_weights):
        x = self._embed(self.decoder, decoder_input_ids, cache_length(cache))  # (B, L, C)
        bias = padding_bias(decoder_attention_mask, x.dtype)  # (B, 1, 1, P + L)
        memory_bias = padding_bias(attention_mask, x.dtype)  # (B, 1, 1, S)
        x, self_weights, cross_weights = self._decoder_blocks(x, bias, memory, memory_bias, cache, need_weights)
        return self.lm_head(x), self_weights, cross_weights  # (B, L, vocab)
