"""Model weights as safetensors: no pickles, tied tensors stored once."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tokenmill.core.files import chmod_like_open


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Save ``state``; a tensor that aliases an earlier one (tied embeddings) is stored once, under the first name."""
    seen: dict[tuple, str] = {}
    unique, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = t.contiguous()
    path = Path(path)
    save_file(unique, str(path), metadata={"aliases": ",".join(f"{a}={b}" for a, b in aliases.items())})
    return chmod_like_open(path)  # safetensors writes a 0600 temp file and renames it: give it the umask's mode


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load weights written by ``save_weights`` into ``model`` (strict apart from the stored aliases)."""
    from safetensors import safe_open

    state = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get("aliases", "")
    for pair in filter(None, meta.split(",")):
        alias, original = pair.split("=")
        state[alias] = state[original]
    model.load_state_dict(state, strict=True)


def save_model_folder(out_dir: str | Path, state: dict[str, torch.Tensor], arch, tokenizer_path: str | Path) -> Path:
    """A self-contained model folder: ``weights.safetensors``, ``model.json`` (family + config), ``tokenizer.json``."""
    import shutil

    from tokenmill.training.models import save_architecture

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(state, out_dir / "weights.safetensors")
    save_architecture(arch, out_dir / "model.json")
    if Path(tokenizer_path).resolve() != (out_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_path, out_dir / "tokenizer.json")
    return out_dir


def load_model(path: str | Path) -> tuple[torch.nn.Module, Path]:
    """``(model in eval mode, tokenizer.json path)`` from a tokenmill model folder or a Hugging Face folder."""
    from tokenmill.training.models import build_model, load_architecture

    path = Path(path)
    if (path / "model.json").is_file():
        model = build_model(load_architecture(path / "model.json"))
        load_weights(model, path / "weights.safetensors")
    elif (path / "config.json").is_file():
        from tokenmill.training.hf import load_hf

        model = load_hf(path)
    else:
        raise FileNotFoundError(
            f"{path} is neither a tokenmill model folder (model.json) nor a Hugging Face "
            "folder (config.json); a training run writes one under <run>/train"
        )
    tokenizer = path / "tokenizer.json"
    if not tokenizer.is_file():
        raise FileNotFoundError(f"{path} has no tokenizer.json")
    return model.eval(), tokenizer
