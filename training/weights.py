"""Model weights as safetensors: no pickles, tied tensors stored once."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


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
    return path


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
