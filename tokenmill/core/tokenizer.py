"""The tokenizer every stage shares: its reserved special tokens, how it is trained (byte-level BPE), how a
tokenizer file is loaded so that it encodes as the tokenize stage did, and the document split by id.

The tokenize job trains and applies it; training, evaluation and the export read it back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

EOT = "<|endoftext|>"
PAD, CLS, SEP, MASK = "<pad>", "[CLS]", "[SEP]", "[MASK]"
NUM_SENTINELS = 100
# Reserved at the start of every vocabulary, in this order, so all three families share one tokenizer:
# EOT separates documents (and ends T5 sequences), [CLS]/[SEP]/[MASK] serve BERT, <extra_id_N> are
# T5's span-corruption sentinels. ``encode_special_tokens`` keeps them out of encoded page text: a page
# that spells "<|endoftext|>" or "[MASK]" is encoded as plain text, and only the objectives and the
# samplers put special ids in a sequence (by id, never by spelling). ``tokenizers`` does not save that
# flag in ``tokenizer.json``, so ``load_pretrained`` (and the Hugging Face export, ``split_special_tokens``)
# set it again on every load.
SPECIAL_TOKENS = [EOT, PAD, CLS, SEP, MASK] + [f"<extra_id_{i}>" for i in range(NUM_SENTINELS)]
SPLITS = ("train", "validation")


def split_of(doc_id: str, validation_fraction: float) -> str:
    """Deterministic split from the document id alone: the same document always lands in the same split."""
    bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 2**32
    return "validation" if bucket < validation_fraction else "train"


def train_bpe(texts: Iterator[str], vocab_size: int, min_frequency: int):
    """A byte-level BPE (GPT-2 style) whose first ids are ``SPECIAL_TOKENS`` (``<|endoftext|>`` is 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    floor = len(SPECIAL_TOKENS) + 256
    if vocab_size <= floor:
        raise ValueError(
            f"tokenizer.vocab_size {vocab_size} leaves no room for merges: {len(SPECIAL_TOKENS)} reserved "
            f"tokens and 256 bytes come first, so it must be above {floor}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# Other spellings of the same roles, found in pretrained tokenizers (GPT-2, BERT, T5).
_ALIASES = {
    "eot": ["</s>", "<eos>", "<|eos|>"],
    "pad": ["[PAD]"],
    "cls": ["<s>", "<cls>"],
    "sep": ["</s>", "<sep>"],
    "mask": ["<mask>"],
}


def special_ids(tok) -> dict[str, int]:
    """``{"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4, "sentinel_0": 5, ...}`` for a tokenizer.

    A pretrained tokenizer may spell the roles differently (``</s>``, ``[PAD]``) or lack some; a
    missing pad falls back to the end-of-text token, other missing roles are left out (the
    objective that needs them says so).
    """
    names = ["eot", "pad", "cls", "sep", "mask"] + [f"sentinel_{i}" for i in range(NUM_SENTINELS)]
    out = {}
    for name, token in zip(names, SPECIAL_TOKENS):
        for spelling in [token, *_ALIASES.get(name, [])]:
            if (i := tok.token_to_id(spelling)) is not None:
                out[name] = i
                break
    if "eot" not in out:
        raise ValueError(f"the tokenizer has no end-of-text token ({EOT} or </s>): documents could not be separated")
    out.setdefault("pad", out["eot"])
    return out


def load_pretrained(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` or a folder holding one (e.g. a Hugging Face model),
    encoding text the way the tokenize stage did: a spelled special token is plain text
    (``encode_special_tokens``, which ``tokenizer.json`` does not keep). To let a user write
    ``<extra_id_0>`` in a prompt, set ``encode_special_tokens = False`` on the result."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer.from_pretrained: no tokenizer.json at {path}")
    tok = Tokenizer.from_file(str(file))
    tok.encode_special_tokens = True
    return tok
