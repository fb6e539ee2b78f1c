"""Attention maps: per-layer, per-head attention probabilities for a text, saved as heatmaps.

The course's central picture, and a quick health check: a collapsed head puts all its mass on
one key (entropy near 0), a dead one spreads it evenly (entropy near log T).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch


@torch.no_grad()
def attention_maps(model: torch.nn.Module, ids: list[int]) -> dict[str, torch.Tensor]:
    """``{"layer 0": (H, T, T), ...}`` for decoder-only and encoder models; encoder-decoders give
    ``"encoder i"``, ``"decoder i"`` and ``"cross i"`` maps (the decoder reads the same text shifted right)."""
    from tokenmill.training.families import spec_of

    dev = next(model.parameters()).device
    x = torch.tensor([ids], device=dev)
    if not spec_of(model.cfg).encoder_decoder:  # one stack: its outputs end with the per-layer maps
        *_, maps = model(x, need_weights=True)
        return {f"layer {i}": m[0].float().cpu() for i, m in enumerate(maps)}
    decoder_in = torch.tensor([[model.cfg.pad_id] + ids[:-1]], device=dev)
    _, maps = model(input_ids=x, decoder_input_ids=decoder_in, need_weights=True)
    return {
        f"{part} {i}": m[0].float().cpu() for part in ("encoder", "decoder", "cross") for i, m in enumerate(maps[part])
    }


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Readable axis labels: each token decoded on its own, spaces shown as ␣ (byte-level BPE stores them as Ġ)."""
    return [
        tokenizer.decode([i], skip_special_tokens=False).replace(" ", "␣").replace("\n", "⏎")
        or tokenizer.id_to_token(i)
        for i in ids
    ]


def head_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of each head's attention rows: ``(H, Tq, Tk)`` → ``(H,)``."""
    return -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean(-1)


def save_attention_pngs(
    maps: dict[str, torch.Tensor], tokens: list[str], out_dir: str | Path, max_heads: int = 16
) -> list[Path]:
    """One PNG per layer (a grid of its heads, entropy in each title); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = [t if len(t) <= 12 else t[:11] + "…" for t in tokens]
    files = []
    for name, weights in maps.items():
        heads = weights[:max_heads]
        cols = min(4, len(heads))
        rows = math.ceil(len(heads) / cols)
        size = max(3.0, 0.22 * len(labels))
        fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        for h, ax in enumerate(axes.flat):
            if h >= len(heads):
                ax.axis("off")
                continue
            ax.imshow(heads[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"head {h}  H={head_entropy(heads[h : h + 1])[0]:.2f}", fontsize=8)
            if heads.shape[-1] == len(labels):
                ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            if heads.shape[-2] == len(labels):
                ax.set_yticks(range(len(labels)), labels, fontsize=6)
        fig.suptitle(f"attention, {name} (rows: queries, columns: keys)")
        fig.tight_layout()
        path = out_dir / f"attention_{name.replace(' ', '_')}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        files.append(path)
    return files
