"""The model families and how a run's ``model`` section becomes one of them.

Each family is one file of plain single-device PyTorch (``gpt.py``, ``bert.py``, ``t5.py``,
``transformer.py``) with a config dataclass, registered in ``tokenmill.training.families``.
``architecture`` resolves family defaults < flavour (``flavors.py``) < the keys set in the run
config; ``build_model`` instantiates it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

# FAMILIES is re-exported: the registry of model families lives in tokenmill.training.families
from tokenmill.training.families import DEFAULT_FAMILY, FAMILIES, spec_for, spec_of  # noqa: F401
from tokenmill.training.models.flavors import FLAVORS

_NOT_ARCHITECTURE = ("family", "flavor", "init_from")


def family_of(model_cfg) -> str:
    """The family a ``ModelConfig`` names, directly or through its flavour (GPT when neither says)."""
    flavor = FLAVORS.get(model_cfg.flavor) if model_cfg.flavor else None
    if model_cfg.flavor and flavor is None:
        raise ValueError(
            f"unknown model.flavor {model_cfg.flavor!r}; `tokenmill models` lists them: {', '.join(FLAVORS)}"
        )
    if flavor and flavor.family and model_cfg.family and model_cfg.family != flavor.family:
        raise ValueError(
            f"model.flavor {flavor.name!r} is a {flavor.family} flavour but model.family is "
            f"{model_cfg.family!r}: drop one of them"
        )
    family = model_cfg.family or (flavor.family if flavor else None) or DEFAULT_FAMILY
    spec_for(family)
    return family


def architecture(model_cfg, vocab_size: int | None = None, pad_id: int | None = None):
    """The family's config dataclass: its defaults < the flavour < every ``model.*`` key that is set.

    ``vocab_size`` and ``pad_id`` come from the run's tokenizer when given. A key the family does
    not have (``n_decoder_layer`` for GPT, say) is an error rather than silently ignored.
    """
    family = family_of(model_cfg)
    config_cls = spec_for(family).config_class()
    names = {f.name for f in dataclasses.fields(config_cls)}
    values: dict[str, Any] = {}
    if model_cfg.flavor:
        values.update(FLAVORS[model_cfg.flavor].sizes)
    for key, value in dataclasses.asdict(model_cfg).items():
        if key in _NOT_ARCHITECTURE or value is None:
            continue
        if key not in names:
            raise ValueError(
                f"model.{key} does not apply to the {family} family (its keys: {', '.join(sorted(names))})"
            )
        values[key] = value
    if vocab_size is not None:
        values["vocab_size"] = vocab_size
    if pad_id is not None and "pad_id" in names:
        values["pad_id"] = pad_id
    return config_cls(**{k: v for k, v in values.items() if k in names})


def family_of_architecture(arch) -> str:
    return spec_of(arch).name


def build_model(arch) -> nn.Module:
    """A freshly initialised model for a family config (from ``architecture``)."""
    return spec_of(arch).model_class()(arch)


def count_parameters(arch) -> int:
    """Parameters of the model ``arch`` describes, counted on the meta device (no memory, any size)."""
    with torch.device("meta"):
        model = build_model(arch)
    return sum(p.numel() for p in model.parameters())


def save_architecture(arch, path: str | Path) -> Path:
    """``model.json``: the family and its full config, enough to rebuild the model for its weights."""
    path = Path(path)
    path.write_text(json.dumps({"family": family_of_architecture(arch), "config": dataclasses.asdict(arch)}, indent=2))
    return path


def load_architecture(path: str | Path):
    """The family config ``model.json`` holds; a key the file predates takes the value it meant then
    (the config class's ``SAVED_WITHOUT``), not today's default."""
    spec = json.loads(Path(path).read_text())
    config_cls = spec_for(spec["family"]).config_class()
    return config_cls(**{**getattr(config_cls, "SAVED_WITHOUT", {}), **spec["config"]})
