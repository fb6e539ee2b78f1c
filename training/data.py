"""Batches for causal LM training from a token stream: deterministic per step, so a run can resume anywhere."""

from __future__ import annotations

import numpy as np
import torch


class PackedBatches:
    """Random ``block_size + 1`` windows of the concatenated token stream (documents split by ``<|endoftext|>``).

    The windows of step ``s`` depend only on ``(seed, s)``; each rank takes its own slice of
    the global batch, so N ranks see exactly what one process would see with the same global batch.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, seed: int):
        if len(tokens) <= block_size + 1:
            raise ValueError(f"only {len(tokens)} training tokens: need more than block_size + 1 = {block_size + 1}")
        self.tokens = torch.from_numpy(tokens)
        self.block_size = block_size
        self.seed = seed

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1):
        """``(x, y)`` of shape ``(global_batch // world_size, block_size)``: this rank's part of step ``step``."""
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.block_size, size=global_batch)  # last window included
        per_rank = global_batch // world_size
        mine = torch.from_numpy(starts[rank * per_rank : (rank + 1) * per_rank])
        idx = mine[:, None] + torch.arange(self.block_size + 1)  # (b, T+1)
        window = self.tokens[idx]
        return window[:, :-1], window[:, 1:]


def eval_blocks(tokens: np.ndarray, block_size: int, max_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive non-overlapping ``(x, y)`` blocks from the start of the stream, at most ``max_blocks``."""
    n = min(max_blocks, (len(tokens) - 1) // block_size)
    if n == 0:
        raise ValueError(f"only {len(tokens)} validation tokens: need at least block_size + 1 = {block_size + 1}")
    t = torch.from_numpy(tokens[: n * block_size + 1])
    return t[:-1].view(n, block_size), t[1:].view(n, block_size)


def unigram_cross_entropy(train_tokens: np.ndarray, targets: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``targets`` under the train set's add-one-smoothed unigram distribution.

    The baseline a language model must beat: it knows token frequencies but no context.
    """
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[targets.reshape(-1).numpy()].mean())
