"""Pictures for people: the data funnel and the loss curve, as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path, dpi: int = 110) -> Path:
    """``fig`` laid out and written to ``path`` (its folder made), then closed; returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def funnel_chart(funnel: list[dict[str, Any]], path: str | Path) -> Path:
    """Horizontal bars: documents remaining after each stage, with what each stage removed."""
    plt = _pyplot()
    stages = [row["stage"] for row in funnel]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(stages) + 1.2))
    ax.barh(stages, [row["out"] for row in funnel], color="#3b7dd8", label="remaining")
    ax.barh(
        stages,
        [row["dropped"] + row["quarantined"] for row in funnel],
        left=[row["out"] for row in funnel],
        color="#e8833a",
        label="removed by this stage",
    )
    for i, row in enumerate(funnel):
        removed = row["dropped"] + row["quarantined"]
        ax.text(row["in"], i, f"  {row['out']:,}" + (f"  (−{removed:,})" if removed else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("documents")
    ax.set_title("Data funnel")
    ax.set_xlim(0, max(row["in"] for row in funnel) * 1.3 or 1)
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


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
    return _save(plt, fig, path, dpi=90)


def ablation_chart(rows: list[dict[str, Any]], sets: list[str], path: str | Path) -> Path:
    """Grouped bars: each held-out set's token loss per recipe (one bar per row), the seed-to-seed spread as an
    error bar on the rows that trained with several seeds (``<set>_spread``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(sets) * max(1, len(rows)) / 2), 4.2))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs = [j - 0.4 + width * (i + 0.5) for j in range(len(sets))]
        ys = [row.get(s) if row.get(s) is not None else 0.0 for s in sets]
        spread = [row.get(f"{s}_spread") or 0.0 for s in sets]
        ax.bar(xs, ys, width=width, label=row["recipe"], yerr=spread if any(spread) else None, capsize=3)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel("held-out token loss, nats (lower is better)")
    ax.set_title("data ablation: the same model trained on each recipe, scored on the same held-out text")
    losses = [row[s] for row in rows for s in sets if row.get(s) is not None]
    if losses:
        ax.set_ylim(min(losses) - 0.3, max(losses) + 0.2)  # the differences, not the bars' common height
    ax.legend(title="recipe")
    return _save(plt, fig, path)


def bakeoff_chart(rows: list[dict[str, Any]], histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Three panels: training loss against tokens per family, validation token loss against each family's
    unigram baseline, and throughput."""
    plt = _pyplot()
    fig, (curves, losses, speed) = plt.subplots(1, 3, figsize=(15, 4.2))
    for family, history in histories.items():
        points = [(h["train/tokens_seen"], h["train/loss"]) for h in history if "train/loss" in h]
        if points:
            curves.plot(*zip(*points), marker=".", label=family)
    curves.set_xlabel("tokens seen")
    curves.set_ylabel("training loss (the family's objective)")
    curves.set_title("training loss")
    curves.legend()
    names = [r["family"] for r in rows]
    x = range(len(rows))
    losses.bar([i - 0.2 for i in x], [r["token_loss"] for r in rows], width=0.4, label="model", color="#3b7dd8")
    losses.bar(
        [i + 0.2 for i in x],
        [r["unigram_baseline"] for r in rows],
        width=0.4,
        label="unigram baseline",
        color="#bbbbbb",
    )
    losses.set_xticks(list(x), names)
    losses.set_ylabel("nats / predicted token")
    losses.set_title("validation token loss (lower is better)")
    losses.legend(loc="lower right")
    speed.bar(names, [r["tokens_per_s"] or 0 for r in rows], color="#e8833a")
    speed.set_ylabel("tokens / s in the training loop")
    speed.set_title("throughput")
    return _save(plt, fig, path)
