"""``pipeline`` flow: raw crawl → clean shards (Spark) → tokens → model (DeepSpeed) → evaluation, in MLflow.

Each stage is its own flow, run here as a subflow; they hand over manifest paths and the MLflow run
id, never folder conventions. Cached stages make a rerun skip whatever did not change.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from tokenmill.flows.data import data_flow
from tokenmill.flows.evaluate import evaluate_flow
from tokenmill.flows.tasks import publish_pipeline_summary
from tokenmill.flows.tokens import tokenize_flow
from tokenmill.flows.train import train_flow
from tokenmill.resolve import resolve_and_dump


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the configured corpus; returns the manifests, the MLflow run id and the losses."""
    # Resolved once: the stages read its dump (absolute paths, every step's options filled in).
    cfg, resolved = resolve_and_dump(config_path, overrides)
    run_dir = cfg.run_dir.resolve()

    stage_runs: dict[str, str] = {}

    def stage(name: str, subflow, *args):
        """Run a stage's flow as a subflow, noting its flow run; its failure fails the pipeline."""
        state = subflow(*args, return_state=True)
        stage_runs[name] = str(state.state_details.flow_run_id)
        return state.result()

    data_manifest = stage("data", data_flow, resolved)
    tokens_manifest = stage("tokenize", tokenize_flow, data_manifest, resolved)
    trained = stage("train", train_flow, tokens_manifest, resolved)
    evaluated = stage("evaluate", evaluate_flow, trained["train_manifest"], resolved)
    result = {
        "run_dir": str(run_dir),
        "data_manifest": data_manifest,
        "tokens_manifest": tokens_manifest,
        **trained,
        "evaluate_manifest": evaluated["evaluate_manifest"],
        "eval_metrics": evaluated["metrics"],
        "flow_run_id": str(flow_run.get_id()),
        "stage_flow_runs": stage_runs,
    }
    publish_pipeline_summary(cfg, result, stage_runs)
    return result
