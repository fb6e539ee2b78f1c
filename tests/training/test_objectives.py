"""training.objectives: batches and losses of the causal LM, BERT (MLM + NSP) and T5 (span corruption) objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenmill.training.data import PackedBatches, eval_blocks
from tokenmill.training.objectives import (
    CausalLMObjective,
    MaskedLMObjective,
    Seq2SeqObjective,
    SpanCorruptionObjective,
    build_objective,
    sentence_end_table,
    span_corruption_lengths,
)

SPECIALS = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4, **{f"sentinel_{i}": 5 + i for i in range(100)}}
EOT, PAD, CLS, SEP, MASK = (SPECIALS[k] for k in ("eot", "pad", "cls", "sep", "mask"))
SENTINELS = [SPECIALS[f"sentinel_{i}"] for i in range(100)]
FIRST = 105  # first regular id


def make_stream(doc_lengths) -> np.ndarray:
    """Documents ending in EOT whose regular tokens are all distinct: token ``FIRST + p`` sits at position ``p``,
    so any segment can be located in the stream from its ids alone."""
    parts = []
    for n in doc_lengths:
        parts += [1] * n + [0]
    is_regular = np.array(parts, dtype=bool)
    return np.where(is_regular, FIRST + np.arange(len(parts)), EOT).astype(np.int64)


DOC_LENGTHS = [1, 0, 3, 180, 40, 2, 95, 1, 260, 7, 120, 33, 150, 12, 75, 300, 5, 64, 1, 210]
STREAM = make_stream(DOC_LENGTHS)
VOCAB = int(STREAM.max()) + 1
DOC_OF = np.cumsum(STREAM == EOT) - (STREAM == EOT)  # document index of every position


def pos(ids) -> np.ndarray:
    return np.asarray(ids) - FIRST


def assert_contiguous_in_stream(seg: np.ndarray):
    assert len(seg) > 0
    assert (seg >= FIRST).all(), "a segment holds a special id"
    p = pos(seg)
    assert np.array_equal(p, p[0] + np.arange(len(seg))), "segment is not a contiguous run of the stream"
    assert (STREAM[p[0] : p[-1] + 1] != EOT).all()


def mlm(**kw) -> MaskedLMObjective:
    kw.setdefault("vocab_size", VOCAB)
    return MaskedLMObjective(STREAM, kw.pop("block_size", 64), SPECIALS, kw.pop("seed", 0), **kw)


def span(**kw) -> SpanCorruptionObjective:
    return SpanCorruptionObjective(STREAM, kw.pop("input_length", 64), specials=SPECIALS, seed=kw.pop("seed", 0), **kw)


def seq2seq(seed=0) -> Seq2SeqObjective:
    rng = np.random.default_rng(1)
    pairs = [
        (rng.integers(FIRST, VOCAB, size=rng.integers(1, 40)), rng.integers(FIRST, VOCAB, size=rng.integers(1, 20)))
        for _ in range(50)
    ]
    return Seq2SeqObjective(pairs, input_length=24, target_length=12, specials=SPECIALS, seed=seed)


FACTORIES = {
    "causal": lambda seed=0: CausalLMObjective(STREAM, 32, seed),
    "mlm_nsp": lambda seed=0: mlm(seed=seed),
    "mlm_only": lambda seed=0: mlm(seed=seed, nsp=False),
    "span": lambda seed=0: span(seed=seed),
    "seq2seq": seq2seq,
}


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def segments(row_ids, row_labels):
    """Original A and B of one MLM example (masked positions restored from the labels)."""
    orig = np.where(row_labels != -100, row_labels, row_ids)
    seps = np.flatnonzero(orig == SEP)
    return orig[1 : seps[0]], orig[seps[0] + 1 : seps[1]]


# --------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("kind", FACTORIES)
def test_batches_are_deterministic_per_seed_and_step(kind):
    make = FACTORIES[kind]
    b = make().batch(3, 8)
    assert equal(b, make().batch(3, 8))
    assert not equal(b, make().batch(4, 8))
    assert not equal(b, make(seed=1).batch(3, 8))
    assert all(t.dtype == torch.int64 and t.shape[0] == 8 for t in b.values())


@pytest.mark.parametrize("kind", FACTORIES)
def test_rank_slices_concatenate_to_single_process_batch(kind):
    obj = FACTORIES[kind]()
    for step in (0, 5):
        whole = obj.batch(step, 8)
        parts = [obj.batch(step, 8, rank=r, world_size=2) for r in range(2)]
        assert equal(whole, {k: torch.cat([p[k] for p in parts]) for k in whole})
    with pytest.raises(ValueError, match="divisible"):
        obj.batch(0, 7, rank=0, world_size=2)


# --------------------------------------------------------------------------- causal LM


def test_causal_lm_wraps_packed_batches_and_eval_blocks():
    obj = CausalLMObjective(STREAM, 32, seed=5)
    x, y = PackedBatches(STREAM, 32, seed=5).batch(2, 6)
    b = obj.batch(2, 6)
    assert torch.equal(b["input_ids"], x) and torch.equal(b["labels"], y)
    assert obj.tokens(b) == 6 * 32
    batches = obj.eval_batches(STREAM, max_examples=10, batch_size=4)
    assert [len(v["input_ids"]) for v in batches] == [4, 4, 2]
    vx, vy = eval_blocks(STREAM, 32, 10)
    assert torch.equal(torch.cat([v["input_ids"] for v in batches]), vx)
    assert torch.equal(torch.cat([v["labels"] for v in batches]), vy)


# --------------------------------------------------------------------------- masked LM + NSP


def test_mlm_layout_of_cls_segments_sep_and_padding():
    obj = mlm(block_size=64)
    b = obj.batch(0, 64)
    ids, tt, am, labels = (b[k].numpy() for k in ("input_ids", "token_type_ids", "attention_mask", "labels"))
    assert ids.shape == tt.shape == am.shape == labels.shape == (64, 64) and b["next_sentence_label"].shape == (64,)
    full = 0
    for i in range(64):
        a, bb = segments(ids[i], labels[i])
        n = 3 + len(a) + len(bb)
        assert len(a) >= 1 and len(bb) >= 1 and n <= 64
        full += n == 64
        assert ids[i, 0] == CLS and ids[i, 1 + len(a)] == SEP and ids[i, n - 1] == SEP
        assert (ids[i, n:] == PAD).all() and not np.isin(ids[i, :n], [PAD, EOT]).any()
        assert np.array_equal(am[i], (np.arange(64) < n).astype(np.int64))
        expected_tt = np.zeros(64, dtype=np.int64)
        expected_tt[2 + len(a) : n] = 1
        assert np.array_equal(tt[i], expected_tt)
    assert full > 32  # long documents fill the block
    assert obj.tokens(b) == int(am.sum())


def test_mlm_isnext_pairs_are_contiguous_and_notnext_come_from_another_document():
    obj = mlm(block_size=48)
    b = obj.batch(1, 400)
    nsp = b["next_sentence_label"].numpy()
    assert 0.42 < nsp.mean() < 0.58  # 50/50 IsNext / NotNext
    for row_ids, row_labels, label in zip(b["input_ids"].numpy(), b["labels"].numpy(), nsp):
        a, bb = segments(row_ids, row_labels)
        assert_contiguous_in_stream(a)
        assert_contiguous_in_stream(bb)
        if label == 0:
            assert pos(bb)[0] == pos(a)[-1] + 1  # B continues A in the same document (no EOT in between)
        else:
            assert DOC_OF[pos(bb)[0]] != DOC_OF[pos(a)[0]]


def test_mlm_masks_15_percent_of_segment_tokens_80_10_10_and_never_specials():
    obj = mlm(block_size=64)
    b = obj.batch(2, 500)
    ids, labels, am = b["input_ids"].numpy(), b["labels"].numpy(), b["attention_mask"].numpy()
    chosen = labels != -100
    n_seg = am.sum(1) - 3  # A + B tokens of each example
    assert np.array_equal(chosen.sum(1), np.maximum(1, np.round(0.15 * n_seg)))  # at least one per example
    assert abs(chosen.sum() / n_seg.sum() - 0.15) < 0.01
    # Labels are the original ids: regular tokens only, never CLS / SEP / PAD positions.
    assert (labels[chosen] >= FIRST).all()
    assert not chosen[:, 0].any() and not chosen[am == 0].any()
    assert not chosen[ids == SEP].any()
    got = ids[chosen]
    to_mask, kept = got == MASK, got == labels[chosen]
    swapped = ~to_mask & ~kept
    assert abs(to_mask.mean() - 0.8) < 0.04
    assert abs(kept.mean() - 0.1) < 0.03
    assert abs(swapped.mean() - 0.1) < 0.03
    assert (got[swapped] >= FIRST).all() and (got[swapped] < VOCAB).all()  # random regular ids
    assert len(np.unique(got[swapped])) > 0.8 * swapped.sum()  # ... drawn from the whole vocabulary
    assert (ids[~chosen & (am == 1)] != MASK).all()


def test_mlm_without_nsp_has_only_continuations_and_no_nsp_label():
    b = mlm(nsp=False).batch(0, 100)
    assert "next_sentence_label" not in b
    for row_ids, row_labels in zip(b["input_ids"].numpy(), b["labels"].numpy()):
        a, bb = segments(row_ids, row_labels)
        assert_contiguous_in_stream(np.concatenate([a, bb]))


def test_mlm_cuts_segments_at_sentence_ends_when_given():
    table = np.zeros(VOCAB, dtype=bool)
    table[FIRST::7] = True  # every 7th token of the stream ends a sentence
    ends_at_sentence = {}
    for with_table in (True, False):
        obj = mlm(block_size=64, sentence_end=table if with_table else None, nsp=False)
        b = obj.batch(0, 300)
        hits = []
        for row_ids, row_labels in zip(b["input_ids"].numpy(), b["labels"].numpy()):
            a, bb = segments(row_ids, row_labels)
            chunk = np.concatenate([a, bb])
            if with_table:
                starts_sentence = pos(a)[0] == 0 or STREAM[pos(a)[0] - 1] == EOT or table[STREAM[pos(a)[0] - 1]]
                assert starts_sentence, "A does not start at a sentence start"
                if table[chunk[:-1]].any():  # a cut at a sentence end was possible
                    assert table[a[-1]], "A does not end at a sentence end"
            hits.append(table[a[-1]])
        ends_at_sentence[with_table] = np.mean(hits)
    assert ends_at_sentence[True] > 0.95 and ends_at_sentence[False] < 0.35


def test_mlm_short_documents_and_errors():
    lengths = [1, 1, 2, 1, 0, 1, 3, 1]  # mostly one-token documents: only two can hold an IsNext pair
    stream = make_stream(lengths)
    obj = MaskedLMObjective(stream, 16, SPECIALS, seed=0, vocab_size=VOCAB)
    b = obj.batch(0, 60)
    nsp = b["next_sentence_label"].numpy()
    assert 0 < nsp.mean() < 1
    for row_ids, row_labels, label in zip(b["input_ids"].numpy(), b["labels"].numpy(), nsp):
        a, bb = segments(row_ids, row_labels)
        pa, pb = pos(a), pos(bb)
        assert (stream[pa] == a).all() and (stream[pb] == bb).all() and EOT not in a and EOT not in bb
        assert len(a) >= 1 and len(bb) >= 1 and len(a) + len(bb) <= 13
        if label == 0:
            assert np.array_equal(np.concatenate([pa, pb]), pa[0] + np.arange(len(a) + len(bb)))
    # Document lengths are not scanned up front (a stream may hold billions): the batch finds out.
    with pytest.raises(ValueError, match="2 or more tokens"):
        MaskedLMObjective(make_stream([1, 1, 1]), 16, SPECIALS, seed=0, vocab_size=VOCAB).batch(0, 2)
    with pytest.raises(ValueError, match="two non-empty documents"):
        MaskedLMObjective(make_stream([30]), 16, SPECIALS, seed=0, vocab_size=VOCAB)
    assert MaskedLMObjective(make_stream([30]), 16, SPECIALS, seed=0, nsp=False, vocab_size=VOCAB).batch(0, 2)


def test_mlm_eval_batches_are_fixed_whatever_the_seed():
    val = make_stream([50, 80, 20, 60])
    first = mlm(seed=0).eval_batches(val, max_examples=10, batch_size=4)
    again = mlm(seed=9).eval_batches(val, max_examples=10, batch_size=4)
    assert [len(v["input_ids"]) for v in first] == [4, 4, 2]
    assert all(equal(x, y) for x, y in zip(first, again))
    for row_ids, row_labels in zip(first[0]["input_ids"].numpy(), first[0]["labels"].numpy()):
        a, bb = segments(row_ids, row_labels)
        assert pos(np.concatenate([a, bb])).max() < len(val)  # from the validation stream


def test_sentence_end_table_from_a_tokenizer():
    from tokenizers import Tokenizer, models

    vocab = {"<|endoftext|>": 0, "Hello": 1, "world.": 2, "why?": 3, "wow!": 4, 'said."': 5, "e.g": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.add_special_tokens(["<|endoftext|>"])
    assert sentence_end_table(tok).tolist() == [False, False, True, True, True, True, False]


# --------------------------------------------------------------------------- span corruption


def reconstruct(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """Raw window from one example (sentinels replaced by their spans), and the sentinels of inputs / targets."""
    spans, current = {}, None
    for t in targets[:-1]:  # last token is EOS
        if t in SENTINELS:
            current = t
            spans[current] = []
        else:
            spans[current].append(t)
    out, in_sentinels = [], []
    for t in inputs[:-1]:
        if t in SENTINELS:
            in_sentinels.append(int(t))
            out += spans[t]
        else:
            out.append(t)
    return np.array(out), in_sentinels, list(spans)


def test_span_corruption_lengths_match_t5():
    assert span_corruption_lengths(512) == (568, 114)  # T5's numbers for inputs of 512
    raw, target = span_corruption_lengths(64)
    obj = span(input_length=64)
    assert (obj.raw_length, obj.target_length) == (raw, target)


def test_span_corruption_inputs_and_targets_rebuild_the_raw_window():
    obj = span(input_length=64)
    b = obj.batch(0, 64)
    inputs, am = b["input_ids"].numpy(), b["attention_mask"].numpy()
    labels, dam = b["labels"].numpy(), b["decoder_attention_mask"].numpy()
    assert inputs.shape == (64, 64) and labels.shape == (64, obj.target_length)
    noise, n_spans, span_lengths = 0, 0, []
    for i in range(64):
        src, tgt = inputs[i, : am[i].sum()], labels[i, : dam[i].sum()]
        assert src[-1] == EOT and tgt[-1] == EOT  # EOS
        assert (inputs[i, am[i].sum() :] == PAD).all()
        raw, in_s, out_s = reconstruct(src, tgt)
        assert len(raw) == obj.raw_length
        # The window is a contiguous piece of the stream (it may cross documents).
        first = int(np.flatnonzero(raw != EOT)[0])
        start = int(pos(raw[first])) - first
        assert np.array_equal(raw, STREAM[start : start + obj.raw_length])
        k = len(in_s)
        assert in_s == out_s == SENTINELS[:k]  # sentinel_0, sentinel_1, ... in order
        assert tgt[0] == SENTINELS[0]
        noise += len(tgt) - 1 - k
        n_spans += k
        boundaries = np.flatnonzero(np.isin(tgt, SENTINELS))
        span_lengths += np.diff(np.append(boundaries, len(tgt) - 1)).tolist()
        span_lengths[-k:] = [x - 1 for x in span_lengths[-k:]]
    assert abs(noise / (64 * obj.raw_length) - 0.15) < 0.01
    assert 2.5 < noise / n_spans < 3.5
    assert min(span_lengths) >= 1 and len(set(span_lengths)) > 2  # random segmentation, not fixed-size spans
    assert obj.tokens(b) == int(am.sum() + dam.sum())


def test_span_corruption_decoder_inputs_are_labels_shifted_right_and_padding_is_ignored():
    obj = span(input_length=64, target_length=40)  # longer than needed: targets are padded
    b = obj.batch(1, 8)
    labels, dec, dam = b["labels"], b["decoder_input_ids"], b["decoder_attention_mask"]
    assert labels.shape == dec.shape == (8, 40)
    assert (dec[:, 0] == PAD).all()  # T5's decoder start id
    assert torch.equal(dec[:, 1:], labels.where(labels != -100, PAD)[:, :-1])
    assert torch.equal(labels == -100, dam == 0) and (dam.sum(1) < 40).all()
    with pytest.raises(ValueError, match="target_length"):
        span(input_length=64, target_length=5)
    few = {k: v for k, v in SPECIALS.items() if not k.startswith("sentinel_")} | {"sentinel_0": 5, "sentinel_1": 6}
    with pytest.raises(ValueError, match="sentinel"):
        SpanCorruptionObjective(STREAM, 64, specials=few, seed=0)


def test_span_corruption_eval_batches_are_consecutive_windows():
    obj = span(input_length=64)
    batches = obj.eval_batches(STREAM, max_examples=5, batch_size=2)
    assert [len(v["input_ids"]) for v in batches] == [2, 2, 1]
    assert all(equal(x, y) for x, y in zip(batches, span(input_length=64, seed=3).eval_batches(STREAM, 5, 2)))
    rows = [
        (v["input_ids"][i].numpy(), v["labels"][i].numpy(), v["attention_mask"][i].sum(), v["labels"][i] != -100)
        for v in batches
        for i in range(len(v["input_ids"]))
    ]
    for j, (src, tgt, n, valid) in enumerate(rows):
        raw, _, _ = reconstruct(src[:n], tgt[valid.numpy()])
        assert np.array_equal(raw, STREAM[j * obj.raw_length : (j + 1) * obj.raw_length])


# --------------------------------------------------------------------------- seq2seq


def test_seq2seq_truncates_adds_eos_and_picks_pairs():
    obj = seq2seq()
    b = obj.batch(0, 16)
    src_len, tgt_len = b["attention_mask"].sum(1), b["decoder_attention_mask"].sum(1)
    for i in range(16):
        src, tgt = b["input_ids"][i, : src_len[i]].numpy(), b["labels"][i, : tgt_len[i]].numpy()
        assert src[-1] == EOT and tgt[-1] == EOT
        assert any(np.array_equal(src[:-1], s[:23]) and np.array_equal(tgt[:-1], t[:11]) for s, t in obj.pairs)
    assert (src_len == 24).any() and (src_len < 24).any()  # some truncated, some padded
    with_eos = Seq2SeqObjective([(np.array([FIRST, EOT]), np.array([FIRST + 1]))], 8, 8, SPECIALS, seed=0).batch(0, 1)
    assert with_eos["input_ids"][0, :3].tolist() == [FIRST, EOT, PAD]  # a trailing EOT is not doubled
    assert len(obj.eval_batches(obj.pairs, max_examples=10, batch_size=4)) == 3


# --------------------------------------------------------------------------- losses


class TinyModel(nn.Module):
    """Embedding + linear heads with the call signature of each family."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, vocab)
        self.nsp = nn.Linear(8, 2)

    def forward(
        self,
        input_ids,
        token_type_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        labels=None,  # the causal LM passes them; logits back are scored by the objective
    ):
        h = self.emb(input_ids)  # (B, S, 8)
        if decoder_input_ids is not None:
            return self.head(self.emb(decoder_input_ids) + h.mean(1, keepdim=True))  # (B, L, V)
        if token_type_ids is not None:
            return self.head(h), self.nsp(h[:, 0])
        return self.head(h)


class Oracle(nn.Module):
    """Outputs the batch's own labels with huge logits."""

    def __init__(self, batch, vocab: int):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(100.0))
        self.batch, self.vocab = batch, vocab

    def forward(self, **_):
        labels = self.batch["labels"]
        out = self.scale * F.one_hot(labels.clamp(min=0), self.vocab).float()
        if "next_sentence_label" in self.batch:
            return out, self.scale * F.one_hot(self.batch["next_sentence_label"], 2).float()
        return out


METRIC_KEYS = {
    "causal": {"loss"},
    "mlm_nsp": {"loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"},
    "mlm_only": {"loss", "mlm_loss", "mlm_accuracy"},
    "span": {"loss", "span_loss", "span_accuracy"},
    "seq2seq": {"loss", "accuracy"},
}


@pytest.mark.parametrize("kind", FACTORIES)
def test_loss_is_finite_differentiable_and_perfect_for_an_oracle(kind):
    obj = FACTORIES[kind]()
    batch = obj.batch(0, 4)
    torch.manual_seed(0)
    model = TinyModel(VOCAB)
    loss, metrics = obj.loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert math.log(VOCAB) * 0.5 < loss.item() < math.log(VOCAB) * 2  # about uniform for an untrained model
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    assert set(metrics) == METRIC_KEYS[kind]
    assert all(isinstance(s, float) and isinstance(c, float) and c > 0 for s, c in metrics.values())
    total, count = metrics["loss"]
    assert total / count == pytest.approx(loss.item(), rel=1e-5)
    if kind == "mlm_nsp":
        (m, mc), (n, nc) = metrics["mlm_loss"], metrics["nsp_loss"]
        assert m / mc + n / nc == pytest.approx(loss.item(), rel=1e-5)
        assert mc == (batch["labels"] != -100).sum().item() and nc == 4

    oracle = Oracle(batch, VOCAB)
    loss, metrics = obj.loss(oracle, batch)
    loss.backward()
    assert loss.item() < 1e-6 and oracle.scale.grad is not None
    for key, (s, c) in metrics.items():
        if key.endswith("accuracy"):
            assert s / c == 1.0


# --------------------------------------------------------------------------- dispatch


def test_build_objective_dispatches_by_family():
    common = dict(block_size=64, specials=SPECIALS, seed=0, vocab_size=VOCAB)
    assert isinstance(build_objective("gpt", STREAM, **common), CausalLMObjective)
    bert = build_objective("bert", STREAM, **common, nsp=False, mask_prob=0.2)
    assert isinstance(bert, MaskedLMObjective) and bert.name == "mlm_nsp" and not bert.nsp and bert.mask_prob == 0.2
    for family in ("t5", "transformer"):
        obj = build_objective(family, STREAM, **common)
        assert isinstance(obj, SpanCorruptionObjective) and obj.input_length == 64
    assert build_objective("t5", STREAM, **common, noise_density=0.3).num_noise == round(
        0.3 * span_corruption_lengths(64, 0.3)[0]
    )
    with pytest.raises(ValueError, match="gpt, bert, t5, transformer"):
        build_objective("llama", STREAM, **common)
