"""The unigram baseline every family is scored against (tokenmill.training.objectives): one estimator for every
family (the stream's frequencies, the objective's own special tokens at their sampled share), and the check that
catches a model that learned token frequencies only (accuracy equal to the most frequent token's rate); and
next-sentence prediction against always answering the majority label."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from tokenmill.training.data import as_stream
from tokenmill.training.families import spec_for
from tokenmill.training.objectives import (
    IGNORE,
    NSP_METRICS,
    accumulate,
    against_baseline,
    beyond_frequencies,
    label_counts,
    nsp_against_chance,
)

SPECIALS = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4, **{f"sentinel_{i}": 5 + i for i in range(100)}}
VOCAB = 400
REGULAR = np.arange(105, VOCAB)


def _stream(seed: int, docs: int = 120, successor: np.ndarray | None = None) -> np.ndarray:
    """Documents of Zipf-distributed regular tokens, each ending with EOT. With ``successor``, a token is
    followed by ``successor[token]`` 70% of the time: context that a model can learn beyond frequencies."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(REGULAR) + 1)
    out = []
    for _ in range(docs):
        doc = rng.choice(REGULAR, size=int(rng.integers(30, 90)), p=weights / weights.sum())
        if successor is not None:
            for i in range(1, len(doc)):
                if rng.random() < 0.7:
                    doc[i] = successor[doc[i - 1]]
        out.extend(doc.tolist() + [SPECIALS["eot"]])
    return np.array(out, dtype=np.int64)


def _objective(family: str, tokens: np.ndarray):
    return (
        spec_for(family)
        .objective_class()
        .from_stream(tokens, block_size=32, specials=SPECIALS, seed=3, vocab_size=VOCAB)
    )


class FrequencyOnlyModel(nn.Module):
    """What a model that learned token frequencies and nothing else predicts: the same distribution (the
    baseline's own counts) at every position, whatever the context."""

    def __init__(self, counts: np.ndarray, family: str):
        super().__init__()
        self.log_p = torch.log(torch.as_tensor(counts, dtype=torch.float32) + 1.0)
        self.family = family

    def forward(self, input_ids, decoder_input_ids=None, **_):
        ids = input_ids if decoder_input_ids is None else decoder_input_ids
        logits = self.log_p.expand(*ids.shape, -1)  # (B, T, V)
        return (logits, torch.zeros(ids.size(0), 2)) if self.family == "bert" else logits


class SuccessorModel(nn.Module):
    """A causal LM that learned the stream's context: most of its mass on each token's usual successor."""

    def __init__(self, successor: np.ndarray):
        super().__init__()
        self.successor = torch.as_tensor(successor)

    def forward(self, input_ids, **_):
        logits = torch.zeros(*input_ids.shape, VOCAB)  # (B, T, V)
        return logits.scatter(-1, self.successor[input_ids].unsqueeze(-1), 8.0)


def _score(model, objective, family: str, train: np.ndarray, val: np.ndarray) -> dict:
    batches = objective.eval_batches(val, 64, 8)
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in batches:
            accumulate(totals, objective.loss(model, batch)[1])
    metrics = {n: s / max(c, 1) for n, (s, c) in totals.items()}
    return against_baseline(metrics, objective, family, batches, train, VOCAB, SPECIALS)


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_a_model_that_learned_only_frequencies_is_caught(family):
    train, val = _stream(1), _stream(2, docs=40)
    objective = _objective(family, train)
    model = FrequencyOnlyModel(label_counts(objective, train, VOCAB, SPECIALS), family)
    scored = _score(model, objective, family, train, val)
    # it scores exactly the baseline, and its accuracy is the most frequent token's rate among the targets
    assert scored["token_loss"] == pytest.approx(scored["unigram_baseline_loss"], abs=1e-4)
    assert scored["token_accuracy"] == pytest.approx(scored["unigram_accuracy"])
    assert 0.0 < scored["unigram_accuracy"] < 0.5
    assert scored["beyond_frequencies"] is False
    if family == "bert":  # its constant NSP logits always answer IsNext: the majority label's share at best
        assert scored["nsp_pairs"] == 64 and 0.5 <= scored["nsp_majority"] < 0.7
        assert scored["nsp_accuracy"] <= scored["nsp_majority"] and scored["nsp_beyond_chance"] is False
    else:
        assert not set(NSP_METRICS) & set(scored)


def test_a_model_that_learned_context_passes():
    successor = np.random.default_rng(7).permutation(VOCAB)
    successor[:105] = 105  # never a special token
    train, val = _stream(1, successor=successor), _stream(2, docs=40, successor=successor)
    objective = _objective("gpt", train)
    scored = _score(SuccessorModel(successor), objective, "gpt", train, val)
    assert scored["token_loss"] < scored["unigram_baseline_loss"] - 1.0
    assert scored["token_accuracy"] > scored["unigram_accuracy"] + 0.3
    assert scored["beyond_frequencies"] is True


def test_beyond_frequencies_needs_both_the_loss_and_a_clear_accuracy_margin():
    scored = {"token_loss": 6.0, "unigram_baseline_loss": 6.5, "unigram_accuracy": 0.07, "validation_tokens": 5000}
    assert beyond_frequencies({**scored, "token_accuracy": 0.10})
    assert not beyond_frequencies({**scored, "token_accuracy": 0.072})  # within two standard errors (0.0072)
    assert not beyond_frequencies({**scored, "token_accuracy": 0.10, "token_loss": 6.6})


@pytest.mark.parametrize("family", ["gpt", "bert", "t5"])
def test_one_estimator_for_every_family(family):
    """Regular tokens in proportion to the whole stream's counts; the special tokens the objective writes into
    its labels (T5's sentinels and EOS) at their share of a sample of training labels, so the baseline neither
    misses them nor smooths over a small sample."""
    train = _stream(1)
    objective = _objective(family, train)
    counts = label_counts(objective, train, VOCAB, SPECIALS)
    stream = np.bincount(train, minlength=VOCAB).astype(np.float64)
    np.testing.assert_allclose(counts[REGULAR], stream[REGULAR])
    labels = torch.cat([objective.batch(s, 32)["labels"].reshape(-1) for s in range(64)])
    labels = labels[labels != IGNORE].numpy()
    special_ids = np.array(sorted(SPECIALS.values()))
    sampled_share = np.isin(labels, special_ids).mean()
    assert counts[special_ids].sum() / counts.sum() == pytest.approx(sampled_share)
    if family == "t5":
        assert counts[SPECIALS["sentinel_0"]] > 0 and sampled_share > 0.05
    if family == "bert":
        assert sampled_share == 0.0  # BERT predicts masked stream tokens only


def test_paired_text_counts_its_own_targets():
    train = _stream(1)
    objective = _objective("t5", train)
    counts = label_counts(objective, train, VOCAB, SPECIALS, pairs=True)
    labels = torch.cat([objective.batch(s, 32)["labels"].reshape(-1) for s in range(64)])
    assert counts.sum() == int((labels != IGNORE).sum())
    assert as_stream(train).unigram_counts.sum() != counts.sum()


def _nsp_batches(labels: list[int]) -> list[dict]:
    return [{"next_sentence_label": torch.tensor(labels[i : i + 8])} for i in range(0, len(labels), 8)]


def test_nsp_beyond_chance_needs_a_clear_margin_over_the_majority_label():
    balanced = _nsp_batches([0, 1] * 200)  # 400 pairs, half IsNext: two standard errors are 0.05
    assert nsp_against_chance({"nsp_accuracy": 0.60}, balanced) == {
        "nsp_accuracy": 0.60,
        "nsp_majority": 0.5,
        "nsp_pairs": 400,
        "nsp_beyond_chance": True,
    }
    assert nsp_against_chance({"nsp_accuracy": 0.54}, balanced)["nsp_beyond_chance"] is False
    skewed = _nsp_batches([1] * 280 + [0] * 120)  # 70% NotNext: always answering NotNext scores 0.70
    scored = nsp_against_chance({"nsp_accuracy": 0.72}, skewed)
    assert scored["nsp_majority"] == pytest.approx(0.7) and scored["nsp_beyond_chance"] is False
    assert nsp_against_chance({"nsp_accuracy": 0.9}, [{"labels": torch.zeros(4)}]) == {}  # no NSP in the batches
