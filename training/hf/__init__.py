"""Hugging Face interoperability: export a trained tokenmill model to a ``transformers`` folder and back.

One module per Hugging Face architecture maps names and shapes (``gpt2.py``, ``bert.py``,
``t5.py``, ``marian.py``); each has ``HF_ARCHITECTURE``, ``hf_config``, ``to_hf_state`` and
``from_hf``. The exported folder holds ``config.json``, ``model.safetensors`` and a fast
tokenizer, and loads with ``transformers`` alone (no custom code, no network).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger("tokenmill.hf")

MODULES = {"gpt": "tokenmill.training.hf.gpt2", "bert": "tokenmill.training.hf.bert", "t5": "tokenmill.training.hf.t5",
           "transformer": "tokenmill.training.hf.marian"}


def module_for(family: str) -> ModuleType:
    if family not in MODULES:
        raise ValueError(f"no Hugging Face mapping for model family {family!r}")
    return importlib.import_module(MODULES[family])


def _family_for_architecture(name: str) -> str:
    for family in MODULES:
        if module_for(family).HF_ARCHITECTURE == name:
            return family
    known = ", ".join(module_for(f).HF_ARCHITECTURE for f in MODULES)
    raise ValueError(f"cannot import a {name}: tokenmill reads {known}")


def to_hf_model(model: torch.nn.Module, specials: dict[str, int]):
    """The ``transformers`` model equal to ``model`` (same weights, same function)."""
    import transformers

    from tokenmill.training.models import family_of_architecture

    family = family_of_architecture(model.cfg)
    mod = module_for(family)
    hf_model = getattr(transformers, mod.HF_ARCHITECTURE)(mod.hf_config(model.cfg, specials))
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    hf_model.load_state_dict(mod.to_hf_state(state, model.cfg), strict=True)
    return hf_model.eval()


def from_hf_model(hf_model) -> torch.nn.Module:
    """A tokenmill model equal to a ``transformers`` model of a supported architecture."""
    from tokenmill.training.models import build_model

    family = _family_for_architecture(type(hf_model).__name__)
    arch, state = module_for(family).from_hf(hf_model.config, hf_model.state_dict())
    model = build_model(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(model: torch.nn.Module, tokenizer_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``model`` and its tokenizer as a Hugging Face folder (safetensors); returns the folder."""
    from tokenmill.training.models import family_of_architecture
    from tokenmill.training.tokenizer import load_pretrained, special_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = load_pretrained(tokenizer_path)
    specials = special_ids(tok)
    hf_model = to_hf_model(model, specials)
    hf_model.save_pretrained(out_dir)
    hf_tokenizer(tok, specials, family_of_architecture(model.cfg)).save_pretrained(out_dir)
    log.info("export: %s written to %s", type(hf_model).__name__, out_dir)
    return out_dir


def hf_tokenizer(tok, specials: dict[str, int], family: str):
    """A ``PreTrainedTokenizerFast`` over our tokenizer that frames text the way the family was trained:
    ``[CLS] A [SEP] B [SEP]`` with segment ids for BERT, a closing end-of-text for the encoder-decoders."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    def name(role: str) -> str | None:
        return tok.id_to_token(specials[role]) if role in specials else None

    tok = type(tok).from_str(tok.to_str())  # a copy: the post-processor below is for this folder only
    if family == "bert":
        cls, sep = name("cls"), name("sep")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, specials["cls"]), (sep, specials["sep"])])
    elif family in ("t5", "transformer"):
        eos = name("eot")
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                           special_tokens=[(eos, specials["eot"])])
    sentinels = [name(k) for k in sorted((k for k in specials if k.startswith("sentinel_")),
                                         key=lambda k: int(k.split("_")[1]))]
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if family == "bert" else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=name("eot"), bos_token=name("eot") if family == "gpt" else None,
        pad_token=name("pad"), cls_token=name("cls"), sep_token=name("sep"), mask_token=name("mask"),
        additional_special_tokens=sentinels if family in ("t5", "transformer") else None,
        model_input_names=inputs)


def load_hf(folder: str | Path) -> torch.nn.Module:
    """Read a local Hugging Face model folder of a supported architecture into a tokenmill model."""
    import transformers

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a Hugging Face model folder (no config.json)")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    names = config.architectures or []
    if not names:
        raise ValueError(f"{folder}/config.json names no architecture")
    family = _family_for_architecture(names[0])
    cls = getattr(transformers, module_for(family).HF_ARCHITECTURE)
    hf_model = cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
    return from_hf_model(hf_model)
