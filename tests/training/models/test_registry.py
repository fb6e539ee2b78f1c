"""tokenmill.training.models: flavours, config resolution, parameter counts and model.json."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenmill.core.config import Config, ModelConfig, load_config
from tokenmill.core.env import REPO_ROOT
from tokenmill.training.models import (FAMILIES, architecture, build_model, count_parameters, family_of,
                             family_of_architecture, load_architecture, save_architecture)
from tokenmill.training.models.flavors import FLAVORS


def gpt2_small_by_hand() -> int:
    """GPT-2 small counted from its shapes: tied embeddings, biases everywhere, 50257 tokens, 1024 positions."""
    V, P, C, L = 50257, 1024, 768, 12
    per_block = (2 * C) + (C * 3 * C + 3 * C) + (C * C + C) + (2 * C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + P * C + L * per_block + 2 * C


def test_gpt2_small_counts_124m_exactly_as_by_hand():
    n = count_parameters(architecture(ModelConfig(flavor="gpt2-small")))
    assert n == gpt2_small_by_hand() == 124_439_808


@pytest.mark.parametrize("flavor, hf_module, expected_millions", [
    ("gpt2-small", "gpt2", 124.4), ("bert-base", "bert", 110.1), ("t5-small", "t5", 60.5),
    ("transformer-base", "marian", None)])
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
    counts = {name: count_parameters(architecture(ModelConfig(flavor=name)))
              for name in ("gpt3-small", "gpt3-medium", "gpt3-large", "gpt3-xl", "gpt3-2.7b")}
    published = {"gpt3-small": 125e6, "gpt3-medium": 350e6, "gpt3-large": 760e6, "gpt3-xl": 1.3e9,
                 "gpt3-2.7b": 2.7e9}
    for name, n in counts.items():
        assert abs(n - published[name]) / published[name] < 0.03, (name, n)


def test_flavor_then_explicit_keys_override():
    arch = architecture(ModelConfig(flavor="gpt2-small", n_layer=2, block_size=128), vocab_size=500, pad_id=1)
    assert (arch.n_layer, arch.n_embd, arch.block_size, arch.vocab_size, arch.bias) == (2, 768, 128, 500, True)


def test_family_comes_from_flavor_and_defaults_to_gpt():
    assert family_of(ModelConfig(flavor="t5-small")) == "t5"
    assert family_of(ModelConfig()) == "gpt"
    assert family_of(ModelConfig(family="bert", flavor="debug")) == "bert"


@pytest.mark.parametrize("cfg, message", [
    (ModelConfig(flavor="gpt2-smol"), "unknown model.flavor"),
    (ModelConfig(family="gpt", flavor="bert-base"), "bert flavour"),
    (ModelConfig(family="gpt", n_decoder_layer=2), "does not apply to the gpt family"),
    (ModelConfig(family="rnn"), "not one of"),
])
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


def test_every_flavor_resolves_and_counts():
    for name, flavor in FLAVORS.items():
        for family in [flavor.family] if flavor.family else list(FAMILIES):
            assert count_parameters(architecture(ModelConfig(family=family, flavor=name))) > 0


@pytest.mark.parametrize("family", list(FAMILIES))
def test_demo_config_trains_every_family_by_switching_one_key(family):
    """The README's per-family commands: conf/demo.yaml plus --set model.family=<family>."""
    arch = architecture(load_config(REPO_ROOT / "conf" / "demo.yaml", [f"model.family={family}"]).model)
    assert family_of_architecture(arch) == family and (arch.n_layer, arch.n_embd) == (4, 256)
