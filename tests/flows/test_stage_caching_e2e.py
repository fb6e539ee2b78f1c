"""A rerun of ``pipeline`` skips the stages whose inputs, config and code did not change, and only those.

Real flows on one WARC file with a few training steps, in the session's Prefect test API.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect_states import task_states_since

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGES = ["clean-corpus", "tokenize-corpus", "train-model", "evaluate-model"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # four real pipeline runs (Spark, DeepSpeed, MLflow)


def _run(out: Path, *extra: str):
    from tokenmill.flows.pipeline import pipeline_flow

    since = datetime.now(UTC)
    result = pipeline_flow(
        config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
        overrides=[f"run.output_dir={out}", "train.max_steps=10", "train.log_every=5", *extra],
    )
    return result, task_states_since(since)


def test_rerun_skips_unchanged_stages_and_reruns_changed_ones(prefect_harness, tmp_path):
    from mlflow.tracking import MlflowClient

    first, states = _run(tmp_path)
    assert all(states[s] == ["Completed"] for s in STAGES), states
    shards = read_manifest(first["data_manifest"], stage="data")["outputs"]["kept"]
    mtime = Path(shards[0]["path"]).stat().st_mtime_ns

    again, states = _run(tmp_path)
    assert all(states[s] == ["Cached"] for s in STAGES), states
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    assert again["val_metrics"] == first["val_metrics"]
    assert Path(shards[0]["path"]).stat().st_mtime_ns == mtime  # the Spark job did not run again

    changed, states = _run(tmp_path, "train.lr=0.01")
    assert states["clean-corpus"] == ["Cached"] and states["tokenize-corpus"] == ["Cached"], states
    assert states["train-model"] == ["Completed"] and states["evaluate-model"] == ["Completed"], states
    assert changed["mlflow_run_id"] != first["mlflow_run_id"]
    assert changed["tokens_manifest"] == first["tokens_manifest"]
    client = MlflowClient(tracking_uri=changed["tracking_uri"])
    assert client.get_run(changed["mlflow_run_id"]).data.params["train.lr"] == "0.01"
    assert client.get_run(first["mlflow_run_id"]).info.status == "FINISHED"  # the earlier run is kept
    train = read_manifest(changed["train_manifest"], stage="train")
    assert train["resumed_at_step"] is None  # a checkpoint of another configuration is not resumed

    # deleting a stage's output forgets its cache entry: the stage runs again, the others stay cached
    import shutil

    shutil.rmtree(Path(first["run_dir"]) / "train" / "evaluate")
    _, states = _run(tmp_path, "train.lr=0.01")
    assert states["evaluate-model"] == ["Completed"] and states["train-model"] == ["Cached"], states
