"""The train stage, written once: ``tokenmill train`` and the flows' train task both call ``train_stage``.

It opens (or resumes) the MLflow run, launches ``tokenmill.training.train`` on ``train.nproc`` ranks
(``launch``), and ends the run FINISHED, FAILED, or KILLED when a signal stopped it (``launch.Stopped``: the
ranks wrote a checkpoint, and the same call resumes from it). A checkpoint written under another configuration
(another stage key: config, inputs, code, output folder) is not resumed: it is removed and training
starts over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tokenmill.core import tracking
from tokenmill.core.config import Config, dump_config
from tokenmill.core.fingerprint import file_fingerprint, manifest_fingerprint, stage_key
from tokenmill.core.manifest import funnel_rows, read_manifest

log = logging.getLogger("tokenmill.train")


def train_inputs(
    cfg: Config, tokens_manifest: str | Path, run_name: str | None = None, parent_run_id: str | None = None
) -> list[str]:
    """Fingerprints of what training reads besides the config: token shards, pairs, DeepSpeed JSON, init weights."""
    files = [p for p in (cfg.train.pairs, cfg.train.deepspeed_config) if p]
    init = [file_fingerprint(f) for f in sorted(Path(cfg.model.init_from).glob("*"))] if cfg.model.init_from else []
    return [
        manifest_fingerprint(tokens_manifest),
        *map(file_fingerprint, files),
        *init,
        str(parent_run_id),
        str(run_name),
    ]


def train_stage(
    cfg: Config,
    tokens_manifest: str | Path,
    out_dir: str | Path,
    run_name: str | None = None,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Train ``cfg``'s model on ``tokens_manifest`` into ``out_dir``; ``echo`` receives the ranks' output.

    Returns the train manifest path, the MLflow run id and the wall time. ``run_name`` defaults to
    ``run.name``; ``tags`` are added to a new MLflow run (``parent_run_id`` nests it).
    """
    from tokenmill.training import launch

    tokens_manifest = str(Path(tokens_manifest).resolve())
    read_manifest(tokens_manifest, stage="tokenize")
    run_name = run_name or cfg.run.name
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    key = stage_key("train", cfg, train_inputs(cfg, tokens_manifest, run_name, parent_run_id), out)
    config_file = out / "config.yaml"
    # Started on every node of a multi-node torchrun job, this runs once per node into the same shared folder:
    # under a lock, the first node opens the MLflow run and the others join it.
    with _locked(out / ".stage.lock"):
        marker = out / "stage.json"
        if (out / "checkpoints").exists() and (not marker.is_file() or marker.read_text().strip() != key):
            log.warning("train: %s/checkpoints were written under another configuration; starting over", out)
            shutil.rmtree(out / "checkpoints")
        marker.write_text(key + "\n")
        dump_config(cfg, config_file)
        run_id = _open_or_join_run(cfg, out, key, tokens_manifest, config_file, run_name, parent_run_id, tags)
    started = time.time()
    try:
        launch.launch(cfg, config_file, Path(tokens_manifest), out, run_id, echo)
        manifest = out / "manifest.json"
        tracking.MlflowLogger(cfg.tracking_uri, run_id).log_artifact(manifest, "train")
    except launch.Stopped as e:
        # Checkpointed at a step boundary: KILLED, not FAILED, and the same command resumes it.
        tracking.close_run(cfg.tracking_uri, run_id, stopped=str(e))
        raise
    except BaseException as e:
        tracking.close_run(cfg.tracking_uri, run_id, error=e)
        raise
    tracking.close_run(cfg.tracking_uri, run_id)
    return {"train_manifest": str(manifest), "mlflow_run_id": run_id, "wall_seconds": time.time() - started}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the block (shared storage must support locks, as NFS v4 and Lustre do)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_or_join_run(
    cfg: Config,
    out: Path,
    key: str,
    tokens_manifest: str,
    config_file: Path,
    run_name: str,
    parent_run_id: str | None,
    tags: dict[str, str] | None,
) -> str:
    """The MLflow run to train into: the checkpoint's (a resume), the one another node of this multi-node job opened
    moments ago (``<out>/mlflow_run.json``, same stage key, still RUNNING), else a new one with its inputs logged."""
    from tokenmill.training.models import family_of

    run_id = tracking.resumable_run(cfg.tracking_uri, out / "checkpoints") if cfg.train.resume else None
    if run_id:
        log.info("train: resuming from its checkpoint, into MLflow run %s", run_id)
        return run_id
    opened = out / "mlflow_run.json"
    if cfg.train.nnodes > 1 and cfg.train.launcher == "torchrun" and opened.is_file():
        record = json.loads(opened.read_text())
        if record.get("key") == key and tracking.run_status(cfg.tracking_uri, record["run_id"]) == "RUNNING":
            log.info("train: joining MLflow run %s, opened by another node", record["run_id"])
            return record["run_id"]
    run_tags = {
        "tokenmill.stage": "train",
        "tokenmill.model_family": family_of(cfg.model),
        "tokenmill.model_flavor": cfg.model.flavor or "custom",
        **tracking.lineage_tags(Path(tokens_manifest)),
        **(tags or {}),
    }
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    run_id = tracking.open_run(cfg.tracking_uri, cfg.tracking.experiment, run_name, tags=run_tags)
    log_run_inputs(cfg, run_id, config_file, tokens_manifest)
    opened.write_text(json.dumps({"key": key, "run_id": run_id}) + "\n")
    return run_id


def log_run_inputs(cfg: Config, run_id: str, config_file: Path, tokens_manifest: str) -> None:
    """What is known before training: the config as params, the manifests, and the corpus counts as ``corpus.*``
    params with the data funnel as a table (single values are not charts). The tokenizer travels with the model."""
    mlf = tracking.MlflowLogger(cfg.tracking_uri, run_id)
    mlf.log_artifact(config_file, "config")
    mlf.log_artifact(tokens_manifest, "tokens")
    tokens = read_manifest(tokens_manifest, stage="tokenize")
    corpus = {
        "corpus.train_documents": tokens["splits"]["train"]["documents"],
        "corpus.train_tokens": tokens["splits"]["train"]["tokens"],
        "corpus.validation_documents": tokens["splits"]["validation"]["documents"],
        "corpus.validation_tokens": tokens["splits"]["validation"]["tokens"],
    }
    data_path = (tokens.get("data_manifest") or {}).get("path")
    if data_path and Path(data_path).is_file():
        mlf.log_artifact(data_path, "data")
        if (Path(data_path).parent / "funnel.png").exists():
            mlf.log_artifact(Path(data_path).parent / "funnel.png", "data")
        data = read_manifest(data_path, stage="data")
        counts = data["counts"]
        corpus.update(
            {
                "corpus.documents_read": counts["read"],
                "corpus.documents_kept": counts["kept"],
                "corpus.documents_dropped": sum(counts["dropped"].values()),
                "corpus.documents_quarantined": sum(counts["quarantined"].values()),
            }
        )
        rows = funnel_rows(data.get("funnel", []))
        if rows:
            mlf.log_table({c: [row[c] for row in rows] for c in rows[0]}, "data/funnel_table.json")
    mlf.log_params({**cfg.flat(), **corpus})
