"""``pipeline`` flow: raw crawl → clean shards (Spark) → tokens → model (DeepSpeed) → evaluation, in MLflow.

Each stage is its own flow, run here as a subflow; they hand over manifest paths and the MLflow run
id, never folder conventions. Cached stages make a rerun skip whatever did not change.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tokenmill.flows.data import data_flow
from tokenmill.flows.evaluate import evaluate_flow
from tokenmill.flows.tokens import tokenize_flow
from tokenmill.flows.train import train_flow
from tokenmill.resolve import resolve_and_dump


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the configured corpus; returns the manifests, the MLflow run id and the losses."""
    # Resolved once: the stages read its dump (absolute paths, every step's options filled in).
    cfg, resolved = resolve_and_dump(config_path, overrides)
    run_dir = cfg.run_dir.resolve()

    data_manifest = data_flow(resolved)
    tokens_manifest = tokenize_flow(data_manifest, resolved)
    trained = train_flow(tokens_manifest, resolved)
    evaluated = evaluate_flow(trained["train_manifest"], resolved)
    return {
        "run_dir": str(run_dir),
        "data_manifest": data_manifest,
        "tokens_manifest": tokens_manifest,
        **trained,
        "evaluate_manifest": evaluated["evaluate_manifest"],
        "eval_metrics": evaluated["metrics"],
    }
