"""Experiment tracking behind a small interface: MLflow on rank 0, nothing elsewhere.

The flow opens the MLflow run and closes it FINISHED or FAILED; the training processes
log into that run by id, so one run holds the data manifest, the metrics and the weights.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class MetricsLogger:
    """What training needs from a tracker. The base class drops everything (ranks other than 0)."""

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        """Log every file under ``folder`` (an MLflow model's folder, say) under ``artifact_path``."""

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        """A table (column name → values, in order) as an MLflow table artifact (``*.json``)."""

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def register_model(self, name: str, artifact_path: str) -> str | None:
        """Register the run's ``artifact_path`` as a new version of model ``name``; the version, if any."""
        return None

    def last_step(self, key: str) -> int | None:
        """The highest step ``key`` was logged at in the run, if any."""
        return None

    def start_system_metrics(self, node_id: str | None = None) -> None: ...

    def stop_system_metrics(self) -> None: ...


class MlflowLogger(MetricsLogger):
    """Logs into an existing MLflow run, by id, through ``MlflowClient`` (imported lazily)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_table(self, columns: dict[str, list], artifact_file: str) -> None:
        import pandas as pd

        self.client.log_table(self.run_id, pd.DataFrame(columns), artifact_file)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def register_model(self, name: str, artifact_path: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Registered by tokenmill training runs")
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{artifact_path}"
        version = self.client.create_model_version(
            name, source, run_id=self.run_id, tags={"tokenmill.artifact": artifact_path}
        )
        return version.version

    def last_step(self, key: str) -> int | None:
        steps = [m.step for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps) if steps else None

    def start_system_metrics(self, node_id: str | None = None) -> None:
        """CPU, memory, disk, network (and GPU, when present) of this machine sampled into the run every 10 s,
        as ``system/<node_id>/...`` when ``node_id`` is given; a resumed run continues the sample steps."""
        import mlflow
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        mlflow.set_tracking_uri(self.client.tracking_uri)
        self._monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=10, samples_before_logging=1, resume_logging=True, node_id=node_id
        )
        self._monitor.start()

    def stop_system_metrics(self) -> None:
        monitor = getattr(self, "_monitor", None)
        if monitor is None:
            return
        monitor.finish()
        # MLflow's monitor drops the sample it was collecting when stopped, so a run shorter than one
        # interval would have none: record the final state once more.
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()
        self._monitor = None


def open_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> str:
    """Create a RUNNING MLflow run and return its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(experiment, artifact_location=_artifact_location(tracking_uri))
    else:
        exp_id = exp.experiment_id
    if (exp.tags.get(EXPERIMENT_KIND) if exp else None) is None:
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND, MODEL_TRAINING)
    return client.create_run(exp_id, run_name=run_name, tags=tags or {}).info.run_id


@contextmanager
def parent_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """A RUNNING MLflow run for the block (its id), ended FINISHED after it, or FAILED with the error that left it
    (re-raised): the parent of a bake-off's or an ablation's child runs."""
    run_id = open_run(tracking_uri, experiment, run_name, tags)
    try:
        yield run_id
    except BaseException as e:
        close_run(tracking_uri, run_id, error=e)
        raise
    close_run(tracking_uri, run_id)


# MLflow 3 reads an experiment's kind where its UI has no view switch; with the switch (3.17) the URL decides
# (``TRAINING_VIEW``).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite store: ``<folder of mlflow.db>/mlartifacts`` (MLflow's default is ``./mlruns`` of whatever
    folder the run starts in). A server decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


#: Where ``mlflow ui`` serves a local store (its default port).
LOCAL_UI = "http://127.0.0.1:5000"
#: MLflow 3's UI opens in its GenAI view (traces, no runs) unless a page's URL asks for the model-training one;
#: the choice is then remembered by the browser.
TRAINING_VIEW = "?workflowType=machine_learning"


def run_url(tracking_uri: str, run_id: str) -> str:
    """The page of run ``run_id``, in the model-training view: on the tracking server, or on ``mlflow ui``
    (:func:`ui_command`) for a local store."""
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    base = tracking_uri.rstrip("/") if is_server(tracking_uri) else LOCAL_UI
    return f"{base}/#/experiments/{experiment}/runs/{run_id}{TRAINING_VIEW}"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves a local store's UI at :data:`LOCAL_UI`; ``None`` for a tracking server."""
    if is_server(tracking_uri):
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def resumable_run(tracking_uri: str, checkpoints: str | Path) -> str | None:
    """The MLflow run a checkpointed training run logged into, set RUNNING again, or ``None``.

    A resumed run continues the same MLflow run (``<checkpoints>/run.json`` names it), without the tags of how it
    last ended early (``STOP_TAGS``).
    """
    import json

    marker = Path(checkpoints) / "run.json"
    if not marker.is_file():
        return None
    run_id = json.loads(marker.read_text()).get("mlflow_run_id")
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None  # a different tracking store: start a new run
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "tokenmill.resumed", "true")
    for tag in STOP_TAGS:
        if tag in run.data.tags:
            client.delete_tag(run_id, tag)
    return run_id


def run_status(tracking_uri: str, run_id: str) -> str | None:
    """The run's status (RUNNING, FINISHED, FAILED, KILLED), or ``None`` when this store has no such run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.status
    except MlflowException:
        return None


def lineage_tags(tokens_manifest: Path) -> dict[str, str]:
    """Tags linking a training run to the data that made its shards: manifest paths and hashes, and the
    MLflow run of the data stage when the data manifest names one."""
    from tokenmill.core.manifest import read_manifest, sha256_file

    tokens_manifest = Path(tokens_manifest)

    tokens = read_manifest(tokens_manifest, stage="tokenize")
    tags = {"tokenmill.tokens_manifest": str(tokens_manifest), "tokenmill.tokens_sha256": sha256_file(tokens_manifest)}
    data = tokens.get("data_manifest") or {}
    if data.get("path"):
        tags.update({"tokenmill.data_manifest": data["path"], "tokenmill.data_sha256": data.get("sha256", "")})
        if Path(data["path"]).is_file():
            run = read_manifest(data["path"], stage="data").get("mlflow_run_id")
            if run:
                tags["tokenmill.data_mlflow_run_id"] = run
    return tags


STOP_TAGS = ("error", "tokenmill.stopped")  # how a run last ended early; a resume clears them


def close_run(tracking_uri: str, run_id: str, error: BaseException | None = None, stopped: str | None = None) -> None:
    """End the run FINISHED; KILLED when it was ``stopped`` (a signal: it can be resumed), with the reason as
    the ``tokenmill.stopped`` tag; or FAILED with the error recorded as the ``error`` tag."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if stopped is not None:
        client.set_tag(run_id, "tokenmill.stopped", stopped)
        client.set_terminated(run_id, status="KILLED")
        return
    if error is not None:
        client.set_tag(run_id, "error", f"{type(error).__name__}: {error}"[:5000])
    client.set_terminated(run_id, status="FAILED" if error is not None else "FINISHED")
