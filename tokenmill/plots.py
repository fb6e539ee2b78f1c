"""Pictures for people: the data funnel and the loss curve, as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def funnel_chart(funnel: list[dict[str, Any]], path: str | Path) -> Path:
    """Horizontal bars: documents remaining after each stage, with what each stage removed."""
    plt = _pyplot()
    stages = [row["stage"] for row in funnel]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(stages) + 1.2))
    ax.barh(stages, [row["out"] for row in funnel], color="#3b7dd8", label="remaining")
    ax.barh(stages, [row["dropped"] + row["quarantined"] for row in funnel],
            left=[row["out"] for row in funnel], color="#e8833a", label="removed by this stage")
    for i, row in enumerate(funnel):
        removed = row["dropped"] + row["quarantined"]
        ax.text(row["in"], i, f"  {row['out']:,}" + (f"  (−{removed:,})" if removed else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.set_title("Data funnel")
    ax.set_xlim(0, max(row["in"] for row in funnel) * 1.3 or 1)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curve(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Training loss (and validation points, when logged) against the step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train/loss"] for h in history], label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
