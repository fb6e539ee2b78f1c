"""Training objectives: the batches of each model family and how a model is scored on them.

The training loop only sees :class:`Objective`, so it is the same for every family:

- ``batch(step, global_batch, rank, world_size)`` is a pure function of ``(seed, step)``: a run resumes at
  any step, and N ranks together see exactly the batch one process sees (rank r takes slice r).
  Objectives that build examples one by one (masked LM, span corruption) draw example ``i`` of step ``s``
  from ``np.random.default_rng([seed, s, i])``, so a rank builds only its own slice.
- ``eval_batches(tokens, max_examples, batch_size)`` gives fixed validation batches, the same for every
  training step and every run seed.
- ``loss(model, batch)`` returns the scalar training loss and metrics as ``(sum, count)`` pairs: ranks
  all-reduce the pairs, then divide. Cross entropies are computed in float32.
- ``tokens(batch)`` counts the real (non-pad) tokens a batch feeds the model, for tokens/s.

Batches are dicts of CPU int64 tensors; ``-100`` in ``labels`` marks positions that are not scored.
Token streams are ``TokenStream``s (``tokenmill.training.data.open_split``: shards memory-mapped, read a window at
a time), documents back to back, each ending with the EOT id; an in-memory int64 array is accepted too
(``as_stream``). Objectives that read windows visit them without replacement within an epoch (``WindowOrder``) and
say how many an epoch has (``windows_per_epoch``, ``tokens_per_epoch``). ``specials`` is the tokenizer's
``special_ids`` dict (``eot``, ``pad``, ``cls``, ``sep``, ``mask``, ``sentinel_0`` ...). Models are called with
keyword arguments named after the batch keys:

- causal LM: ``model(input_ids=..., labels=...) -> summed float32 cross entropy`` (tokenmill's GPT, which never holds
  the logits), or the logits ``(B, T, V)`` for a model that ignores ``labels``
- masked LM: ``model(input_ids=, token_type_ids=, attention_mask=) -> (mlm_logits (B, T, V), nsp_logits (B, 2))``
- encoder-decoder: ``model(input_ids=, attention_mask=, decoder_input_ids=, decoder_attention_mask=) -> (B, L, V)``
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tokenmill.core.indexed import WindowOrder
from tokenmill.training.data import PackedBatches, as_stream, eval_blocks, token_counts, unigram_cross_entropy
from tokenmill.training.families import spec_for
from tokenmill.training.models.layers import IGNORE_INDEX

IGNORE = IGNORE_INDEX  # label of positions that are not scored (torch's cross_entropy default ignore_index)
_EVAL_SEED = 0x5EED  # validation examples use their own fixed seed, whatever the run's seed
_SENTENCE_TERMINALS = ".!?…。！？"
_CLOSERS = "\"'”’)]}»"


class Objective:
    """Builds the batches of one training objective and scores a model on them."""

    name: str = ""
    windows_per_epoch: int | None = None  # examples one epoch of the stream holds (None: not epoch-based)
    tokens_per_epoch: int | None = None  # stream tokens one epoch covers

    def batch(self, step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> dict[str, torch.Tensor]:
        """This rank's slice of the global batch of ``step``: a pure function of (seed, step), so training
        resumes anywhere."""
        raise NotImplementedError

    def eval_batches(self, tokens: np.ndarray, max_examples: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
        """Fixed validation batches from ``tokens`` (deterministic, independent of training step)."""
        raise NotImplementedError

    def loss(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, tuple[float, float]]]:
        """Scalar training loss and metrics as (sum, count) pairs, so ranks can all-reduce them before dividing."""
        raise NotImplementedError

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens processed in this batch (for tokens/s): non-pad input (+ target) tokens."""
        raise NotImplementedError

    @classmethod
    def from_stream(
        cls,
        tokens,
        *,
        block_size: int,
        specials: dict[str, int],
        seed: int,
        vocab_size: int,
        sentence_end: np.ndarray | None = None,
        **options,
    ) -> Objective:
        """The objective as a family's pre-training objective on a token stream (see ``build_objective``)."""
        raise NotImplementedError(f"{cls.__name__} is not a pre-training objective on a token stream")


# --------------------------------------------------------------------------- helpers


def _rank_range(global_batch: int, rank: int, world_size: int) -> range:
    """Indices of this rank's examples in the global batch."""
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
    per_rank = global_batch // world_size
    return range(rank * per_rank, (rank + 1) * per_rank)


def _chunks(n: int, size: int) -> list[range]:
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {size}")
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Summed float32 cross entropy over ``labels != -100``, number of scored tokens and number predicted right.

    Only scored positions are gathered before the float32 cast, so sparse targets (MLM) cost little memory.
    """
    valid = labels != IGNORE  # (B, T)
    scored = logits[valid].float()  # (N, V)
    target = labels[valid]  # (N,)
    ce_sum = F.cross_entropy(scored, target, reduction="sum")
    correct = int((scored.detach().argmax(-1) == target).sum())
    return ce_sum, int(target.numel()), correct


def _sentinels(specials: dict[str, int]) -> np.ndarray:
    """Sentinel ids in order ``sentinel_0, sentinel_1, ...``."""
    numbered = sorted((int(k.split("_", 1)[1]), v) for k, v in specials.items() if k.startswith("sentinel_"))
    return np.array([v for _, v in numbered], dtype=np.int64)


def sentence_end_table(tokenizer) -> np.ndarray:
    """``(vocab_size,)`` bool: True for ids whose decoded text ends a sentence (``.``, ``!``, ``?``, ...).

    ``tokenizer`` is a ``tokenizers.Tokenizer``. Trailing closing quotes/brackets are ignored (``."`` ends a
    sentence); special tokens decode to nothing and are never sentence ends.
    """
    vocab_size = tokenizer.get_vocab_size()
    texts = tokenizer.decode_batch([[i] for i in range(vocab_size)], skip_special_tokens=True)
    table = np.zeros(vocab_size, dtype=bool)
    for i, text in enumerate(texts):
        text = text.strip().rstrip(_CLOSERS)
        table[i] = bool(text) and text[-1] in _SENTENCE_TERMINALS
    return table


# --------------------------------------------------------------------------- causal LM (GPT)


class CausalLMObjective(Objective):
    """Next-token prediction on packed windows of the stream (documents separated by EOT), without replacement
    within an epoch (``PackedBatches``)."""

    name = "causal_lm"

    def __init__(self, tokens, block_size: int, seed: int):
        self.block_size = block_size
        self._packed = PackedBatches(tokens, block_size, seed)
        self.windows_per_epoch, self.tokens_per_epoch = self._packed.windows_per_epoch, self._packed.tokens_per_epoch

    def batch(self, step, global_batch, rank=0, world_size=1):
        x, y = self._packed.batch(step, global_batch, rank, world_size)  # (B, T) each
        return {"input_ids": x, "labels": y}

    def eval_batches(self, tokens, max_examples, batch_size):
        """Consecutive non-overlapping blocks from the start of ``tokens``."""
        x, y = eval_blocks(tokens, self.block_size, max_examples)
        return [{"input_ids": x[r.start : r.stop], "labels": y[r.start : r.stop]} for r in _chunks(len(x), batch_size)]

    def loss(self, model, batch):
        labels = batch["labels"]
        metrics = {}
        if torch.is_grad_enabled():
            # Training: the model's output layer computes the summed float32 cross entropy itself, a chunk of
            # positions at a time: the (B·T, V) logits, their log-softmax and its gradient are never held whole.
            out = model(input_ids=batch["input_ids"], labels=labels)
        else:  # evaluation: the logits, for the accuracy too (an argmax over them would slow every training step)
            out = model(input_ids=batch["input_ids"])
        n = int((labels != IGNORE).sum())
        if out.ndim:  # logits (B, T, V): evaluation, or a model that ignores ``labels``
            if not torch.is_grad_enabled():
                metrics["accuracy"] = (float((out.argmax(-1) == labels).sum()), float(n))
            out = F.cross_entropy(
                out.reshape(-1, out.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
            )
        metrics["loss"] = (float(out.detach()), float(n))
        return out / max(n, 1), metrics

    def tokens(self, batch):
        return int(batch["input_ids"].numel())  # targets are the same tokens shifted: not counted twice

    @classmethod
    def from_stream(cls, tokens, *, block_size, specials, seed, vocab_size, sentence_end=None, **options):
        return cls(tokens, block_size, seed, **options)


# --------------------------------------------------------------------------- masked LM + NSP (BERT)


class MaskedLMObjective(Objective):
    """BERT pre-training: ``[CLS] A [SEP] B [SEP]`` sentence pairs with 15% of A/B tokens masked, plus NSP.

    A is a contiguous span of one document (never crossing EOT), B either its continuation (IsNext, label 0)
    or a span of another document (NotNext, label 1), half and half. A+B fill ``block_size - 3`` tokens
    when the documents are long enough, A's share drawn at random; short examples are padded.
    Where A comes from: the stream is cut into windows of ``block_size - 3`` tokens, visited without replacement
    within an epoch (``WindowOrder``); A is the span of up to ``block_size - 3`` tokens of the document holding the
    window's first token that contains it (the full length when the document allows). A window on a document too
    short for a pair (under 2 tokens) falls back to a random position of the stream (token-weighted). Document
    bounds come from the shards' index (``TokenStream.document_bounds``), a document's trailing EOT excluded.
    Given ``sentence_end`` (bool per token id, see :func:`sentence_end_table`), segments start at sentence
    starts and A ends at a sentence end when one lies within ``sentence_window`` tokens of the drawn cut.
    Masking: ``round(mask_prob * len(A+B))`` (at least 1) positions, 80% -> [MASK], 10% -> a random
    regular (non-special) id below ``vocab_size``, 10% unchanged; ``labels`` hold their original ids.
    ``nsp=False`` gives IsNext pairs only and no ``next_sentence_label`` (MLM only, RoBERTa style).
    """

    name = "mlm_nsp"
    _TRIES = 64  # draws of a random position before giving up on finding a long enough document

    def __init__(
        self,
        tokens,
        block_size: int,
        specials: dict[str, int],
        seed: int,
        mask_prob: float = 0.15,
        nsp: bool = True,
        vocab_size: int | None = None,
        sentence_end: np.ndarray | None = None,
        sentence_window: int | None = None,
    ):
        if block_size < 5:
            raise ValueError(f"block_size {block_size} is too small for [CLS] A [SEP] B [SEP]")
        if not 0.0 <= mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
        self.eot, self.pad = specials["eot"], specials["pad"]
        self.stream = as_stream(tokens, self.eot)
        self.block_size, self.specials, self.seed = block_size, dict(specials), seed
        self.mask_prob, self.nsp = mask_prob, nsp
        self.cls, self.sep, self.mask = specials["cls"], specials["sep"], specials["mask"]
        special_values = np.array(sorted(set(specials.values())), dtype=np.int64)
        self.special_values = special_values
        if vocab_size is None:  # the ids we can see; build_objective always passes the tokenizer's size
            vocab_size = max(len(self.stream.unigram_counts), int(special_values.max()) + 1)
        self.vocab_size = vocab_size
        self.regular_ids = np.setdiff1d(np.arange(vocab_size, dtype=np.int64), special_values)  # random replacements
        if len(self.regular_ids) == 0:
            raise ValueError("no regular (non-special) token ids below vocab_size")
        self.sentence_end = None
        if sentence_end is not None:
            self.sentence_end = np.asarray(sentence_end, dtype=bool)
            if len(self.sentence_end) < vocab_size:
                raise ValueError(f"sentence_end has {len(self.sentence_end)} entries; the vocabulary {vocab_size}")
        self.target_len = block_size - 3  # A + B
        self.sentence_window = sentence_window or max(8, self.target_len // 4)
        if len(self.stream) < 2:
            raise ValueError("no document has 2 or more tokens: cannot build sentence pairs")
        if nsp and self.stream.num_documents < 2:
            raise ValueError("next sentence prediction needs at least two non-empty documents")
        self.windows_per_epoch = max(1, len(self.stream) // self.target_len)
        self.tokens_per_epoch = self.windows_per_epoch * self.target_len
        self.order = WindowOrder(self.windows_per_epoch, seed)

    def _with_tokens(self, tokens) -> MaskedLMObjective:
        return MaskedLMObjective(
            tokens,
            self.block_size,
            self.specials,
            self.seed,
            self.mask_prob,
            self.nsp,
            self.vocab_size,
            self.sentence_end,
            self.sentence_window,
        )

    # ---- segments

    def _content(self, doc: int) -> tuple[int, int]:
        """``(start, stop)`` of document ``doc``'s tokens without its trailing EOT (one token read)."""
        starts, stops = self.stream.document_bounds(doc)
        start, stop = int(starts[0]), int(stops[0])
        if stop > start and int(self.stream.window(stop - 1, 1)[0]) == self.eot:
            stop -= 1
        return start, stop

    def _sentence_start(self, pos: int, doc_start: int) -> int:
        """``pos`` moved back to the start of its sentence, if that start lies within ``sentence_window``."""
        if self.sentence_end is None or pos == doc_start:
            return pos
        lo = max(doc_start, pos - self.sentence_window)
        ends = np.flatnonzero(self.sentence_end[self.stream.window(lo, pos - lo)])
        if len(ends):
            return lo + int(ends[-1]) + 1
        return doc_start if lo == doc_start else pos  # a document start is a sentence start too

    def _span(self, rng: np.random.Generator, bounds: tuple[int, int], length: int) -> tuple[int, int]:
        """``(start, stop)`` of up to ``length`` tokens within ``bounds``, full length if the document allows."""
        d0, d1 = bounds
        start = self._sentence_start(d0 + int(rng.integers(0, max(d1 - d0 - length, 0) + 1)), d0)
        return start, min(start + length, d1)

    def _a_span(self, rng: np.random.Generator, window: int) -> tuple[int, int, int]:
        """``(document, start, stop)`` of A's chunk (>= 2 tokens): around the window's first token, or (document
        too short) around a random position."""
        pos = window * self.target_len
        for _ in range(self._TRIES):
            doc = int(self.stream.document_of(pos)[0])
            d0, d1 = self._content(doc)
            if d1 - d0 >= 2:
                start = self._sentence_start(max(d0, min(pos, d1 - self.target_len)), d0)
                return doc, start, min(start + self.target_len, d1)
            pos = int(rng.integers(len(self.stream)))
        raise ValueError(f"no document of 2 or more tokens found in {self._TRIES} draws: cannot build sentence pairs")

    def _pair(self, rng: np.random.Generator, is_next: bool, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Segments A and B (token arrays) of one example."""
        a_doc, start, stop = self._a_span(rng, window)
        chunk = self.stream.window(start, stop - start)  # >= 2 tokens
        a_len = self._cut(rng, chunk)
        if is_next:
            return chunk[:a_len], chunk[a_len:]
        # B from another document, drawn in proportion to length: skip A's document's range of token positions.
        starts, stops = self.stream.document_bounds(a_doc)
        a_lo, a_size = int(starts[0]), int(stops[0] - starts[0])
        for _ in range(self._TRIES):
            u = int(rng.integers(len(self.stream) - a_size))
            if u >= a_lo:
                u += a_size
            b = self._content(int(self.stream.document_of(u)[0]))
            if b[1] > b[0]:
                b_start, b_stop = self._span(rng, b, self.target_len - a_len)
                return chunk[:a_len], self.stream.window(b_start, b_stop - b_start)
        raise ValueError(f"no other non-empty document found in {self._TRIES} draws: cannot build NotNext pairs")

    def _cut(self, rng: np.random.Generator, chunk: np.ndarray) -> int:
        """Length of A within ``chunk`` (1 .. len-1): random, snapped to a nearby sentence end if there is one."""
        n = len(chunk)
        a_len = int(rng.integers(1, n))
        if self.sentence_end is not None:
            ends = np.flatnonzero(self.sentence_end[chunk[: n - 1]]) + 1  # candidate A lengths, leaving B >= 1 token
            if len(ends):
                nearest = int(ends[np.argmin(np.abs(ends - a_len))])
                if abs(nearest - a_len) <= self.sentence_window:
                    a_len = nearest
        return a_len

    # ---- examples

    def _example(
        self, rng: np.random.Generator, window: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """One example (A from window ``window``): ``(input_ids, token_type_ids, attention_mask, labels)`` rows and
        the NSP label."""
        is_next = (not self.nsp) or bool(rng.random() < 0.5)
        a, b = self._pair(rng, is_next, window)
        na, nb, T = len(a), len(b), self.block_size
        ids = np.full(T, self.pad, dtype=np.int64)
        ids[0], ids[1 : 1 + na], ids[1 + na] = self.cls, a, self.sep
        ids[2 + na : 2 + na + nb], ids[2 + na + nb] = b, self.sep
        token_type = np.zeros(T, dtype=np.int64)
        token_type[2 + na : 3 + na + nb] = 1  # B and its [SEP]
        attention = np.zeros(T, dtype=np.int64)
        attention[: 3 + na + nb] = 1

        # Mask positions of A and B only; the id check is a guard should a stream ever carry special ids.
        candidates = np.concatenate([np.arange(1, 1 + na), np.arange(2 + na, 2 + na + nb)])
        candidates = candidates[~np.isin(ids[candidates], self.special_values)]
        labels = np.full(T, IGNORE, dtype=np.int64)
        if len(candidates):
            k = min(len(candidates), max(1, int(round(self.mask_prob * len(candidates)))))
            chosen = rng.choice(candidates, size=k, replace=False)
            labels[chosen] = ids[chosen]
            r = rng.random(k)
            ids[chosen[r < 0.8]] = self.mask
            swap = chosen[(r >= 0.8) & (r < 0.9)]  # the last 10% keep their token
            ids[swap] = self.regular_ids[rng.integers(len(self.regular_ids), size=len(swap))]
        return ids, token_type, attention, labels, 0 if is_next else 1

    def _collate(self, examples: list) -> dict[str, torch.Tensor]:
        ids, token_type, attention, labels, nsp = zip(*examples)
        out = {
            "input_ids": torch.from_numpy(np.stack(ids)),  # (B, T)
            "token_type_ids": torch.from_numpy(np.stack(token_type)),  # (B, T)
            "attention_mask": torch.from_numpy(np.stack(attention)),  # (B, T)
            "labels": torch.from_numpy(np.stack(labels)),
        }  # (B, T)
        if self.nsp:
            out["next_sentence_label"] = torch.tensor(nsp, dtype=torch.int64)  # (B,)
        return out

    def batch(self, step, global_batch, rank=0, world_size=1):
        mine = _rank_range(global_batch, rank, world_size)
        windows = self.order.windows_of_step(step, global_batch)
        return self._collate([self._example(np.random.default_rng([self.seed, step, i]), windows[i]) for i in mine])

    def eval_batches(self, tokens, max_examples, batch_size):
        """``max_examples`` examples of the validation stream, A from its first windows in order (wrapping
        around), the rest drawn from a fixed seed."""
        val = self._with_tokens(tokens)
        examples = [
            val._example(np.random.default_rng([_EVAL_SEED, i]), i % val.windows_per_epoch) for i in range(max_examples)
        ]
        return [self._collate(examples[r.start : r.stop]) for r in _chunks(len(examples), batch_size)]

    def loss(self, model, batch):
        out = model(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"]
        )
        # (B, T, V); an MLM-only model may return just these logits
        mlm_logits = out[0] if isinstance(out, (tuple, list)) else out
        mlm_sum, n_masked, mlm_correct = _token_ce(mlm_logits, batch["labels"])
        loss = mlm_sum / max(n_masked, 1)
        metrics = {
            "mlm_loss": (float(mlm_sum.detach()), float(n_masked)),
            "mlm_accuracy": (float(mlm_correct), float(n_masked)),
        }
        B = batch["input_ids"].size(0)
        if self.nsp:
            nsp_logits, nsp_labels = out[1].float(), batch["next_sentence_label"]  # (B, 2), (B,)
            nsp_sum = F.cross_entropy(nsp_logits, nsp_labels, reduction="sum")
            loss = loss + nsp_sum / B
            metrics["nsp_loss"] = (float(nsp_sum.detach()), float(B))
            metrics["nsp_accuracy"] = (float((nsp_logits.detach().argmax(-1) == nsp_labels).sum()), float(B))
        # The total is a sum of two means: reduce it per example (ranks weigh by their batch size).
        metrics["loss"] = (float(loss.detach()) * B, float(B))
        return loss, metrics

    def tokens(self, batch):
        return int(batch["attention_mask"].sum())

    @classmethod
    def from_stream(cls, tokens, *, block_size, specials, seed, vocab_size, sentence_end=None, **options):
        return cls(tokens, block_size, specials, seed, vocab_size=vocab_size, sentence_end=sentence_end, **options)


# --------------------------------------------------------------------------- encoder-decoder (T5)


class _EncoderDecoderObjective(Objective):
    """Shared batch layout and loss of encoder-decoder objectives (inputs -> targets, each ending with EOS)."""

    accuracy_key = "accuracy"
    extra_loss_key: str | None = None

    def __init__(self, input_length: int, target_length: int, specials: dict[str, int]):
        self.input_length, self.target_length = input_length, target_length
        self.specials = dict(specials)
        self.eot, self.pad = specials["eot"], specials["pad"]

    def _collate(self, inputs: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Pad rows (each already ending with EOS) to fixed lengths; decoder inputs are targets shifted right."""
        B, S, L = len(inputs), self.input_length, self.target_length
        input_ids = np.full((B, S), self.pad, dtype=np.int64)
        target_ids = np.full((B, L), self.pad, dtype=np.int64)
        for i, (src, tgt) in enumerate(zip(inputs, targets)):
            input_ids[i, : len(src)] = src
            target_ids[i, : len(tgt)] = tgt
        n_src = np.array([len(s) for s in inputs])[:, None]
        n_tgt = np.array([len(t) for t in targets])[:, None]
        target_mask = np.arange(L)[None, :] < n_tgt  # (B, L)
        # T5 starts decoding from the pad id.
        decoder_input_ids = np.concatenate([np.full((B, 1), self.pad, dtype=np.int64), target_ids[:, :-1]], axis=1)
        return {
            "input_ids": torch.from_numpy(input_ids),  # (B, S)
            "attention_mask": torch.from_numpy((np.arange(S)[None, :] < n_src).astype(np.int64)),  # (B, S)
            "decoder_input_ids": torch.from_numpy(decoder_input_ids),  # (B, L)
            "decoder_attention_mask": torch.from_numpy(target_mask.astype(np.int64)),  # (B, L)
            "labels": torch.from_numpy(np.where(target_mask, target_ids, IGNORE)),
        }  # (B, L)

    def loss(self, model, batch):
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
        )  # (B, L, V)
        ce_sum, n, correct = _token_ce(logits, batch["labels"])
        loss = ce_sum / max(n, 1)
        metrics = {"loss": (float(ce_sum.detach()), float(n)), self.accuracy_key: (float(correct), float(n))}
        if self.extra_loss_key:
            metrics[self.extra_loss_key] = metrics["loss"]
        return loss, metrics

    def tokens(self, batch):
        return int(batch["attention_mask"].sum() + batch["decoder_attention_mask"].sum())


def _noise_counts(raw_len: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` of a ``raw_len`` window, as T5's ``random_spans_noise_mask`` counts them."""
    num_noise = min(max(int(round(raw_len * noise_density)), 1), raw_len - 1)
    num_spans = max(1, int(round(num_noise / mean_span_length)))
    return num_noise, min(num_spans, raw_len - num_noise)  # every noise and non-noise span is non-empty


def span_corruption_lengths(
    input_length: int, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> tuple[int, int]:
    """``(raw_len, target_len)``: the longest raw window whose corrupted input (with EOS) fits ``input_length``.

    T5's ``compute_input_and_target_lengths``, with the same counts as the noise mask itself.
    """

    def lengths(raw: int) -> tuple[int, int]:
        noise, spans = _noise_counts(raw, noise_density, mean_span_length)
        # inputs: kept tokens + sentinels + EOS; targets: sentinels + noise tokens + EOS
        return raw - noise + spans + 1, noise + spans + 1

    # Inputs keep about (1 - density) of the window, so no window longer than this bound can fit.
    upper = int(np.ceil((input_length + 1) / (1.0 - noise_density))) + 2
    fitting = [raw for raw in range(2, upper + 1) if lengths(raw)[0] <= input_length]
    if not fitting:
        raise ValueError(f"input_length {input_length} is too short for span corruption")
    raw = max(fitting)
    return raw, lengths(raw)[1]


def _segment_lengths(keys: np.ndarray, num_items: int, num_segments: int) -> np.ndarray:
    """``(B, num_segments)`` lengths of a uniformly random split of ``num_items`` into non-empty segments.

    ``keys`` ``(B, num_items - 1)`` are uniform draws: the ``num_segments - 1`` smallest pick the cut points.
    """
    B = keys.shape[0]
    if num_segments == 1:
        return np.full((B, 1), num_items, dtype=np.int64)
    cuts = np.sort(np.argpartition(keys, num_segments - 2, axis=1)[:, : num_segments - 1], axis=1) + 1
    bounds = np.concatenate([np.zeros((B, 1), np.int64), cuts, np.full((B, 1), num_items, np.int64)], axis=1)
    return np.diff(bounds, axis=1)


class SpanCorruptionObjective(_EncoderDecoderObjective):
    """T5 span corruption on packed raw windows of the stream (windows may cross documents, as T5 packs).

    The stream is cut into consecutive windows of ``raw_len`` tokens, visited without replacement within an epoch
    (``WindowOrder``); example ``i`` of step ``s`` draws its noise from ``default_rng([seed, s, i])``.

    ``round(raw_len * noise_density)`` tokens in ``round(noise / mean_span_length)`` spans are dropped from the
    window; inputs keep the rest with each span replaced by the next sentinel (``sentinel_0``, ``sentinel_1``,
    ...), targets are each sentinel followed by its span; both end with EOT as EOS. ``raw_len`` is the longest
    window whose input fits ``input_length``; ``target_length`` defaults to what that window needs.
    """

    name = "span_corruption"
    accuracy_key = "span_accuracy"
    extra_loss_key = "span_loss"

    def __init__(
        self,
        tokens,
        input_length: int,
        target_length: int | None = None,
        *,
        specials: dict[str, int],
        seed: int,
        noise_density: float = 0.15,
        mean_span_length: float = 3.0,
    ):
        if not 0.0 < noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
        if mean_span_length < 1.0:
            raise ValueError(f"mean_span_length must be >= 1, got {mean_span_length}")
        raw_len, needed = span_corruption_lengths(input_length, noise_density, mean_span_length)
        if target_length is None:
            target_length = needed
        elif target_length < needed:
            raise ValueError(f"target_length {target_length} is shorter than the {needed} tokens the targets need")
        super().__init__(input_length, target_length, specials)
        self.stream = as_stream(tokens)
        self.seed, self.noise_density, self.mean_span_length = seed, noise_density, mean_span_length
        self.raw_length = raw_len
        self.num_noise, self.num_spans = _noise_counts(raw_len, noise_density, mean_span_length)
        self.sentinels = _sentinels(specials)
        if self.num_spans > len(self.sentinels):
            raise ValueError(
                f"{self.num_spans} noise spans but only {len(self.sentinels)} sentinel ids: "
                "shorten input_length or raise mean_span_length"
            )
        if len(self.stream) < raw_len:
            raise ValueError(f"only {len(self.stream)} tokens: a span-corruption window needs {raw_len}")
        self.windows_per_epoch = len(self.stream) // raw_len
        self.tokens_per_epoch = self.windows_per_epoch * raw_len
        self.order = WindowOrder(self.windows_per_epoch, seed)

    @classmethod
    def from_stream(cls, tokens, *, block_size, specials, seed, vocab_size, sentence_end=None, **options):
        return cls(tokens, block_size, specials=specials, seed=seed, **options)

    def corrupt(self, windows: np.ndarray, rngs: list[np.random.Generator]) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (B, S'), targets (B, L'))`` of raw ``windows (B, raw_len)``, each with EOS; one rng per row.

        Every window has the same noise and span counts, so all rows have the same lengths and the work is
        vectorised over the batch; only the random draws are per row.
        """
        B, R = windows.shape
        noise, spans = self.num_noise, self.num_spans
        noise_keys = np.stack([rng.random(noise - 1) for rng in rngs]).reshape(B, noise - 1)
        clean_keys = np.stack([rng.random(R - noise - 1) for rng in rngs]).reshape(B, R - noise - 1)
        lengths = np.stack(
            [
                _segment_lengths(clean_keys, R - noise, spans),  # spans alternate clean, noise, ...
                _segment_lengths(noise_keys, noise, spans),
            ],
            axis=2,
        ).reshape(B, 2 * spans)
        span_starts = np.zeros((B, R), dtype=np.int64)
        np.put_along_axis(span_starts, np.cumsum(lengths, axis=1)[:, :-1], 1, axis=1)
        span_index = np.cumsum(span_starts, axis=1)  # (B, R): 0, 1, 2, ... alternating clean / noise
        is_noise = span_index % 2 == 1
        opens_noise = is_noise & (span_starts == 1)  # first token of a noise span
        sentinel = self.sentinels[np.minimum(span_index // 2, len(self.sentinels) - 1)]  # (B, R): of each noise span

        # Each position emits up to two tokens, (sentinel, token); keep those that belong and flatten row-wise.
        slots = np.stack([sentinel, windows], axis=2).reshape(B, 2 * R)
        keep_in = np.stack([opens_noise, ~is_noise], axis=2).reshape(B, 2 * R)
        keep_out = np.stack([opens_noise, is_noise], axis=2).reshape(B, 2 * R)
        eos = np.full((B, 1), self.eot, dtype=np.int64)
        inputs = np.concatenate([slots[keep_in].reshape(B, R - noise + spans), eos], axis=1)
        targets = np.concatenate([slots[keep_out].reshape(B, noise + spans), eos], axis=1)
        return inputs, targets

    def _batch_of(self, starts: np.ndarray, rngs: list[np.random.Generator]) -> dict[str, torch.Tensor]:
        windows = self.stream.windows(starts, self.raw_length)  # (B, raw_len)
        inputs, targets = self.corrupt(windows, rngs)
        return self._collate(list(inputs), list(targets))

    def batch(self, step, global_batch, rank=0, world_size=1):
        mine = _rank_range(global_batch, rank, world_size)
        rngs = [np.random.default_rng([self.seed, step, i]) for i in mine]
        starts = self.order.windows_of_step(step, global_batch)[mine.start : mine.stop] * self.raw_length
        return self._batch_of(starts, rngs)

    def eval_batches(self, tokens, max_examples, batch_size):
        """Consecutive non-overlapping windows from the start of ``tokens``, noise drawn from a fixed seed."""
        val = SpanCorruptionObjective(
            tokens,
            self.input_length,
            self.target_length,
            specials=self.specials,
            seed=self.seed,
            noise_density=self.noise_density,
            mean_span_length=self.mean_span_length,
        )
        n = min(max_examples, len(val.stream) // self.raw_length)
        return [
            val._batch_of(
                np.arange(r.start, r.stop, dtype=np.int64) * self.raw_length,
                [np.random.default_rng([_EVAL_SEED, i]) for i in r],
            )
            for r in _chunks(n, batch_size)
        ]


class Seq2SeqObjective(_EncoderDecoderObjective):
    """Paired source -> target examples (already tokenized), truncated to fit and ended with EOT as EOS.

    A trailing EOT already on a source or target is not doubled. Each step draws its examples at random
    (with replacement) from ``np.random.default_rng([seed, step])``.
    """

    name = "seq2seq"

    def __init__(
        self,
        pairs: list[tuple[np.ndarray, np.ndarray]],
        input_length: int,
        target_length: int,
        specials: dict[str, int],
        seed: int,
    ):
        if not pairs:
            raise ValueError("no source/target pairs")
        if input_length < 1 or target_length < 1:
            raise ValueError("input_length and target_length must be positive")
        super().__init__(input_length, target_length, specials)
        self.pairs, self.seed = pairs, seed

    def _with_eos(self, ids: np.ndarray, length: int) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and ids[-1] == self.eot:
            ids = ids[:-1]
        return np.append(ids[: length - 1], self.eot)

    def _batch_of(self, pairs) -> dict[str, torch.Tensor]:
        return self._collate(
            [self._with_eos(s, self.input_length) for s, _ in pairs],
            [self._with_eos(t, self.target_length) for _, t in pairs],
        )

    def batch(self, step, global_batch, rank=0, world_size=1):
        mine = _rank_range(global_batch, rank, world_size)
        picks = np.random.default_rng([self.seed, step]).integers(0, len(self.pairs), size=global_batch)
        return self._batch_of([self.pairs[j] for j in picks[mine.start : mine.stop]])

    def eval_batches(self, tokens, max_examples, batch_size):
        """``tokens`` here is the list of validation ``(source, target)`` pairs: the first ``max_examples``."""
        pairs = list(tokens)[:max_examples]
        return [self._batch_of(pairs[r.start : r.stop]) for r in _chunks(len(pairs), batch_size)]


def load_pairs(path, tokenizer, validation_fraction: float) -> tuple[list, list]:
    """``(train, validation)`` lists of ``(source ids, target ids)`` from a JSONL file of
    ``{"source": ..., "target": ...}`` lines; a pair's split follows from its source text alone."""
    import json
    from pathlib import Path

    from tokenmill.core.tokenizer import split_of

    splits: dict[str, list] = {"train": [], "validation": []}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            source, target = row["source"], row["target"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: expected a JSON object with 'source' and 'target' strings ({e})") from e
        ids = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch([source, target])]
        splits[split_of(source, validation_fraction)].append((ids[0], ids[1]))
    for name, rows in splits.items():
        if not rows:
            raise ValueError(f"{path}: no {name} pairs (validation fraction {validation_fraction}); add more lines")
    return splits["train"], splits["validation"]


# --------------------------------------------------------------------------- per family


def build_objective(family: str, tokens, **stream_options) -> Objective:
    """The pre-training objective of a family (its ``ModelSpec.objective``): gpt -> causal LM, bert -> MLM + NSP,
    t5/transformer -> span corruption.

    ``stream_options`` are those of ``Objective.from_stream`` (``block_size``, ``specials``, ``seed``,
    ``vocab_size``, ``sentence_end``) and the objective's own (e.g. ``mask_prob``, ``nsp``, ``noise_density``,
    ``mean_span_length``, ``target_length``); for encoder-decoders ``input_length`` is ``block_size``.
    """
    spec = spec_for(family, error="unknown model family {name!r}: expected one of {known}")
    return spec.objective_class().from_stream(tokens, **stream_options)


def objective_for_run(
    cfg,
    family: str,
    block_size: int,
    specials: dict[str, int],
    vocab_size: int,
    tokenizer,
    train_tokens,
    val_tokens,
) -> tuple[Objective, Any]:
    """``(objective, evaluation source)`` for a run's config: paired text when ``train.pairs`` is set (an
    encoder-decoder only), the family's pre-training objective on the token stream otherwise.

    Training and ``tokenmill.training.evaluate`` both call it, so they score the very same validation examples.
    """
    if cfg.train.pairs:
        if not spec_for(family).encoder_decoder:
            raise ValueError(f"train.pairs trains an encoder-decoder on paired text; model.family is {family}")
        train_pairs, eval_pairs = load_pairs(cfg.train.pairs, tokenizer, cfg.tokenizer.validation_fraction)
        objective = Seq2SeqObjective(
            train_pairs, block_size, cfg.train.target_length or block_size, specials, cfg.run.seed
        )
        return objective, eval_pairs
    objective = build_objective(
        family,
        train_tokens,
        block_size=block_size,
        specials=specials,
        seed=cfg.run.seed,
        vocab_size=vocab_size,
        sentence_end=sentence_end_table(tokenizer),
    )
    return objective, val_tokens


# --------------------------------------------------------------------------- metrics (training and evaluate)


# What against_baseline scores a model by, as training and evaluation report them (val/..., eval/...).
BASELINE_METRICS = ("token_loss", "unigram_baseline_loss", "token_accuracy", "unigram_accuracy")


def token_loss_name(family: str, pairs: bool = False) -> str:
    """The metric that is the loss on predicted tokens, comparable with the unigram baseline: everything a
    family predicts token by token (BERT's total adds next-sentence prediction); paired text's ``loss``."""
    return "loss" if pairs else spec_for(family).token_loss


def token_accuracy_name(family: str, pairs: bool = False) -> str:
    """The metric that is the share of predicted tokens right, comparable with the unigram's accuracy."""
    return "accuracy" if pairs else spec_for(family).token_accuracy


def clearly_above(rate: float, p: float, n: int) -> bool:
    """Whether an accuracy ``rate`` over ``n`` trials exceeds ``p``, the rate of always giving one answer, by more
    than two standard errors of a rate ``p`` over ``n`` trials."""
    n = max(n, 1)
    return rate > p + 2.0 * math.sqrt(max(p * (1.0 - p), 1.0 / n) / n)


def beyond_frequencies(scored: dict[str, Any]) -> bool:
    """Whether a model learned more than token frequencies: its token loss is below the unigram baseline and its
    accuracy above the most frequent token's rate by more than two standard errors (of a rate over the validation
    tokens). A model that only learned frequencies predicts that token everywhere: equal accuracy, fails."""
    if scored["token_loss"] >= scored["unigram_baseline_loss"]:
        return False
    return clearly_above(scored["token_accuracy"], scored["unigram_accuracy"], scored["validation_tokens"])


# What against_baseline adds for an objective with next-sentence prediction (BERT's NSP).
NSP_METRICS = ("nsp_accuracy", "nsp_majority", "nsp_pairs", "nsp_beyond_chance")


def nsp_against_chance(metrics: dict[str, float], eval_batches: list[dict]) -> dict[str, Any]:
    """Next-sentence prediction against chance, {} when the batches carry no ``next_sentence_label``:
    ``nsp_accuracy``, ``nsp_majority`` (the share of the commoner label among the scored pairs: what always
    answering it scores), ``nsp_pairs`` and ``nsp_beyond_chance`` (:func:`clearly_above` the majority share)."""
    labels = [b["next_sentence_label"].reshape(-1) for b in eval_batches if "next_sentence_label" in b]
    if not labels or "nsp_accuracy" not in metrics:
        return {}
    labels = torch.cat(labels)
    n, is_next = int(labels.numel()), float((labels == 0).double().mean())
    majority = max(is_next, 1.0 - is_next)
    accuracy = metrics["nsp_accuracy"]
    return {
        "nsp_accuracy": accuracy,
        "nsp_majority": majority,
        "nsp_pairs": n,
        "nsp_beyond_chance": clearly_above(accuracy, majority, n),
    }


def accumulate(into: dict[str, list[float]], metrics: dict[str, tuple[float, float]]) -> None:
    """Add an objective's ``(sum, count)`` metrics into running ``[sum, count]`` totals."""
    for name, (total, count) in metrics.items():
        acc = into.setdefault(name, [0.0, 0.0])
        acc[0] += float(total)
        acc[1] += float(count)


def label_counts(
    objective: Objective,
    train_tokens,
    vocab_size: int,
    specials: dict[str, int],
    pairs: bool = False,
    batches: int = 64,
    batch_size: int = 32,
) -> np.ndarray:
    """Token counts of what the objective asks to predict, for the unigram baseline; one estimator for every
    family. Regular tokens: the whole training stream's counts (the tokenize manifest's, no pass over the
    tokens), since every family's targets are drawn from the stream (GPT's next tokens, BERT's masked ones, T5's
    spans). Special tokens (``specials``): their share of the labels of ``batches`` x ``batch_size`` training
    examples, scaled to the stream's size, because the objective writes them (T5's sentinels and EOS) or frames
    around them. Paired text (``pairs``) predicts its own targets, not the stream: the sampled labels' counts."""
    labels = torch.cat([objective.batch(step, batch_size)["labels"].reshape(-1) for step in range(batches)])
    sampled = token_counts(labels[labels != IGNORE].numpy(), vocab_size).astype(np.float64)
    if pairs:
        return sampled
    counts = np.zeros(vocab_size, dtype=np.float64)
    stream = np.asarray(as_stream(train_tokens).unigram_counts, dtype=np.float64)[:vocab_size]
    counts[: len(stream)] = stream
    special = np.zeros(vocab_size, dtype=bool)
    special[[i for i in specials.values() if i < vocab_size]] = True
    regular_sampled = sampled[~special].sum()
    if regular_sampled == 0:  # nothing drawn from the stream in the sample: it is all the evidence there is
        return sampled
    counts[special] = sampled[special] * (counts[~special].sum() / regular_sampled)
    return counts


def against_baseline(
    metrics: dict[str, float],
    objective: Objective,
    family: str,
    eval_batches: list[dict],
    train_tokens,
    vocab_size: int,
    specials: dict[str, int],
    pairs: bool = False,
) -> dict[str, Any]:
    """How validation ``metrics`` compare with the unigram baseline, as training and evaluation both report it:
    ``token_loss`` and ``unigram_baseline_loss`` (nats/token on the same labels, under :func:`label_counts`),
    ``token_accuracy`` and ``unigram_accuracy`` (the rate of the unigram's most frequent token among the
    labels: what a model that only learned frequencies scores), ``validation_tokens``, ``beyond_frequencies``
    (:func:`beyond_frequencies`), ``perplexity`` for a family that predicts the stream itself (else None), and for
    next-sentence prediction :data:`NSP_METRICS` (:func:`nsp_against_chance`)."""
    labels = torch.cat([b["labels"].reshape(-1) for b in eval_batches])
    targets = labels[labels != IGNORE]
    counts = label_counts(objective, train_tokens, vocab_size, specials, pairs)
    stream = spec_for(family).predicts_stream
    scored = {
        "token_loss": metrics[token_loss_name(family, pairs)],
        "unigram_baseline_loss": unigram_cross_entropy(counts, targets, vocab_size),
        "token_accuracy": metrics[token_accuracy_name(family, pairs)],
        "unigram_accuracy": float((targets == int(np.argmax(counts))).double().mean()) if len(targets) else 0.0,
        "validation_tokens": int(targets.numel()),
        "perplexity": math.exp(min(metrics["loss"], 50.0)) if stream else None,
    }
    scored["beyond_frequencies"] = beyond_frequencies(scored)
    scored.update(nsp_against_chance(metrics, eval_batches))
    return scored
