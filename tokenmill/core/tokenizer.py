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


# --------------------------------------------------------------------------- encoding documents in bulk

#: ``tokenizer.encoder``: ``auto`` encodes with tiktoken's BPE where it gives the ids ``tokenizers`` gives (see
#: ``DocumentEncoder``), ``tokenizers`` always with the ``tokenizers`` library.
ENCODERS = ("auto", "tokenizers")

# The pre-tokenizer regex of ``tokenizers``' ByteLevel (GPT-2's): tiktoken splits text with the same pattern.
_BYTE_LEVEL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# tiktoken's regex engine gives up (a Rust panic) on a whitespace run of about 10**6 characters; a document that
# long is encoded by ``tokenizers`` instead.
_TIKTOKEN_MAX_CHARS = 500_000


def _byte_level_chars() -> dict[str, int]:
    """ByteLevel's printable stand-in for every byte (GPT-2's ``bytes_to_unicode``), inverted: char → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def tiktoken_ranks(tokenizer_json: str) -> dict[bytes, int] | None:
    """tiktoken's mergeable ranks for a byte-level BPE ``tokenizer.json`` of a structure rank-ordered merging can
    mirror, else None.

    ``tokenizers`` merges the adjacent pair listed first in ``merges``; tiktoken merges the adjacent pair whose
    concatenation has the lowest rank (its id). They can only agree with: no normalizer, the ByteLevel pre-tokenizer
    with its regex and no prefix space, a plain BPE (no dropout, affixes, byte fallback or ``ignore_merges``), every
    added token special (``encode_special_tokens`` keeps them out of text), all 256 bytes in the vocabulary, each
    merge producing a token no other merge produces, with ids that rise in merge order. The ranks are the 256 bytes
    and the merge results only: a vocabulary entry no merge produces is never produced by ``tokenizers`` either.
    Necessary, not sufficient: two pieces whose concatenation is a token another merge makes would merge here and
    not in ``tokenizers`` (a trained BPE should not allow it), hence ``DocumentEncoder.verify``.
    """
    import json

    spec = json.loads(tokenizer_json)
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    plain = (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and model.get("type") == "BPE"
        and model.get("dropout") is None
        and not model.get("continuing_subword_prefix")
        and not model.get("end_of_word_suffix")
        and not model.get("byte_fallback", False)
        and not model.get("ignore_merges", False)
        and all(t.get("special", False) for t in spec.get("added_tokens", []))
    )
    if not plain:
        return None
    vocab: dict[str, int] = model["vocab"]
    chars = _byte_level_chars()
    if any(c not in vocab for c in chars):
        return None
    ranks = {bytes([b]): vocab[c] for c, b in chars.items()}
    last = -1
    for merge in model.get("merges", []):
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = left + right
        if token not in vocab or vocab[token] <= last or any(c not in chars for c in token):
            return None
        key = bytes(chars[c] for c in token)
        if key in ranks:  # two merges (or a merge and a byte) make the same token
            return None
        ranks[key] = last = vocab[token]
    return ranks


class DocumentEncoder:
    """Documents → token ids, the ids ``tok.encode_batch`` gives (``tok`` set up as the tokenize stage encodes:
    ``encode_special_tokens``, no post-processor).

    ``tokenizers`` spends about 5/6 of a byte-level BPE's time in its regex pre-tokenizer; tiktoken's encoder does
    the same split and merges about 8x faster (measured in ``bench/tokenize_throughput.py``). With ``encoder="auto"``
    it is used when ``tiktoken_ranks`` finds the tokenizer's structure makes the two agree (``kind`` says which);
    ``verify`` checks documents against ``tokenizers`` all the same. A document longer than tiktoken's regex can
    take is encoded by ``tokenizers``.
    """

    def __init__(self, tok, encoder: str = "auto"):
        if encoder not in ENCODERS:
            raise ValueError(f"tokenizer.encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        self.tok = tok
        self._fast = None
        if encoder == "auto" and tok.encode_special_tokens and tok.post_processor is None:
            ranks = tiktoken_ranks(tok.to_str())
            if ranks is not None:
                import tiktoken

                self._fast = tiktoken.Encoding(
                    "tokenmill", pat_str=_BYTE_LEVEL_PATTERN, mergeable_ranks=ranks, special_tokens={}
                )
        self.kind = "tiktoken" if self._fast is not None else "tokenizers"

    def encode(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text, in order."""
        if self._fast is None:
            return [e.ids for e in self.tok.encode_batch(texts)]
        out: list[list[int] | None] = []
        slow: list[int] = []
        for i, text in enumerate(texts):
            ids = None
            if len(text) < _TIKTOKEN_MAX_CHARS:
                try:
                    ids = self._fast.encode_ordinary(text)
                except BaseException as e:  # a Rust panic arrives as pyo3's PanicException, a BaseException
                    if type(e).__name__ != "PanicException":
                        raise
            if ids is None:
                slow.append(i)
            out.append(ids)
        if slow:
            for i, enc in zip(slow, self.tok.encode_batch([texts[i] for i in slow])):
                out[i] = enc.ids
        return out  # type: ignore[return-value]

    def verify(self, texts: list[str], labels: list[str] | None = None) -> None:
        """Raise ValueError naming the first text (by ``labels``, else index) whose ids differ from ``tokenizers``'."""
        if self._fast is None:
            return
        for i, (ours, theirs) in enumerate(zip(self.encode(texts), self.tok.encode_batch(texts))):
            if ours != theirs.ids:
                name = labels[i] if labels else f"#{i}"
                raise ValueError(
                    f"tiktoken's encoding of document {name} differs from the tokenizers library's "
                    f"({len(ours)} vs {len(theirs.ids)} tokens): set tokenizer.encoder=tokenizers"
                )
