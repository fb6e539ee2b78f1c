"""``evaluate`` flow: a trained model folder, re-scored from its saved weights on the validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact

from tokenmill.core.manifest import read_manifest
from tokenmill.flows.tasks import cached_evaluate_model
from tokenmill.resolve import resolve_config


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    train_manifest: str, config_path: str | None = None, overrides: list[str] | None = None
) -> dict[str, Any]:
    """Evaluate the model a train manifest names into ``<its folder>/evaluate``; publishes the metrics
    next to those measured during training. Returns the evaluate manifest path and its metrics."""
    cfg = resolve_config(config_path, overrides)
    out_dir = Path(train_manifest).resolve().parent / "evaluate"
    manifest = cached_evaluate_model(cfg, train_manifest, str(out_dir))
    ev = read_manifest(manifest, stage="evaluate")
    train = read_manifest(train_manifest, stage="train")
    create_table_artifact(
        key="evaluation",
        description="Validation metrics from the saved weights vs during training",
        table=[
            {
                "metric": name,
                "evaluate": round(v, 4),
                "during training": round(train["val_metrics"].get(name, float("nan")), 4),
            }
            for name, v in ev["metrics"].items()
        ]
        + [
            {
                "metric": "unigram baseline",
                "evaluate": round(ev["unigram_baseline_loss"], 4),
                "during training": round(train["unigram_baseline_loss"], 4),
            }
        ],
    )
    return {"evaluate_manifest": manifest, "metrics": ev["metrics"], "token_loss": ev["token_loss"]}
