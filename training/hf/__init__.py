"""Hugging Face interoperability: export a trained tokenmill model to a ``transformers`` folder and back.

One module per Hugging Face architecture maps names and shapes (``gpt2.py``, ``bert.py``,
``t5.py``, ``marian.py``); each has ``HF_ARCHITECTURE``, ``hf_config``, ``to_hf_state`` and
``from_hf``; a family's ``ModelSpec.hf_module`` names its own. The exported folder holds
``config.json``, ``model.safetensors`` and a fast tokenizer, and loads with ``transformers``
alone (no custom code, no network).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import torch

from tokenmill.training.families import FAMILIES, ModelSpec, spec_for, spec_of

log = logging.getLogger("tokenmill.hf")


def module_for(family: str) -> ModuleType:
    return spec_for(family, error="no Hugging Face mapping for model family {name!r}").hf()


def _spec_for_architecture(name: str) -> ModelSpec:
    for spec in FAMILIES.values():
        if spec.hf_architecture == name:
            return spec
    known = ", ".join(spec.hf_architecture for spec in FAMILIES.values())
    raise ValueError(f"cannot import a {name}: tokenmill reads {known}")


def to_hf_model(model: torch.nn.Module, specials: dict[str, int]):
    """The ``transformers`` model equal to ``model`` (same weights, same function)."""
    import transformers

    mod = spec_of(model.cfg).hf()
    hf_model = getattr(transformers, mod.HF_ARCHITECTURE)(mod.hf_config(model.cfg, specials))
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    hf_model.load_state_dict(mod.to_hf_state(state, model.cfg), strict=True)
    return hf_model.eval()


def from_hf_model(hf_model) -> torch.nn.Module:
    """A tokenmill model equal to a ``transformers`` model of a supported architecture."""
    from tokenmill.training.models import build_model

    mod = _spec_for_architecture(type(hf_model).__name__).hf()
    arch, state = mod.from_hf(hf_model.config, hf_model.state_dict())
    model = build_model(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(model: torch.nn.Module, tokenizer_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``model`` and its tokenizer as a Hugging Face folder (safetensors); returns the folder."""
    from tokenmill.training.tokenizer import load_pretrained, special_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = load_pretrained(tokenizer_path)
    specials = special_ids(tok)
    hf_model = to_hf_model(model, specials)
    hf_model.save_pretrained(out_dir)
    hf_tokenizer(tok, specials, spec_of(model.cfg).name).save_pretrained(out_dir)
    log.info("export: %s written to %s", type(hf_model).__name__, out_dir)
    return out_dir


def hf_tokenizer(tok, specials: dict[str, int], family: str):
    """A ``PreTrainedTokenizerFast`` over our tokenizer that frames text the way the family was trained
    (its ``ModelSpec.hf_framing``): ``[CLS] A [SEP] B [SEP]`` with segment ids for BERT, a closing end-of-text
    for the encoder-decoders."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    spec = spec_for(family)
    framing = spec.hf_framing

    def name(role: str) -> str | None:
        return tok.id_to_token(specials[role]) if role in specials else None

    tok = type(tok).from_str(tok.to_str())  # a copy: the post-processor below is for this folder only
    if framing.overhead:
        before, after = [name(r) for r in framing.before], [name(r) for r in framing.after]
        second = ":1" if framing.segments else ""
        tok.post_processor = processors.TemplateProcessing(
            single=" ".join([*before, "$A", *after]),
            pair=" ".join([*before, "$A", *after, f"$B{second}", *(f"{t}{second}" for t in after)]),
            special_tokens=[(name(r), specials[r]) for r in dict.fromkeys(framing.before + framing.after)],
        )
    sentinels = [
        name(k) for k in sorted((k for k in specials if k.startswith("sentinel_")), key=lambda k: int(k.split("_")[1]))
    ]
    inputs = ["input_ids", "token_type_ids", "attention_mask"] if framing.segments else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=name("eot"),
        bos_token=name(spec.hf_bos) if spec.hf_bos else None,
        pad_token=name("pad"),
        cls_token=name("cls"),
        sep_token=name("sep"),
        mask_token=name("mask"),
        additional_special_tokens=sentinels if spec.encoder_decoder else None,
        model_input_names=inputs,
    )


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
    cls = getattr(transformers, _spec_for_architecture(names[0]).hf_architecture)
    hf_model = cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
    return from_hf_model(hf_model)
