"""The training loader: token shards streamed from disk for every objective, deterministic per step.

``open_split`` opens one split of the tokenize manifest as a :class:`Split`: every shard memory-mapped, the global
token and document offsets computed from the shards' lengths alone (O(shards) memory, whatever the token count),
and the split's unigram counts from the manifest. ``PackedBatches`` draws causal-LM windows from it without
replacement within an epoch (``WindowOrder``), so a step's batch is a pure function of ``(seed, step)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from tokenmill.core.indexed import IndexedShard, TokenStream, WindowOrder, num_windows


class Split(TokenStream):
    """One split's token stream (``TokenStream``: ``len``, ``window``, ``windows``, ``num_documents``,
    ``document_bounds``, ``document_of``) and its unigram counts (``(vocab_size,)`` int64)."""

    def __init__(self, shards, unigram_counts: str | os.PathLike | np.ndarray | None = None, name: str = ""):
        super().__init__(shards)
        self.name = name
        self._counts = unigram_counts

    @property
    def unigram_counts(self) -> np.ndarray:
        """The split's token counts per id: the manifest's ``.npy`` when given, else counted (small streams only)."""
        if self._counts is None:
            self._counts = np.bincount(self.window(0, len(self)))
        elif not isinstance(self._counts, np.ndarray):
            self._counts = np.load(self._counts)
        return self._counts


def open_split(tokens_manifest: dict, split: str) -> Split:
    """Split ``split`` (``train``, ``validation``) of a tokenize manifest: its shards' ``prefix`` entries, in order,
    memory-mapped (a token is read only when a window needs it)."""
    fmt = tokens_manifest.get("format", {}).get("name")
    if fmt != "megatron-indexed":
        raise ValueError(f"token shards in format {fmt!r}: the training loader reads 'megatron-indexed' shards")
    entry = tokens_manifest["splits"][split]
    stream = Split([s["prefix"] for s in entry["shards"]], entry.get("unigram_counts"), name=split)
    if len(stream) != entry["tokens"] or stream.num_documents != entry["documents"]:
        raise ValueError(
            f"{split} shards hold {len(stream)} tokens in {stream.num_documents} documents; "
            f"the manifest says {entry['tokens']} in {entry['documents']}"
        )
    return stream


def as_stream(tokens, eot: int | None = None) -> TokenStream:
    """``tokens`` as a stream: a ``TokenStream`` as it is; an in-memory array (tests, small data) as a one-shard
    stream whose documents end at each ``eot`` (one document when ``eot`` is None)."""
    if isinstance(tokens, TokenStream):
        return tokens
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if eot is None:
        lengths: Sequence[int] | np.ndarray = [len(tokens)] if len(tokens) else []
    else:
        ends = np.flatnonzero(tokens == eot) + 1  # a document ends with its EOT; a tail without one is one too
        bounds = np.concatenate([[0], ends, [len(tokens)] if (not len(ends) or ends[-1] < len(tokens)) else []])
        lengths = np.diff(bounds.astype(np.int64))
    return Split([IndexedShard.in_memory(tokens, lengths)])


class PackedBatches:
    """Causal-LM windows of ``block_size + 1`` tokens of the stream, without replacement within an epoch.

    Window ``w`` is tokens ``[w * block_size, w * block_size + block_size + 1)`` (``num_windows``); epoch ``e``
    visits all of them in the order ``WindowOrder(n, seed)`` gives it, and batch position ``p = step * global_batch
    + j`` is position ``p % n`` of epoch ``p // n``. The windows of step ``s`` depend only on ``(seed, s)``; each
    rank takes its own slice of the global batch, so N ranks see exactly what one process would see with the
    same global batch.
    """

    def __init__(self, tokens, block_size: int, seed: int):
        self.stream = as_stream(tokens)
        if len(self.stream) < block_size + 1:
            raise ValueError(f"only {len(self.stream)} training tokens: need block_size + 1 = {block_size + 1}")
        self.block_size = block_size
        self.seed = seed
        self.windows_per_epoch = num_windows(len(self.stream), block_size)
        self.order = WindowOrder(self.windows_per_epoch, seed)

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens one epoch trains on (every token but the stream's first, up to the last full window)."""
        return self.windows_per_epoch * self.block_size

    def window_numbers(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """This rank's window numbers of step ``step``."""
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        per_rank = global_batch // world_size
        return self.order.windows_of_step(step, global_batch)[rank * per_rank : (rank + 1) * per_rank]

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1):
        """``(x, y)`` of shape ``(global_batch // world_size, block_size)``: this rank's part of step ``step``."""
        mine = self.window_numbers(step, global_batch, rank, world_size)
        window = torch.from_numpy(self.stream.windows(mine * self.block_size, self.block_size + 1))  # (b, T+1)
        return window[:, :-1], window[:, 1:]


def eval_blocks(tokens, block_size: int, max_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive non-overlapping ``(x, y)`` blocks from the start of the stream, at most ``max_blocks``: reads
    only those tokens."""
    stream = as_stream(tokens)
    n = min(max_blocks, num_windows(len(stream), block_size))
    if n == 0:
        raise ValueError(f"only {len(stream)} validation tokens: need at least block_size + 1 = {block_size + 1}")
    t = torch.from_numpy(stream.window(0, n * block_size + 1))
    return t[:-1].view(n, block_size), t[1:].view(n, block_size)


def unigram_cross_entropy(counts: np.ndarray, targets: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``targets`` under the add-one-smoothed unigram distribution of ``counts``
    (the train split's token count per id, e.g. ``Split.unigram_counts``; shorter than ``vocab_size`` is padded).

    The baseline a language model must beat: it knows token frequencies but no context.
    """
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)[:vocab_size]
    full = np.zeros(vocab_size, dtype=np.float64)
    full[: len(counts)] = counts
    log_p = np.log((full + 1.0) / (full.sum() + vocab_size))
    return float(-log_p[targets.reshape(-1).numpy()].mean())


def token_counts(tokens, vocab_size: int) -> np.ndarray:
    """``(vocab_size,)`` int64 counts of an in-memory array of token ids."""
    return np.bincount(np.asarray(tokens, dtype=np.int64).reshape(-1), minlength=vocab_size)[:vocab_size]
