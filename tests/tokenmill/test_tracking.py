"""tokenmill.core.tracking: the experiment a run opens in, and where its artifacts go."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.core.tracking import EXPERIMENT_KIND, MODEL_TRAINING, MlflowLogger, open_run, parent_run


def test_a_sqlite_store_keeps_artifacts_beside_it_and_opens_on_runs(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # MLflow's default would be ./mlruns here
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    run_id = open_run(uri, "exp", "r1")
    note = tmp_path / "note.txt"
    note.write_text("hello")
    MlflowLogger(uri, run_id).log_artifact(note, "notes")

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("exp")
    assert exp.tags[EXPERIMENT_KIND] == MODEL_TRAINING  # the UI shows runs, not the GenAI view
    assert Path(exp.artifact_location.removeprefix("file://")) == tmp_path / "store" / "mlartifacts"
    artifacts = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "store" / "mlartifacts")
    assert (artifacts / "notes" / "note.txt").read_text() == "hello"
    assert not (elsewhere / "mlruns").exists()


def test_an_existing_experiment_gets_its_kind_once(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("old")
    open_run(uri, "old", "r1")
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND] == MODEL_TRAINING
    client.set_experiment_tag(exp_id, EXPERIMENT_KIND, "genai_development")  # a person chose another kind
    open_run(uri, "old", "r2")
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND] == "genai_development"


def test_a_parent_run_ends_finished_or_failed_with_the_error_that_left_its_block(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    with parent_run(uri, "exp", "good", tags={"kind": "bakeoff"}) as good:
        assert client.get_run(good).info.status == "RUNNING"
    with pytest.raises(ValueError, match="no recipes"):
        with parent_run(uri, "exp", "bad") as bad:
            raise ValueError("no recipes")
    assert client.get_run(good).info.status == "FINISHED"
    assert client.get_run(good).data.tags["kind"] == "bakeoff"
    assert client.get_run(bad).info.status == "FAILED"
    assert client.get_run(bad).data.tags["error"] == "ValueError: no recipes"
