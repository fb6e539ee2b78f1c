"""Model families. Each file is plain single-device PyTorch; ``build_model`` picks one from the config."""

from __future__ import annotations

from torch import nn

from training.models.gpt import GPT, GPTConfig
from tokenmill.config import ModelConfig

FAMILIES = ("gpt",)


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    if cfg.family == "gpt":
        return GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                             n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
                             tie_embeddings=cfg.tie_embeddings))
    raise ValueError(f"model.family {cfg.family!r} is not available; choose one of {', '.join(FAMILIES)}")
