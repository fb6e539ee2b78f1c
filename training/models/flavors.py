"""Named model sizes, one table: ``debug`` for tests and the published sizes of each family.

A flavour sets a family's architecture keys; ``model.*`` keys in the run config override it.
``vocab_size`` is the published vocabulary (it sets the parameter counts ``tokenmill models``
prints); training always uses the vocabulary of the run's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Flavor:
    name: str
    family: str | None  # None: fits every family (the family comes from model.family)
    sizes: dict = field(default_factory=dict)
    source: str = ""


def _gpt3(name: str, n_layer: int, n_embd: int, n_head: int) -> Flavor:
    return Flavor(
        name,
        "gpt",
        dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=2048, vocab_size=50257, bias=True),
        "GPT-3 paper, Table 2.1",
    )


def _gpt2(name: str, n_layer: int, n_embd: int, n_head: int) -> Flavor:
    return Flavor(
        name,
        "gpt",
        dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head, block_size=1024, vocab_size=50257, bias=True),
        "GPT-2 paper, Table 2 (released sizes)",
    )


# the original BERT: post-LN blocks, a learned position table, NSP on [CLS] (the family's defaults: pre-LN, RoPE,
# NSP comparing the segments)
_BERT = dict(block_size=512, vocab_size=30522, norm="post", position="learned", nsp_pool="cls")
_T5 = dict(vocab_size=32128, d_head=64, activation="relu", block_size=512)
_TRANSFORMER = dict(vocab_size=37000, activation="relu", position="sinusoidal", block_size=512)

FLAVORS: dict[str, Flavor] = {
    f.name: f
    for f in [
        Flavor(
            "debug",
            None,
            dict(n_layer=2, n_decoder_layer=2, n_head=2, d_head=32, n_embd=64, d_ff=256, block_size=64),
            "tiny, for tests",
        ),
        Flavor(
            "gpt-1",
            "gpt",
            dict(n_layer=12, n_embd=768, n_head=12, block_size=512, vocab_size=40478, bias=True),
            "GPT-1 paper, section 4.1",
        ),
        _gpt2("gpt2-small", 12, 768, 12),
        _gpt2("gpt2-medium", 24, 1024, 16),
        _gpt2("gpt2-large", 36, 1280, 20),
        _gpt2("gpt2-xl", 48, 1600, 25),
        _gpt3("gpt3-small", 12, 768, 12),
        _gpt3("gpt3-medium", 24, 1024, 16),
        _gpt3("gpt3-large", 24, 1536, 16),
        # The paper lists 24 heads of 128 for XL, which does not multiply to d_model 2048: 16 heads of 128 do.
        _gpt3("gpt3-xl", 24, 2048, 16),
        _gpt3("gpt3-2.7b", 32, 2560, 32),
        Flavor(
            "bert-base", "bert", dict(n_layer=12, n_embd=768, n_head=12, d_ff=3072, **_BERT), "BERT paper, section 3"
        ),
        Flavor(
            "bert-large", "bert", dict(n_layer=24, n_embd=1024, n_head=16, d_ff=4096, **_BERT), "BERT paper, section 3"
        ),
        Flavor(
            "t5-small",
            "t5",
            dict(n_layer=6, n_decoder_layer=6, n_embd=512, n_head=8, d_ff=2048, **_T5),
            "T5 paper, section 3.7 (released checkpoints)",
        ),
        Flavor(
            "t5-base",
            "t5",
            dict(n_layer=12, n_decoder_layer=12, n_embd=768, n_head=12, d_ff=3072, **_T5),
            "T5 paper, section 3.1.1",
        ),
        Flavor(
            "t5-large",
            "t5",
            dict(n_layer=24, n_decoder_layer=24, n_embd=1024, n_head=16, d_ff=4096, **_T5),
            "T5 paper, section 3.7",
        ),
        Flavor(
            "transformer-base",
            "transformer",
            dict(n_layer=6, n_decoder_layer=6, n_embd=512, n_head=8, d_ff=2048, dropout=0.1, **_TRANSFORMER),
            "Attention is all you need, Table 3",
        ),
        Flavor(
            "transformer-big",
            "transformer",
            dict(n_layer=6, n_decoder_layer=6, n_embd=1024, n_head=16, d_ff=4096, dropout=0.3, **_TRANSFORMER),
            "Attention is all you need, Table 3",
        ),
    ]
}
