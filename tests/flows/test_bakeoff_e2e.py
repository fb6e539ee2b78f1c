"""The bake-off on the session pipeline's shards: GPT, BERT and T5 of comparable size, one token budget,
child runs under one MLflow parent, a comparison table in Prefect and a plot in MLflow."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect_states import task_states_since

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # the session's real pipeline run, then three trainings


@pytest.fixture(scope="module")
def bakeoff(pipeline_run):
    from tokenmill.flows.bakeoff import bakeoff_flow

    since = datetime.now(UTC)
    # the same config and output folder as the session pipeline (conftest.py), fewer steps
    out = Path(pipeline_run["run_dir"]).parent
    result = bakeoff_flow(
        config_path=str(REPO_ROOT / "conf" / "tiny.yaml"),
        overrides=[
            f"run.output_dir={out}",
            f"data.input={REPO_ROOT / 'data/sample/crawl-00001.warc.gz'}",
            "train.max_steps=20",
        ],
    )
    return result, task_states_since(since)


def test_same_shards_same_budget_comparable_sizes(bakeoff, pipeline_run):
    result, states = bakeoff
    # the data and tokenize stages of the session pipeline are reused, not redone
    assert states["clean-corpus"] == ["Cached"] and states["tokenize-corpus"] == ["Cached"], states
    assert states["train-model"] == ["Completed"] * 3
    assert result["tokens_manifest"] == pipeline_run["tokens_manifest"]
    rows = {r["family"]: r for r in result["rows"]}
    assert list(rows) == ["gpt", "bert", "t5"]
    assert {r["objective"] for r in rows.values()} == {"causal_lm", "mlm_nsp", "span_corruption"}
    assert len({r["input_tokens"] for r in rows.values()}) == 1
    assert all(r["steps"] == 20 for r in rows.values())
    sizes = [r["parameters"] for r in rows.values()]
    assert max(sizes) / min(sizes) < 1.5
    for family, row in rows.items():
        train = read_manifest(Path(pipeline_run["run_dir"]) / "bakeoff" / family / "manifest.json", stage="train")
        assert train["model"]["family"] == family
        assert train["tokens_manifest"]["path"] == pipeline_run["tokens_manifest"]
        assert row["token_loss"] == pytest.approx(train["token_loss"], abs=1e-4)
        assert row["tokens_per_s"] > 0 and row["wall_s"] > 0
        if family == "bert":  # next-sentence prediction against always answering the majority label
            assert row["nsp_accuracy"] == pytest.approx(train["nsp_accuracy"], abs=1e-4)
            assert 0.5 <= row["nsp_majority"] == pytest.approx(train["nsp_majority"], abs=1e-4)
            assert row["nsp_beyond_chance"] is train["nsp_beyond_chance"]
        else:
            assert row["nsp_accuracy"] is row["nsp_majority"] is row["nsp_beyond_chance"] is None


def test_children_under_one_parent_with_the_comparison(bakeoff, tmp_path):
    from mlflow.tracking import MlflowClient

    result, _ = bakeoff
    client = MlflowClient(tracking_uri=result["tracking_uri"])
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["tokenmill.model_family"] for c in children) == ["bert", "gpt", "t5"]
    assert {c.info.run_id for c in children} == {r["mlflow_run_id"] for r in result["rows"]}
    assert all(c.info.status == "FINISHED" for c in children)
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "bakeoff")}
    assert names == {"bakeoff/comparison.png", "bakeoff/comparison.json", "bakeoff/comparison.csv"}
    logged = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "bakeoff/comparison.json", str(tmp_path))).read_text()
    )
    assert logged == result["rows"]
    assert parent.data.metrics["t5/token_loss"] == pytest.approx(
        next(r for r in result["rows"] if r["family"] == "t5")["token_loss"]
    )
    bert = next(r for r in result["rows"] if r["family"] == "bert")
    assert parent.data.metrics["bert/nsp_accuracy"] == pytest.approx(bert["nsp_accuracy"])
    assert "gpt/nsp_accuracy" not in parent.data.metrics
    assert Path(result["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prefect_table_artifact(bakeoff):
    from prefect.artifacts import Artifact

    result, _ = bakeoff
    table = json.loads(Artifact.get("bakeoff-comparison").data)
    assert table == result["rows"]
    assert Artifact.get("bakeoff-chart").data.startswith("![bake-off](data:image/png;base64,")
