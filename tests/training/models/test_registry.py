"""tokenmill.training.models: flavours, config resolution, parameter counts and model.json."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tokenmill.core.config import Config, ModelConfig, load_config
from tokenmill.core.env import REPO_ROOT
from tokenmill.training.models import (
    FAMILIES,
    architecture,
    build_model,
    count_parameters,
    family_of,
    family_of_architecture,
    load_architecture,
    save_architecture,
)
from tokenmill.training.models.flavors import FLAVORS


def gpt2_small_by_hand() -> int:
    """GPT-2 small counted from its shapes: tied embeddings, biases everywhere, 50257 tokens, 1024 positions."""
    V, P, C, L = 50257, 1024, 768, 12
    per_block = (2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (2 * C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + P * C + L * per_block + 2 * C


def test_gpt2_small_counts_124m_exactly_as_by_hand():
    n = count_parameters(architecture(ModelConfig(flavor="gpt2-small")))
    assert n == gpt2_small_by_hand() == 124_439_808


@pytest.mark.parametrize(
    "flavor, hf_module, expected_millions",
    [
        ("gpt2-small", "gpt2", 124.4),
        ("bert-base", "bert", 110.1),
        ("t5-small", "t5", 60.5),
        ("transformer-base", "marian", None),
    ],
)
def test_published_counts_match_transformers_built_from_the_exported_config(flavor, hf_module, expected_millions):
    """The same architecture built by transformers (on the meta device) has exactly our parameter count."""
    import importlib

    import transformers

    arch = architecture(ModelConfig(flavor=flavor))
    mod = importlib.import_module(f"tokenmill.training.hf.{hf_module}")
    specials = {"eot": 0, "pad": 1, "cls": 2, "sep": 3, "mask": 4}
    with torch.device("meta"):
        hf = getattr(transformers, mod.HF_ARCHITECTURE)(mod.hf_config(arch, specials))
    ours = count_parameters(arch)
    theirs = sum(p.numel() for p in hf.parameters() if p.requires_grad)  # Marian's frozen sinusoid tables are not
    if hf_module == "marian":
        theirs += hf.final_logits_bias.numel()  # our output bias is a parameter, Marian's a buffer
    assert ours == theirs
    if expected_millions is not None:
        assert round(ours / 1e6, 1) == expected_millions


def test_gpt3_sizes_follow_the_paper_table():
    counts = {
        name: count_parameters(architecture(ModelConfig(flavor=name)))
        for name in ("gpt3-small", "gpt3-medium", "gpt3-large", "gpt3-xl", "gpt3-2.7b")
    }
    published = {"gpt3-small": 125e6, "gpt3-medium": 350e6, "gpt3-large": 760e6, "gpt3-xl": 1.3e9, "gpt3-2.7b": 2.7e9}
    for name, n in counts.items():
        assert abs(n - published[name]) / published[name] < 0.03, (name, n)


def test_flavor_then_explicit_keys_override():
    arch = architecture(ModelConfig(flavor="gpt2-small", n_layer=2, block_size=128), vocab_size=500, pad_id=1)
    assert (arch.n_layer, arch.n_embd, arch.block_size, arch.vocab_size, arch.bias) == (2, 768, 128, 500, True)


def test_family_comes_from_flavor_and_defaults_to_gpt():
    assert family_of(ModelConfig(flavor="t5-small")) == "t5"
    assert family_of(ModelConfig()) == "gpt"
    assert family_of(ModelConfig(family="bert", flavor="debug")) == "bert"


@pytest.mark.parametrize(
    "cfg, message",
    [
        (ModelConfig(flavor="gpt2-smol"), "unknown model.flavor"),
        (ModelConfig(family="gpt", flavor="bert-base"), "bert flavour"),
        (ModelConfig(family="gpt", n_decoder_layer=2), "does not apply to the gpt family"),
        (ModelConfig(family="rnn"), "not one of"),
    ],
)
def test_bad_model_sections_are_clear_errors(cfg, message):
    with pytest.raises(ValueError, match=message):
        architecture(cfg)


def test_demo_config_spells_out_the_default_architecture():
    demo = load_config(REPO_ROOT / "conf" / "demo.yaml")
    assert architecture(demo.model) == architecture(Config().model)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_builds_from_the_debug_flavor_and_round_trips_model_json(family, tmp_path):
    arch = architecture(ModelConfig(family=family, flavor="debug"), vocab_size=300, pad_id=1)
    assert family_of_architecture(arch) == family
    path = save_architecture(arch, tmp_path / "model.json")
    again = load_architecture(path)
    assert again == arch and dataclasses.asdict(again) == dataclasses.asdict(arch)
    model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(arch)


def test_a_bert_model_json_from_before_nsp_pool_loads_as_the_cls_pool_it_was(tmp_path):
    arch = architecture(ModelConfig(family="bert", flavor="debug"), vocab_size=300, pad_id=1)
    assert arch.nsp_pool == "segments"  # today's default
    spec = json.loads(save_architecture(arch, tmp_path / "model.json").read_text())
    del spec["config"]["nsp_pool"]  # what a model folder written before the key existed holds
    (tmp_path / "model.json").write_text(json.dumps(spec))
    old = load_architecture(tmp_path / "model.json")
    assert old == dataclasses.replace(arch, nsp_pool="cls")
    assert build_model(old).pooler.in_features == arch.n_embd


def test_every_flavor_resolves_and_counts():
    for name, flavor in FLAVORS.items():
        for family in [flavor.family] if flavor.family else list(FAMILIES):
            assert count_parameters(architecture(ModelConfig(family=family, flavor=name))) > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_demo_config_trains_every_family_by_switching_one_key(family):
    """The README's per-family commands: conf/demo.yaml plus --set model.family=<family>."""
    arch = architecture(load_config(REPO_ROOT / "conf" / "demo.yaml", [f"model.family={family}"]).model)
    assert family_of_architecture(arch) == family and (arch.n_layer, arch.n_embd) == (4, 256)


# --------------------------------------------------------------------------- the family specs

TEXTS = [
    "The river runs by the old town. It is quiet there.",
    "A cat sat on the mat! Where is the bridge?",
    "Over there, past the mill. The water is cold.",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    from tokenmill.core.tokenizer import train_bpe

    return train_bpe(iter(TEXTS), vocab_size=500, min_frequency=1)


def check_spec(spec, tok) -> None:
    """Everything a registered family must have, resolved and exercised on its debug flavour: a family
    that is registered only in part fails here."""
    import inspect

    import numpy as np
    import transformers

    from tokenmill.core.tokenizer import special_ids
    from tokenmill.training import flops
    from tokenmill.training.attention import attention_maps
    from tokenmill.training.families import Framing, spec_of
    from tokenmill.training.objectives import Objective, build_objective

    for field in dataclasses.fields(spec):
        value = getattr(spec, field.name)
        assert value is not None or field.name in ("generate", "hf_bos"), f"{spec.name}: {field.name} is not set"
        assert value != "", f"{spec.name}: {field.name} is empty"
    specials = special_ids(tok)

    # model and config classes, and the family's shape
    model_cls, config_cls = spec.model_class(), spec.config_class()
    assert issubclass(model_cls, torch.nn.Module) and dataclasses.is_dataclass(config_cls)
    keys = {f.name for f in dataclasses.fields(config_cls)}
    sizes = {**FLAVORS["debug"].sizes, "vocab_size": tok.get_vocab_size(), "pad_id": specials["pad"]}
    arch = config_cls(**{k: v for k, v in sizes.items() if k in keys})
    assert spec.is_config(arch)
    if spec.name in FAMILIES:
        assert spec_of(arch) is spec
    assert spec.encoder_decoder == ("n_decoder_layer" in keys)
    model = model_cls(arch).eval()
    assert flops.flops_per_token(arch) > 0

    # objective: built from a token stream, and its token loss is one of the metrics it reports
    objective_cls = spec.objective_class()
    assert issubclass(objective_cls, Objective) and "from_stream" in vars(objective_cls)
    stream = np.concatenate([np.array(tok.encode(t).ids + [specials["eot"]], dtype=np.int64) for t in TEXTS])
    options = {"block_size": arch.block_size, "specials": specials, "seed": 0, "vocab_size": tok.get_vocab_size()}
    objective = (
        build_objective(spec.name, stream, **options)
        if spec.name in FAMILIES
        else objective_cls.from_stream(stream, **options)
    )
    assert isinstance(objective, objective_cls)
    _, metrics = objective.loss(model, objective.batch(0, 2))
    assert spec.token_loss in metrics and "loss" in metrics, (spec.token_loss, sorted(metrics))

    # Hugging Face converter: the module has the four names, and transformers has its architecture
    hf = spec.hf()
    for name in ("hf_config", "to_hf_state", "from_hf"):
        assert callable(getattr(hf, name, None)), f"{spec.hf_module} has no {name}"
    assert isinstance(hf.HF_ARCHITECTURE, str) and hasattr(transformers, spec.hf_architecture)

    # framing: the roles are special tokens
    for framing in (spec.attention_framing, spec.hf_framing):
        assert isinstance(framing, Framing) and set(framing.before + framing.after) <= set(specials)
    assert spec.hf_bos is None or spec.hf_bos in specials

    # sampling, generation and attention maps run on the model
    sample = spec.sampler()(model, tok, specials, "The river", 3, 0, torch.device("cpu"))
    assert isinstance(sample, str) and sample
    generate = spec.generator()
    if generate is not None:
        assert "max_new_tokens" in inspect.signature(generate).parameters
        out = generate(
            model,
            tok.encode("The river").ids,
            specials,
            3,
            temperature=1.0,
            top_k=None,
            top_p=None,
            generator=torch.Generator().manual_seed(0),
            use_cache=True,
        )
        assert all(isinstance(t, int) for t in out)
    ids = spec.attention_framing.frame(tok.encode("The river runs.").ids, specials)
    maps = attention_maps(model, ids)
    assert maps and all(m.shape[-1] == len(ids) for m in maps.values())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_spec_is_complete_and_resolves(family, tokenizer):
    assert FAMILIES[family].name == family
    check_spec(FAMILIES[family], tokenizer)


@pytest.mark.parametrize(
    "broken",
    [
        {"hf_module": "tokenmill.training.models.gpt"},  # not a Hugging Face converter
        {"token_loss": "span_loss"},  # not a metric of causal LM
        {"objective": "tokenmill.training.objectives:Seq2SeqObjective"},  # no pre-training objective on a stream
        {"sample": ""},  # left out
        {"encoder_decoder": True},  # the wrong shape
    ],
)
def test_a_half_registered_family_fails_the_spec_check(broken, tokenizer):
    spec = dataclasses.replace(FAMILIES["gpt"], name="gpt-half", **broken)
    with pytest.raises((AssertionError, AttributeError, ImportError, NotImplementedError, ValueError)):
        check_spec(spec, tokenizer)


def test_spec_lookups_keep_their_messages():
    from tokenmill.training.families import spec_for, spec_of
    from tokenmill.training.hf import module_for
    from tokenmill.training.objectives import build_objective

    assert spec_for("t5").encoder_decoder and not spec_for("bert").encoder_decoder
    with pytest.raises(ValueError, match=r"^model.family 'rnn' is not one of gpt, bert, t5, transformer$"):
        spec_for("rnn")
    with pytest.raises(ValueError, match=r"^no Hugging Face mapping for model family 'rnn'$"):
        module_for("rnn")
    with pytest.raises(ValueError, match=r"^unknown model family 'rnn': expected one of gpt, bert, t5, transformer$"):
        build_objective("rnn", [], block_size=8, specials={}, seed=0, vocab_size=8)
    with pytest.raises(ValueError, match="is not a model family's config"):
        spec_of(ModelConfig())
