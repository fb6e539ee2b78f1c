"""``pipeline`` flow: raw crawl → clean shards (Spark) → tokens → model (DeepSpeed) → evaluation, in MLflow.

Each stage is its own flow, run here as a subflow; they hand over manifest paths and the MLflow run
id, never folder conventions. Cached stages make a rerun skip whatever did not change.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tokenmill.flows.data import data_flow
from tokenmill.flows.evaluate import evaluate_flow
from tokenmill.flows.tasks import run_config
from tokenmill.flows.tokens import tokenize_flow
from tokenmill.flows.train import train_flow
from tokenmill.core.config import dump_config


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the configured corpus; returns the manifests, the MLflow run id and the losses."""
    cfg = run_config(config_path, overrides)
    run_dir = cfg.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")

    data_manifest = data_flow(config_path, overrides)
    tokens_manifest = tokenize_flow(data_manifest, config_path, overrides)
    trained = train_flow(tokens_manifest, config_path, overrides)
    evaluated = evaluate_flow(trained["train_manifest"], config_path, overrides)
    return {"run_dir": str(run_dir), "data_manifest": data_manifest, "tokens_manifest": tokens_manifest,
            **trained, "evaluate_manifest": evaluated["evaluate_manifest"], "eval_metrics": evaluated["metrics"]}
