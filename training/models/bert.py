"""BERT: a bidirectional Transformer encoder pretrained with masked-LM and next-sentence prediction.

Token + segment (token type) embeddings (then LayerNorm), a stack of encoder blocks, a pooler (dense + tanh)
feeding the NSP classifier, and the MLM head (dense + activation + LayerNorm, then a decoder tied to the word
embeddings with its own output bias). Plain single-device PyTorch.

The defaults are the modern recipe (as ModernBERT): pre-LN blocks (``x = x + attn(LN(x))``, ``x = x + ffn(LN(x))``,
a final LayerNorm before the heads) and rotary positions; and next-sentence prediction that compares the two
segments, the pooler reading ``[u·v, |u−v|]`` of A's and B's mean final states (``nsp_pool="segments"``, the
features of sentence-pair classifiers such as InferSent). ``norm="post"``, ``position="learned"`` and
``nsp_pool="cls"`` are the original BERT (``x = LN(x + attn(x))``, a learned table added to the embeddings, the
pooler on the ``[CLS]`` state), for fidelity and for the exact Hugging Face ``BertForPreTraining`` export; the
published flavours ``bert-base`` and ``bert-large`` use it.
Why not the original by default (demo size, lr 1e-3, 300 steps of 16 pairs, docs/models.md): post-LN blocks stall
at token frequencies at small sizes and GPT-like learning rates, and learned positions slow MLM down (post-LN learned
MLM 6.878, accuracy 0.075 against a unigram's 6.815 and 0.071; pre-LN learned 6.679 and 0.103; pre-LN RoPE 6.086
and 0.185); NSP on the [CLS] state is still at chance after 300 steps with two seeds of six (the demo's among
them; it then takes about 1,750 steps), while on the segments it is above chance with all six (0.609-0.671 over
1,024 validation pairs) at the same MLM. Positions can also be sinusoidal or bidirectional ALiBi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenmill.training.models.layers import Attention, FeedForward, SingleStack, StackConfig

BERT_POSITIONS = ("learned", "sinusoidal", "rope", "alibi")
BERT_ACTIVATIONS = ("gelu", "gelu_tanh", "relu")  # the MLM head applies it too, so no gated variants
BERT_NORMS = ("pre", "post")  # where each block's LayerNorms sit (module docstring)
BERT_NSP_POOLS = ("segments", "cls")  # what the NSP pooler reads (module docstring)


@dataclass
class BERTConfig(StackConfig):
    # from StackConfig: vocab_size=8192, block_size=128, n_layer=4, n_head=4, n_embd=256, d_ff=None (4 × n_embd)
    dropout: float = 0.1  # embeddings, attention probabilities and both residual branches, as BERT
    type_vocab_size: int = 2  # segments A and B
    norm_eps: float = 1e-12
    activation: str = "gelu"  # exact (erf) GELU, as BERT
    position: str = "rope"  # rope (ModernBERT), or learned (the original BERT), sinusoidal, alibi
    pad_id: int = 1  # its word-embedding row gets no gradient from lookups (HF's padding_idx)
    bias: bool = True  # False: no bias in any Linear or LayerNorm, nor on the MLM output
    norm: str = "pre"  # pre-LN blocks and a final LayerNorm; post: the original BERT's post-LN blocks
    nsp_pool: str = "segments"  # NSP reads A's and B's mean states compared; cls: the [CLS] state (the original)

    # Keys a saved config may lack (written before they existed), with the value such a file meant.
    SAVED_WITHOUT: ClassVar[dict[str, str]] = {"nsp_pool": "cls"}


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return F.relu(x)


class Block(nn.Module):
    """Encoder layer: pre-LN normalises each sublayer's input, post-LN the residual sum after it."""

    def __init__(self, cfg: BERTConfig):
        super().__init__()
        self.attn = Attention(cfg.n_embd, cfg.n_head, bias=cfg.bias, dropout=cfg.dropout)
        self.ln_1 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        # BERT drops out the FFN's output (below), not its hidden activation: FeedForward's own dropout stays 0.
        self.mlp = FeedForward(cfg.n_embd, cfg.d_ff or 4 * cfg.n_embd, cfg.activation, bias=cfg.bias)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.pre = cfg.norm == "pre"

    def forward(self, x, bias, rope, need_weights):
        if self.pre:
            a, weights = self.attn(self.ln_1(x), bias=bias, rope=rope, need_weights=need_weights)  # non-causal
            x = x + self.resid_dropout(a)
            return x + self.resid_dropout(self.mlp(self.ln_2(x))), weights
        a, weights = self.attn(x, bias=bias, rope=rope, need_weights=need_weights)
        x = self.ln_1(x + self.resid_dropout(a))
        return self.ln_2(x + self.resid_dropout(self.mlp(x))), weights


class BERT(SingleStack):
    def __init__(self, cfg: BERTConfig):
        super().__init__()
        if cfg.position not in BERT_POSITIONS:
            raise ValueError(f"BERT positions must be one of {', '.join(BERT_POSITIONS)}, got {cfg.position!r}")
        if cfg.activation not in BERT_ACTIVATIONS:
            raise ValueError(f"BERT activation must be one of {', '.join(BERT_ACTIVATIONS)}, got {cfg.activation!r}")
        if cfg.norm not in BERT_NORMS:
            raise ValueError(f"BERT norm must be one of {', '.join(BERT_NORMS)}, got {cfg.norm!r}")
        if cfg.nsp_pool not in BERT_NSP_POOLS:
            raise ValueError(f"BERT nsp_pool must be one of {', '.join(BERT_NSP_POOLS)}, got {cfg.nsp_pool!r}")
        self.cfg = cfg
        C = cfg.n_embd
        self.wte = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)
        self._init_positions(cfg)  # wpe (learned), wpe_table (sinusoidal), rope, slopes (alibi)
        self.wtype = nn.Embedding(cfg.type_vocab_size, C)  # segment (token type) embeddings
        self.ln_emb = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # pre-LN: the residual stream is never normalised inside the blocks, so once after them
        self.ln_f = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias) if cfg.norm == "pre" else None
        # NSP: tanh(dense) of the [CLS] state, or of the segments' comparison [u·v, |u−v|] (2C), then two ways.
        self.pooler = nn.Linear(2 * C if cfg.nsp_pool == "segments" else C, C, bias=cfg.bias)
        self.nsp_head = nn.Linear(C, 2, bias=cfg.bias)
        # MLM: transform, then the decoder sharing the word embeddings (the bias is its own).
        self.mlm_dense = nn.Linear(C, C, bias=cfg.bias)
        self.mlm_ln = nn.LayerNorm(C, eps=cfg.norm_eps, bias=cfg.bias)
        self.lm_head = nn.Linear(C, cfg.vocab_size, bias=cfg.bias)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        with torch.no_grad():  # after apply: the tied lm_head would otherwise redraw the pad row
            self.wte.weight[cfg.pad_id].zero_()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # BERT: N(0, 0.02) weights, zero biases, LayerNorm at identity (and the pad row at zero, above).
        SingleStack._init_weights(module)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ):
        """``(mlm_logits (B, T, vocab), nsp_logits (B, 2))`` for ``input_ids`` ``(B, T)``.

        ``token_type_ids`` ``(B, T)`` are the segments (None: all 0); ``attention_mask`` ``(B, T)``
        marks real (1) and padding (0) keys. Logits at padded positions are meaningless. With
        ``need_weights`` a third element holds the per-layer attention probabilities ``(B, H, T, T)``.
        """
        B, T = input_ids.shape
        if T > self.cfg.block_size and self.cfg.position != "alibi":
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.cfg.block_size}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self._add_positions(self.wte(input_ids) + self.wtype(token_type_ids), 0)  # (B, T, C)
        x = self.drop(self.ln_emb(x))
        # ALiBi is symmetric here: a key at distance d costs slope·d either side.
        bias = self._attention_bias(attention_mask, x.dtype, T, 0, causal=False)  # (B|1, 1|H, T, T)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, bias, self.rope, need_weights)
            attentions.append(weights)
        if self.ln_f is not None:
            x = self.ln_f(x)
        pooled = torch.tanh(self.pooler(self._nsp_features(x, token_type_ids, attention_mask)))  # (B, C)
        nsp_logits = self.nsp_head(pooled)  # (B, 2)
        h = self.mlm_ln(_act(self.cfg.activation, self.mlm_dense(x)))  # (B, T, C)
        mlm_logits = self.lm_head(h)  # (B, T, vocab)
        return (mlm_logits, nsp_logits, attentions) if need_weights else (mlm_logits, nsp_logits)

    def _nsp_features(
        self, x: torch.Tensor, token_type_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """What the pooler reads: the [CLS] state ``(B, C)``, or for ``nsp_pool="segments"`` the elementwise
        product and absolute difference of segment A's and B's mean states ``(B, 2C)`` (padding left out)."""
        if self.cfg.nsp_pool == "cls":
            return x[:, 0]
        real = (torch.ones_like(token_type_ids) if attention_mask is None else attention_mask).to(x.dtype)  # (B, T)
        in_a = (token_type_ids == 0).to(x.dtype) * real  # [CLS] A [SEP]
        in_b = (token_type_ids == 1).to(x.dtype) * real  # B [SEP]
        u = torch.einsum("bt,btc->bc", in_a, x) / in_a.sum(1, keepdim=True).clamp(min=1)  # (B, C)
        v = torch.einsum("bt,btc->bc", in_b, x) / in_b.sum(1, keepdim=True).clamp(min=1)  # (B, C)
        return torch.cat([u * v, (u - v).abs()], dim=-1)  # (B, 2C)
