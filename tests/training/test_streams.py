"""The training loader on token shards (tokenmill.training.data.open_split): document bounds from the index,
causal-LM windows without replacement within an epoch, batches a pure function of (seed, step) and rank-sliced,
BERT and T5 batches from shards as from in-memory streams, and more than 2**32 tokens in flat memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loader_shards import write_tokens_manifest

from tokenmill.core.indexed import write_index
from tokenmill.training.data import PackedBatches, as_stream, eval_blocks, open_split
from tokenmill.training.objectives import (
    CausalLMObjective,
    MaskedLMObjective,
    SpanCorruptionObjective,
    against_baseline,
    build_objective,
)

SPECIALS = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4, **{f"sentinel_{i}": 5 + i for i in range(100)}}
VOCAB = 3000


def _docs(seed: int, n: int, lo: int = 0, hi: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(105, VOCAB, size=rng.integers(lo, hi)) for _ in range(n)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    docs = {"train": _docs(1, 40), "validation": _docs(2, 9, lo=20)}
    docs["train"][5] = np.array([], dtype=np.int64)  # an empty document: just its EOT
    return write_tokens_manifest(
        tmp_path_factory.mktemp("shards"), docs, vocab_size=VOCAB, specials=SPECIALS, docs_per_shard=7
    ), docs


def _flat(docs) -> np.ndarray:
    return np.concatenate([np.append(d, 0) for d in docs]).astype(np.int64)


def test_open_split_reads_the_shards_as_one_stream_with_document_bounds(manifest):
    tokens, docs = manifest
    train = open_split(tokens, "train")
    flat = _flat(docs["train"])
    assert len(train) == len(flat) == tokens["splits"]["train"]["tokens"] and len(train.shards) == 6
    assert train.num_documents == 40
    assert np.array_equal(train.window(0, len(train)), flat)
    starts, stops = train.document_bounds(np.arange(40))
    lengths = np.array([len(d) + 1 for d in docs["train"]])
    assert np.array_equal(stops - starts, lengths) and np.array_equal(starts[1:], stops[:-1]) and stops[-1] == len(flat)
    positions = np.arange(len(flat))
    assert np.array_equal(train.document_of(positions), np.repeat(np.arange(40), lengths))
    assert np.array_equal(train.unigram_counts, np.bincount(flat, minlength=VOCAB))
    with pytest.raises(ValueError, match="the manifest says"):
        open_split({**tokens, "splits": {"train": {**tokens["splits"]["train"], "tokens": 1}}}, "train")
    with pytest.raises(ValueError, match="megatron-indexed"):
        open_split({**tokens, "format": {"name": "parquet"}}, "train")


def test_causal_lm_draws_every_window_exactly_once_per_epoch(manifest):
    train = open_split(manifest[0], "train")
    data = PackedBatches(train, block_size=16, seed=11)
    n = data.windows_per_epoch
    assert n == (len(train) - 1) // 16
    batch = 7  # epochs and batches out of step: batches straddle epoch boundaries
    seen = np.concatenate([data.window_numbers(s, batch) for s in range(3 * n // batch + 1)])
    for epoch in range(3):
        one = seen[epoch * n : (epoch + 1) * n]
        assert sorted(one.tolist()) == list(range(n))  # no repeat within an epoch, all drawn
    assert not np.array_equal(seen[:n], seen[n : 2 * n])  # each epoch its own order
    x, y = data.batch(5, batch)
    starts = data.window_numbers(5, batch) * 16
    flat = train.window(0, len(train))
    assert torch.equal(x, torch.from_numpy(flat[starts[:, None] + np.arange(16)]))
    assert torch.equal(y, torch.from_numpy(flat[starts[:, None] + np.arange(1, 17)]))


def test_batches_are_a_pure_function_of_seed_and_step_and_ranks_slice_them(manifest):
    train = open_split(manifest[0], "train")
    for family in ("gpt", "bert", "t5"):
        kw = {"block_size": 32, "specials": SPECIALS, "seed": 3, "vocab_size": VOCAB}
        obj, again = (
            build_objective(family, train, **kw),
            build_objective(family, open_split(manifest[0], "train"), **kw),
        )
        for step in (0, 9):
            one = obj.batch(step, 8)
            assert all(torch.equal(one[k], v) for k, v in again.batch(step, 8).items())  # a fresh loader agrees
            parts = [obj.batch(step, 8, rank=r, world_size=2) for r in range(2)]
            assert all(torch.equal(torch.cat([p[k] for p in parts]), v) for k, v in one.items()), family
        assert not torch.equal(obj.batch(1, 8)["input_ids"], obj.batch(2, 8)["input_ids"])


def test_shard_streams_and_in_memory_streams_give_the_same_batches(manifest):
    tokens, docs = manifest
    train, flat = open_split(tokens, "train"), _flat(docs["train"])
    gpt = (CausalLMObjective(train, 16, 4), CausalLMObjective(flat, 16, 4))
    bert = (
        MaskedLMObjective(train, 48, SPECIALS, 4, vocab_size=VOCAB),
        MaskedLMObjective(flat, 48, SPECIALS, 4, vocab_size=VOCAB),
    )
    t5 = (
        SpanCorruptionObjective(train, 40, specials=SPECIALS, seed=4),
        SpanCorruptionObjective(flat, 40, specials=SPECIALS, seed=4),
    )
    for shards, memory in (gpt, bert, t5):
        a, b = shards.batch(3, 6), memory.batch(3, 6)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bert_batches_from_shards_keep_their_semantics(manifest):
    tokens, docs = manifest
    train = open_split(tokens, "train")
    obj = MaskedLMObjective(train, 48, SPECIALS, 0, vocab_size=VOCAB)
    b = obj.batch(0, 64)
    assert b["input_ids"].shape == b["labels"].shape == b["token_type_ids"].shape == (64, 48)
    nsp = b["next_sentence_label"].numpy()
    assert 0.2 < nsp.mean() < 0.8
    doc_text = [d.tolist() for d in docs["train"]]
    for ids, labels, label in zip(b["input_ids"].numpy(), b["labels"].numpy(), nsp):
        original = np.where(labels != -100, labels, ids)
        (seps,) = np.nonzero(ids == SPECIALS["sep"])
        assert ids[0] == SPECIALS["cls"] and len(seps) == 2
        a, bb = original[1 : seps[0]].tolist(), original[seps[0] + 1 : seps[1]].tolist()
        assert a and bb and 0 not in a + bb  # never across an EOT
        home = [i for i, d in enumerate(doc_text) if any(d[j : j + len(a)] == a for j in range(len(d)))]
        assert home, "A is not a span of a document"
        together = a + bb
        is_next = any(
            any(doc_text[i][j : j + len(together)] == together for j in range(len(doc_text[i]))) for i in home
        )
        assert is_next == (label == 0) or label == 1
        assert (labels != -100).sum() >= 1
    assert obj.windows_per_epoch == len(train) // 45


def test_span_corruption_from_shards_reads_windows_without_replacement(manifest):
    train = open_split(manifest[0], "train")
    obj = SpanCorruptionObjective(train, 40, specials=SPECIALS, seed=2)
    n = obj.windows_per_epoch
    assert n == len(train) // obj.raw_length
    starts = np.concatenate([obj.order.windows_of_step(s, 5) for s in range(n // 5)])
    assert len(set(starts.tolist())) == len(starts)
    b = obj.batch(0, 4)
    assert b["input_ids"].shape == (4, 40) and b["labels"].shape == (4, obj.target_length)


def test_eval_reads_the_first_blocks_and_the_baseline_comes_from_the_counts(manifest):
    tokens, docs = manifest
    val = open_split(tokens, "validation")
    flat = _flat(docs["validation"])
    x, y = eval_blocks(val, 16, 5)
    assert torch.equal(x.reshape(-1), torch.from_numpy(flat[:80])) and torch.equal(
        y.reshape(-1), torch.from_numpy(flat[1:81])
    )
    gpt = CausalLMObjective(open_split(tokens, "train"), 16, 0)
    batches = gpt.eval_batches(val, 5, 2)
    scored = against_baseline(
        {"loss": 1.0, "accuracy": 0.1}, gpt, "gpt", batches, open_split(tokens, "train"), VOCAB, SPECIALS
    )
    in_memory = against_baseline(
        {"loss": 1.0, "accuracy": 0.1}, gpt, "gpt", batches, as_stream(_flat(docs["train"])), VOCAB, SPECIALS
    )
    assert scored["unigram_baseline_loss"] == pytest.approx(in_memory["unigram_baseline_loss"])


def _rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def test_more_than_2_to_the_32_tokens_in_flat_memory(tmp_path):
    """Three shards of two 2**30-token documents (sparse files: nothing on disk): 6 * 2**30 tokens > 2**32."""
    doc, shards = 1 << 30, []
    for k in range(3):
        prefix = tmp_path / f"big-{k}"
        with open(f"{prefix}.bin", "wb") as fh:
            fh.truncate(2 * doc * 2)  # uint16
        write_index(f"{prefix}.idx", [doc, doc], np.uint16)
        shards.append({"prefix": str(prefix), "documents": 2, "tokens": 2 * doc, "sha256": "", "idx_sha256": ""})
    np.save(tmp_path / "counts.npy", np.ones(8, dtype=np.int64))
    tokens = {
        "format": {"name": "megatron-indexed", "dtype": "uint16"},
        "splits": {
            "train": {
                "documents": 6,
                "tokens": 6 * doc,
                "unigram_counts": str(tmp_path / "counts.npy"),
                "shards": shards,
            }
        },
    }
    before = _rss()
    train = open_split(tokens, "train")
    assert len(train) == 6 * doc > 1 << 32 and train.num_documents == 6
    data = PackedBatches(train, block_size=1024, seed=0)
    numbers = np.concatenate([data.window_numbers(s, 8) for s in range(40)])
    for step in range(40):
        x, y = data.batch(step, 8)
        assert x.shape == (8, 1024) and int(x.max()) == 0
    starts = numbers * 1024
    assert starts.min() < train.offsets[1] and starts.max() >= train.offsets[2]  # the first and the last shard
    last = train.windows([len(train) - 1025], 1025)  # the very last window
    assert last.shape == (1, 1025)
    assert np.array_equal(train.document_bounds([0, 5])[0], [0, 5 * doc])
    assert int(train.document_of(len(train) - 1)[0]) == 5
    assert _rss() - before < 100 * 2**20


def test_training_logs_the_epoch_and_a_line_for_each_epoch_it_completes(caplog):
    import logging
    from types import SimpleNamespace

    from tokenmill.training import train

    logged = []
    run = SimpleNamespace(
        cfg=SimpleNamespace(train=SimpleNamespace(max_steps=20)),
        engine=SimpleNamespace(get_lr=lambda: [0.1], get_global_grad_norm=lambda: None),
        objective=SimpleNamespace(windows_per_epoch=10, tokens_per_epoch=160),
        accum=2,
        micro=2,
        world=1,  # 4 examples a step: epochs end during steps 3, 5, 8
        spec=SimpleNamespace(predicts_stream=False),
        per_token=1.0,
        peak=None,
        tracker=SimpleNamespace(log_metrics=lambda metrics, step: logged.append((step, metrics))),
    )
    progress = train.Progress()
    caplog.set_level(logging.INFO)
    for done in (3, 6, 9):
        progress.window, progress.window_tokens = {"loss": [1.0, 1.0]}, 10
        train.log_window(run, progress, done)
    assert [m["train/epoch"] for _, m in logged] == [pytest.approx(1.2), pytest.approx(2.4), pytest.approx(3.6)]
    completed = [r.getMessage() for r in caplog.records if "complete" in r.getMessage()]
    assert [line.split(" complete")[0] for line in completed] == ["train: epoch 1", "train: epoch 2", "train: epoch 3"]
    assert "160 tokens per epoch" in completed[0]
