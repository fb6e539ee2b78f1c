"""The indexed token-shard format (tokenmill/core/indexed.py): round trip, megatron-core reads it, streaming windows,
the stateless epoch order, and a stream of more than 2**32 tokens on sparse files."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from tokenmill.core.indexed import (
    IndexedShard,
    IndexedShardWriter,
    TokenStream,
    WindowOrder,
    dtype_for,
    num_windows,
    write_index,
)


def _documents(rng: np.random.Generator, vocab: int, n: int = 7) -> list[np.ndarray]:
    docs = [rng.integers(0, vocab, size=rng.integers(1, 50)) for _ in range(n)]
    docs[2] = np.array([], dtype=np.int64)  # an empty document is kept
    docs[3][0], docs[3][-1] = 0, vocab - 1  # the extremes of the vocabulary
    return docs


def _write(prefix, docs, dtype) -> dict:
    with IndexedShardWriter(prefix, dtype) as writer:
        for doc in docs:
            writer.add_document(doc)
        return writer.finish()


@pytest.mark.parametrize(("vocab", "dtype"), [(50257, "uint16"), (65536, "uint16"), (151_000, "int32")])
def test_round_trip(tmp_path, vocab, dtype):
    assert dtype_for(vocab).name == dtype
    docs = _documents(np.random.default_rng(vocab), vocab)
    info = _write(tmp_path / "shard", docs, dtype_for(vocab))

    assert info["documents"] == len(docs) and info["tokens"] == sum(map(len, docs)) and info["dtype"] == dtype
    assert info["sha256"] == hashlib.sha256(open(info["bin"], "rb").read()).hexdigest()
    assert info["idx_sha256"] == hashlib.sha256(open(info["idx"], "rb").read()).hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["shard.bin", "shard.idx"]  # no temporary files left

    shard = IndexedShard(tmp_path / "shard")
    assert shard.dtype == np.dtype(dtype) and shard.num_documents == len(docs) and shard.num_tokens == info["tokens"]
    for i, doc in enumerate(docs):
        np.testing.assert_array_equal(shard.document(i), doc)
    np.testing.assert_array_equal(shard.tokens, np.concatenate(docs))


def test_writer_rejects_out_of_range_ids_and_publishes_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="token ids"):
        with IndexedShardWriter(tmp_path / "s", np.uint16) as writer:
            writer.add_document([1, 2, 3])
            writer.add_document([65536])
    assert os.listdir(tmp_path) == []


def test_megatron_core_reads_our_shards_and_writes_the_same_bytes(tmp_path):
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    for vocab in (32000, 200_000):
        dtype = dtype_for(vocab)
        docs = _documents(np.random.default_rng(vocab), vocab, n=20)
        prefix = str(tmp_path / f"ours{vocab}")
        _write(prefix, docs, dtype)

        dataset = IndexedDataset(prefix)
        assert len(dataset) == len(docs)  # sequences
        np.testing.assert_array_equal(dataset.document_indices, np.arange(len(docs) + 1))
        assert dataset.index.dtype == dtype.type
        for i in (0, 2, 3, 11, len(docs) - 1):
            np.testing.assert_array_equal(dataset[i], docs[i])
            assert dataset[i].dtype == dtype

        # Megatron's own builder, fed the same documents, writes byte-identical files.
        theirs = str(tmp_path / f"theirs{vocab}")
        builder = IndexedDatasetBuilder(theirs + ".bin", dtype=dtype.type)
        for doc in docs:
            builder.add_document(torch.from_numpy(doc.astype(np.int64)), [len(doc)])
        builder.finalize(theirs + ".idx")
        for ext in (".bin", ".idx"):
            assert open(prefix + ext, "rb").read() == open(theirs + ext, "rb").read(), ext


def test_reader_joins_the_sequences_of_a_document(tmp_path):
    """Megatron's preprocessing may split a document into sentences: several sequences, one document."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    prefix = str(tmp_path / "split")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    builder.add_document(torch.tensor([1, 2, 3, 4, 5]), [2, 3])
    builder.add_document(torch.tensor([6]), [1])
    builder.finalize(prefix + ".idx")

    shard = IndexedShard(prefix)
    assert (shard.num_sequences, shard.num_documents) == (3, 2)
    np.testing.assert_array_equal(shard.document(0), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(shard.document(1), [6])


def test_token_stream_windows_cross_shard_boundaries(tmp_path):
    rng = np.random.default_rng(0)
    arrays = []
    for k, (n, vocab) in enumerate([(100, 50000), (0, 50000), (3, 70000), (257, 50000), (41, 70000)]):
        tokens = rng.integers(0, vocab, size=n)
        _write(tmp_path / f"s{k}", [tokens[:10], tokens[10:]] if n else [], dtype_for(vocab))
        arrays.append(tokens)
    flat = np.concatenate(arrays)
    stream = TokenStream([tmp_path / f"s{k}" for k in range(5)])
    assert len(stream) == len(flat)

    for start, length in [(0, 100), (95, 10), (99, 2), (100, 3), (98, 10), (0, len(flat)), (len(flat) - 5, 5)]:
        window = stream.window(start, length)
        assert window.dtype == np.int64
        np.testing.assert_array_equal(window, flat[start : start + length])

    starts = np.concatenate([rng.integers(0, len(flat) - 17, size=50), [0, 90, 99, 100, 101, 102, len(flat) - 17]])
    batch = stream.windows(starts, 17)
    assert batch.shape == (len(starts), 17) and batch.dtype == np.int64
    np.testing.assert_array_equal(batch, flat[starts[:, None] + np.arange(17)])

    with pytest.raises(IndexError):
        stream.windows([len(flat) - 16], 17)


def test_token_stream_document_bounds_and_document_of_come_from_the_index(tmp_path):
    """Global document numbers across shards; empty documents and empty shards; Megatron's several sequences a
    document; an in-memory shard reads alike."""
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    docs = [[1, 2, 3], [], [4], [5, 6]]
    _write(tmp_path / "a", docs, np.uint16)
    _write(tmp_path / "empty", [], np.uint16)
    builder = IndexedDatasetBuilder(str(tmp_path / "m.bin"), dtype=np.uint16)
    builder.add_document(torch.tensor([7, 8, 9, 10, 11]), [2, 3])  # one document of two sequences
    builder.add_document(torch.tensor([12]), [1])
    builder.finalize(str(tmp_path / "m.idx"))
    _write(tmp_path / "b", [[13, 14], []], np.int32)
    memory = IndexedShard.in_memory(np.array([15, 16, 17], dtype=np.uint16), [1, 0, 2])
    stream = TokenStream([tmp_path / "a", tmp_path / "empty", tmp_path / "m", tmp_path / "b", memory])

    lengths = [3, 0, 1, 2, 5, 1, 2, 0, 1, 0, 2]
    assert stream.num_documents == len(lengths) and len(stream) == sum(lengths) == 17
    starts, stops = stream.document_bounds(np.arange(len(lengths)))
    np.testing.assert_array_equal(stops - starts, lengths)
    np.testing.assert_array_equal(starts, np.cumsum(lengths) - lengths)
    flat = stream.window(0, len(stream))
    np.testing.assert_array_equal(flat, np.arange(1, 18))
    np.testing.assert_array_equal(flat[starts[4] : stops[4]], [7, 8, 9, 10, 11])
    owner = np.repeat(np.arange(len(lengths)), lengths)  # empty documents hold no position
    np.testing.assert_array_equal(stream.document_of(np.arange(len(stream))), owner)
    with pytest.raises(IndexError):
        stream.document_bounds([len(lengths)])
    with pytest.raises(IndexError):
        stream.document_of([len(stream)])


def test_num_windows():
    # Window w covers tokens [w L, w L + L + 1): the last one must end inside the stream.
    assert num_windows(1025, 1024) == 1 and num_windows(1024, 1024) == 0 and num_windows(2049, 1024) == 2
    assert num_windows(2048, 1024) == 1


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1_000_003])
@pytest.mark.parametrize("seed", [0, 1234])
def test_window_order_is_a_permutation_per_epoch(n, seed):
    order = WindowOrder(n, seed)
    epochs = [order.index(epoch, np.arange(n)) for epoch in (0, 1, 5)]
    for perm in epochs:
        assert perm.dtype == np.int64
        np.testing.assert_array_equal(np.sort(perm), np.arange(n))  # every window exactly once
    if n >= 1000:
        assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
        assert not np.array_equal(epochs[0], np.arange(n))
        assert not np.array_equal(epochs[0], WindowOrder(n, seed + 1).index(0, np.arange(n)))
    # A pure function of (seed, epoch, i): a fresh object, scalar lookups, any subset agree.
    again = WindowOrder(n, seed)
    np.testing.assert_array_equal(again.index(1, np.arange(n)), epochs[1])
    picks = np.random.default_rng(n).integers(0, n, size=20)
    np.testing.assert_array_equal(again.index(5, picks), epochs[2][picks])
    assert again.index(0, n - 1) == epochs[0][n - 1]


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 6_291_455, 2**40 + 3])
def test_window_order_python_and_numpy_paths_agree(n):
    """A few positions go through Python ints, many through numpy: the same permutation, bit for bit."""
    order = WindowOrder(n, 5)
    pos = np.random.default_rng(n).integers(0, n, size=4 * WindowOrder._SMALL)
    many = order.index(3, pos)
    few = np.concatenate([order.index(3, part) for part in np.split(pos, 8)])
    np.testing.assert_array_equal(many, few)
    assert order.index(3, int(pos[-1])) == many[-1]


def test_windows_of_step_runs_epochs_back_to_back():
    order = WindowOrder(10, seed=3)
    steps = np.concatenate([order.windows_of_step(step, 4) for step in range(5)])  # 20 positions: 2 epochs
    np.testing.assert_array_equal(steps[:10], order.index(0, np.arange(10)))
    np.testing.assert_array_equal(steps[10:], order.index(1, np.arange(10)))
    np.testing.assert_array_equal(order.windows_of_step(2, 4), steps[8:12])  # straddles epochs 0 and 1
    np.testing.assert_array_equal(WindowOrder(10, seed=3).windows_of_step(3, 4), steps[12:16])  # resume
    big = order.windows_of_step(1, 25)  # larger than an epoch: positions 25..49 = epochs 2, 3, 4
    np.testing.assert_array_equal(big[5:15], order.index(3, np.arange(10)))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_stream_beyond_2_to_the_32_tokens_on_sparse_files(tmp_path):
    """Three shards of 1.5e9 uint16 tokens each (9 GB apparent, next to nothing on disk): the stream indexes past
    2**32 tokens and drawing windows maps only the pages read."""
    per_shard, docs = 1_500_000_000, 3  # a document under 2**31 tokens: the index's lengths are int32
    prefixes = [tmp_path / f"big{k}" for k in range(3)]
    for prefix in prefixes:
        with open(f"{prefix}.bin", "wb") as fh:
            fh.truncate(per_shard * 2)
        write_index(f"{prefix}.idx", [per_shard // docs] * docs, np.uint16)
    # Known tokens near the end of the last shard.
    marks = np.arange(1, 9, dtype="<u2") * 1000
    at = per_shard - 2000
    with open(f"{prefixes[-1]}.bin", "r+b") as fh:
        fh.seek(at * 2)
        fh.write(marks.tobytes())

    before = _rss_bytes()
    stream = TokenStream(prefixes)
    total = 3 * per_shard
    assert len(stream) == total > 2**32
    last_start = 2 * per_shard + at
    np.testing.assert_array_equal(stream.window(last_start, 8), marks)
    np.testing.assert_array_equal(stream.window(last_start - 2, 4), [0, 0, 1000, 2000])
    starts = np.array([0, 123_456_789, per_shard - 3, 2 * per_shard - 500, 2**32 + 17, last_start - 1, total - 1025])
    batch = stream.windows(starts, 1025)
    assert batch.shape == (len(starts), 1025)
    np.testing.assert_array_equal(batch[5, 1:9], marks)
    assert not batch[[0, 1, 2, 3, 4, 6]].any()  # the sparse holes read as zeros
    shard = IndexedShard(prefixes[-1])
    np.testing.assert_array_equal(shard.document(docs - 1)[-2000:-1992], marks)
    grown = _rss_bytes() - before
    print(f"RSS grew {grown / 2**20:.1f} MiB over a {total:,}-token stream")
    assert grown < 100 * 2**20

    used = sum(os.stat(f"{p}.bin").st_blocks * 512 for p in prefixes)
    assert used < 10 * 2**20, f"{used} bytes on disk"
