"""tokenmill.training.data: deterministic packed batches, evaluation blocks and the unigram baseline (in-memory
streams; the shard-backed loader is tests/training/test_streams.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tokenmill.training.data import PackedBatches, eval_blocks, token_counts, unigram_cross_entropy


@pytest.fixture
def stream():
    return np.arange(1000, dtype=np.int64)  # token value == position: windows are easy to check


def test_same_step_same_batch_other_steps_differ(stream):
    data = PackedBatches(stream, block_size=16, seed=7)
    x1, y1 = data.batch(3, global_batch=8)
    x2, y2 = PackedBatches(stream, block_size=16, seed=7).batch(3, global_batch=8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(data.batch(4, global_batch=8)[0], x1)
    assert not torch.equal(PackedBatches(stream, block_size=16, seed=8).batch(3, global_batch=8)[0], x1)


def test_shapes_dtype_and_windows_are_contiguous(stream):
    x, y = PackedBatches(stream, block_size=16, seed=0).batch(0, global_batch=6)
    assert x.shape == y.shape == (6, 16)
    assert x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])  # y is x shifted by one
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # ... continuing the same window of the stream
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # windows are consecutive tokens
    assert int(y.max()) < len(stream) and int(x.min()) >= 0


def test_rank_slices_concatenate_to_single_process_batch(stream):
    data = PackedBatches(stream, block_size=8, seed=3)
    for step in (0, 1, 17):
        x, y = data.batch(step, global_batch=8, rank=0, world_size=1)
        parts = [data.batch(step, global_batch=8, rank=r, world_size=2) for r in range(2)]
        assert all(p[0].shape == (4, 8) for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert not torch.equal(parts[0][0], parts[1][0])


def test_global_batch_must_divide_by_world_size(stream):
    with pytest.raises(ValueError, match="not divisible"):
        PackedBatches(stream, block_size=8, seed=0).batch(0, global_batch=5, world_size=2)


@pytest.mark.parametrize("n", [0, 5, 8])
def test_too_few_tokens_is_an_error(n):
    with pytest.raises(ValueError, match="training tokens"):
        PackedBatches(np.arange(n, dtype=np.int64), block_size=8, seed=0)


def test_windows_tile_the_stream_at_stride_block_size():
    """Window w is tokens [w * block, w * block + block + 1): one epoch of 3 windows covers every target once."""
    block = 8
    tokens = np.arange(3 * block + 4, dtype=np.int64)  # 3 windows; the 3 tokens after the last one are never read
    data = PackedBatches(tokens, block_size=block, seed=0)
    assert data.windows_per_epoch == 3 and data.tokens_per_epoch == 3 * block
    x, y = data.batch(0, global_batch=3)
    assert sorted(int(v) for v in x[:, 0]) == [0, 8, 16]
    assert sorted(int(v) for row in y for v in row) == list(range(1, 3 * block + 1))


def test_eval_blocks_are_consecutive_and_capped():
    tokens = np.arange(101, dtype=np.int64)
    x, y = eval_blocks(tokens, block_size=10, max_blocks=100)
    assert x.shape == y.shape == (10, 10)
    assert torch.equal(x.reshape(-1), torch.arange(100))
    assert torch.equal(y.reshape(-1), torch.arange(1, 101))
    x, y = eval_blocks(tokens, block_size=10, max_blocks=3)
    assert x.shape == (3, 10)
    assert torch.equal(x[0], torch.arange(10)) and torch.equal(y[-1], torch.arange(21, 31))


def test_eval_blocks_drops_the_incomplete_tail():
    x, _ = eval_blocks(np.arange(25, dtype=np.int64), block_size=10, max_blocks=100)
    assert x.shape == (2, 10)


def test_eval_blocks_needs_one_full_block():
    assert eval_blocks(np.arange(11, dtype=np.int64), block_size=10, max_blocks=5)[0].shape == (1, 10)
    with pytest.raises(ValueError, match="validation tokens"):
        eval_blocks(np.arange(10, dtype=np.int64), block_size=10, max_blocks=5)


def test_unigram_cross_entropy_matches_hand_computation():
    counts = token_counts(np.array([0, 0, 1], dtype=np.int64), 3)  # counts + 1 over vocab 3: [3, 2, 1] / 6
    targets = torch.tensor([[0, 2]])
    expected = -(math.log(3 / 6) + math.log(1 / 6)) / 2
    assert unigram_cross_entropy(counts, targets, vocab_size=3) == pytest.approx(expected)
    assert unigram_cross_entropy(np.array([2, 1]), targets, vocab_size=3) == pytest.approx(expected)  # padded


def test_unigram_cross_entropy_prefers_matching_distribution():
    rng = np.random.default_rng(0)
    train = rng.choice(4, size=2000, p=[0.7, 0.1, 0.1, 0.1])
    matching = torch.from_numpy(rng.choice(4, size=500, p=[0.7, 0.1, 0.1, 0.1]))
    mismatched = torch.from_numpy(rng.choice(4, size=500, p=[0.1, 0.1, 0.1, 0.7]))
    ce_match = unigram_cross_entropy(token_counts(train, 4), matching, vocab_size=4)
    ce_mismatch = unigram_cross_entropy(token_counts(train, 4), mismatched, vocab_size=4)
    assert ce_match < math.log(4) < ce_mismatch


def test_unigram_cross_entropy_smooths_unseen_tokens():
    ce = unigram_cross_entropy(token_counts([0, 0, 0], 8), torch.tensor([5]), vocab_size=8)
    assert math.isfinite(ce)
    assert ce == pytest.approx(-math.log(1 / 11))
