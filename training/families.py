"""The model families: one :class:`ModelSpec` per family, registered once in :data:`FAMILIES`.

A spec says everything the rest of tokenmill needs to know about a family (``model.family``):
its model and config classes, its pre-training objective and which of its metrics is the token
loss, its Hugging Face converter, how it samples and generates text, how it frames text with
special tokens, and its shape (decoder/encoder stack or encoder-decoder), which FLOPs, memory
planning, attention maps and the bake-off read. Code that behaves differently per family asks
the spec (``spec_for(name)``, ``spec_of(config)``) rather than comparing family names.

Adding a family is one model file (``models/<name>.py``: model class + config dataclass), one
Hugging Face file (``hf/<name>.py``: ``HF_ARCHITECTURE``, ``hf_config``, ``to_hf_state``,
``from_hf``) and one entry in :data:`FAMILIES`; ``tests/training/models/test_registry.py``
checks every entry is complete.

Classes, modules and functions are named by dotted path (``"package.module:attribute"``) and
imported on first use, so this module imports nothing heavy and nothing that imports it back.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any


def load(path: str) -> Any:
    """The object a dotted path names: ``"pkg.mod:attr"`` an attribute of a module, ``"pkg.mod"`` the module."""
    module, _, attribute = path.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attribute) if attribute else mod


@dataclass(frozen=True)
class Framing:
    """Special tokens a family puts around a text, by role (keys of ``tokenizer.special_ids``): ``before``
    and ``after`` it. With ``segments``, the second text of a pair (and the tokens after it) is segment 1
    (``token_type_ids``)."""

    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    segments: bool = False

    @property
    def overhead(self) -> int:
        """Special tokens added to one text."""
        return len(self.before) + len(self.after)

    def frame(self, ids: list[int], specials: dict[str, int]) -> list[int]:
        return [specials[r] for r in self.before] + list(ids) + [specials[r] for r in self.after]


PLAIN = Framing()  # the text as it is
CLS_SEP = Framing(before=("cls",), after=("sep",), segments=True)  # [CLS] A [SEP] (B [SEP]), BERT
EOS = Framing(after=("eot",))  # A EOS (B EOS): the encoder-decoders' inputs end with end-of-text


@dataclass(frozen=True)
class ModelSpec:
    """One model family, everything that differs between families."""

    name: str  # the ``model.family`` value, in manifests, MLflow params and tags
    title: str  # how prose names it ("GPT")
    model: str  # the ``nn.Module`` class, built from a config: ``"tokenmill.training.models.gpt:GPT"``
    config: str  # its config dataclass (``model.*`` keys, ``model.json``)
    objective: str  # the pre-training ``Objective`` class; ``from_stream`` builds it on a token stream
    objective_description: str  # for ``tokenmill models``
    token_loss: str  # the objective's metric that is the loss on predicted tokens (vs the unigram baseline)
    token_accuracy: str  # its metric that is the share of predicted tokens right (vs the most frequent token's)
    hf_module: str  # the Hugging Face converter module: HF_ARCHITECTURE, hf_config, to_hf_state, from_hf
    sample: str  # ``(model, tokenizer, specials, prompt, n_tokens, seed, device) -> str``: training's sample.txt
    generate: str | None = None  # ``(model, ids, specials, max_new_tokens, **sampling) -> ids``; None: no generation
    encoder_decoder: bool = False  # an encoder and a decoder stack (span corruption, train.pairs), else one stack
    predicts_stream: bool = False  # the objective predicts the token stream itself: perplexity applies, and the
    #                                unigram baseline is the stream's (others: the labels of training batches)
    head_transform: bool = False  # a d×d transform before the vocabulary projection (BERT's MLM head), in FLOPs
    attention_framing: Framing = PLAIN  # how the input ids of attention maps are framed
    hf_framing: Framing = PLAIN  # how the exported Hugging Face tokenizer frames text
    hf_bos: str | None = None  # the special-token role the Hugging Face tokenizer calls bos_token

    def model_class(self) -> type:
        return load(self.model)

    def config_class(self) -> type:
        return load(self.config)

    def objective_class(self) -> type:
        return load(self.objective)

    def hf(self) -> ModuleType:
        return load(self.hf_module)

    @property
    def hf_architecture(self) -> str:
        return self.hf().HF_ARCHITECTURE

    def sampler(self) -> Callable[..., str]:
        return load(self.sample)

    def generator(self) -> Callable[..., list[int]] | None:
        return load(self.generate) if self.generate else None

    def is_config(self, arch: Any) -> bool:
        """Whether ``arch`` is an instance of this family's config class (checked without importing it)."""
        module, _, name = self.config.partition(":")
        return type(arch).__name__ == name and type(arch).__module__ == module


DEFAULT_FAMILY = "gpt"  # a model section that names no family (directly or by flavour)

_M, _O, _S = "tokenmill.training.models", "tokenmill.training.objectives", "tokenmill.training.sampling"

FAMILIES: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="gpt",
            title="GPT",
            model=f"{_M}.gpt:GPT",
            config=f"{_M}.gpt:GPTConfig",
            objective=f"{_O}:CausalLMObjective",
            objective_description="causal language modelling",
            token_loss="loss",
            token_accuracy="accuracy",
            hf_module="tokenmill.training.hf.gpt2",
            sample=f"{_S}:continue_prompt",
            generate=f"{_S}:continue_ids",
            predicts_stream=True,
            hf_bos="eot",
        ),
        ModelSpec(
            name="bert",
            title="BERT",
            model=f"{_M}.bert:BERT",
            config=f"{_M}.bert:BERTConfig",
            objective=f"{_O}:MaskedLMObjective",
            objective_description="masked LM + next-sentence prediction",
            token_loss="mlm_loss",
            token_accuracy="mlm_accuracy",
            hf_module="tokenmill.training.hf.bert",
            sample=f"{_S}:fill_mask",
            head_transform=True,
            attention_framing=CLS_SEP,
            hf_framing=CLS_SEP,
        ),
        ModelSpec(
            name="t5",
            title="T5",
            model=f"{_M}.t5:T5",
            config=f"{_M}.t5:T5Config",
            objective=f"{_O}:SpanCorruptionObjective",
            objective_description="span corruption",
            token_loss="span_loss",
            token_accuracy="span_accuracy",
            hf_module="tokenmill.training.hf.t5",
            sample=f"{_S}:fill_span",
            generate=f"{_S}:decode_ids",
            encoder_decoder=True,
            hf_framing=EOS,
        ),
        ModelSpec(
            name="transformer",
            title="Transformer",
            model=f"{_M}.transformer:Transformer",
            config=f"{_M}.transformer:TransformerConfig",
            objective=f"{_O}:SpanCorruptionObjective",
            objective_description="span corruption",
            token_loss="span_loss",
            token_accuracy="span_accuracy",
            hf_module="tokenmill.training.hf.marian",
            sample=f"{_S}:fill_span",
            generate=f"{_S}:decode_ids",
            encoder_decoder=True,
            hf_framing=EOS,
        ),
    )
}


def spec_for(name: str, error: str = "model.family {name!r} is not one of {known}") -> ModelSpec:
    """The spec of family ``name``; else a ValueError with ``error`` (``{name}``, ``{known}``: the families)."""
    if name not in FAMILIES:
        raise ValueError(error.format(name=name, known=", ".join(FAMILIES)))
    return FAMILIES[name]


def spec_of(arch: Any) -> ModelSpec:
    """The spec of the family whose config ``arch`` is (an ``architecture``, a model's ``cfg``)."""
    for spec in FAMILIES.values():
        if spec.is_config(arch):
            return spec
    raise ValueError(f"{type(arch).__name__} is not a model family's config")


def encoder_decoders() -> list[str]:
    """The encoder-decoder families' names, for messages."""
    return [name for name, spec in FAMILIES.items() if spec.encoder_decoder]
