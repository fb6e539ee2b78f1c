"""``train`` flow: token shards of a tokenize manifest → the configured model family, trained with
DeepSpeed on ``train.nproc`` ranks and tracked in one MLflow run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tokenmill.flows.tasks import cached_train_model, publish_training
from tokenmill.resolve import resolve_config


@flow(name="train", log_prints=True)
def train_flow(
    tokens_manifest: str,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    out_dir: str | None = None,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Train on ``tokens_manifest`` into ``out_dir`` (default ``<run>/train``). Returns the train manifest
    path, the MLflow run id and the validation metrics."""
    cfg = resolve_config(config_path, overrides)
    result = cached_train_model(
        cfg, tokens_manifest, out_dir or str(cfg.run_dir.resolve() / "train"), run_name or cfg.run.name
    )
    train = publish_training(cfg, result)
    return {
        **result,
        "tracking_uri": cfg.tracking_uri,
        "family": train["model"]["family"],
        "val_loss": train["val_loss"],
        "val_metrics": train["val_metrics"],
        "token_loss": train["token_loss"],
        "unigram_baseline_loss": train["unigram_baseline_loss"],
    }
