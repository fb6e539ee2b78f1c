"""``pretrain-pipeline``: raw crawl → clean shards (Spark) → tokens → GPT (DeepSpeed) → MLflow.

The flow orchestrates; the work runs in the Spark job and in the DeepSpeed processes.
Stages hand off through manifest files, and the MLflow run id travels with them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tokenmill import tracking
from tokenmill.config import Config, dump_config, load_config, resolve_paths
from tokenmill.env import REPO_ROOT
from tokenmill.manifest import read_manifest

# The stages log through "tokenmill.*" loggers; Prefect forwards them (PREFECT_LOGGING_EXTRA_LOGGERS).
logging.getLogger("tokenmill").setLevel(logging.INFO)


@task(name="clean-corpus", retries=1, retry_delay_seconds=5)
def clean_corpus(cfg: Config, out_dir: Path) -> Path:
    """Spark job: read → configured steps → Parquet shards. Publishes the funnel; returns the manifest path."""
    import base64

    from spark_jobs.clean import run_clean_job
    from tokenmill.plots import funnel_chart

    manifest = run_clean_job(cfg.data, out_dir)
    create_table_artifact(key="data-funnel", table=manifest["funnel"],
                          description="Documents into and out of each stage of the data job")
    chart = funnel_chart(manifest["funnel"], out_dir / "funnel.png")
    png = base64.b64encode(chart.read_bytes()).decode()
    create_markdown_artifact(key="data-funnel-chart", description="The data funnel as a chart",
                             markdown=f"![data funnel](data:image/png;base64,{png})")
    return out_dir / "manifest.json"


@task(name="tokenize-corpus", retries=1, retry_delay_seconds=5)
def tokenize_corpus(cfg: Config, data_manifest: Path, out_dir: Path) -> Path:
    """Byte-level BPE on the kept shards, then train/validation token shards. Returns the tokens manifest path."""
    from training.tokenizer import run_tokenize

    run_tokenize(data_manifest, out_dir, cfg.tokenizer)
    return out_dir / "manifest.json"


@task(name="open-tracking-run")
def open_tracking_run(cfg: Config, config_file: Path, data_manifest: Path, tokens_manifest: Path) -> str:
    """Create the MLflow run and log what is known before training: config, params, manifests, tokenizer."""
    from prefect.runtime import flow_run

    from training.models import family_of

    resumed = tracking.resumable_run(cfg.tracking_uri, cfg.run_dir.resolve() / "train" / "checkpoints")
    if resumed and cfg.train.resume:
        get_run_logger().info("training will resume from its checkpoint, into MLflow run %s", resumed)
        return resumed
    run_id = tracking.open_run(cfg.tracking_uri, cfg.tracking.experiment, cfg.run.name,
                               tags={"tokenmill.stage": "pipeline", "tokenmill.model_family": family_of(cfg.model),
                                     "tokenmill.model_flavor": cfg.model.flavor or "custom",
                                     "tokenmill.prefect_flow_run_id": str(flow_run.id),
                                     **tracking.lineage_tags(tokens_manifest)})
    mlf = tracking.MlflowLogger(cfg.tracking_uri, run_id)
    mlf.log_params(cfg.flat())
    mlf.log_artifact(config_file, "config")
    mlf.log_artifact(data_manifest, "data")
    if (Path(data_manifest).parent / "funnel.png").exists():
        mlf.log_artifact(Path(data_manifest).parent / "funnel.png", "data")
    mlf.log_artifact(tokens_manifest, "tokens")
    tokens = read_manifest(tokens_manifest, stage="tokenize")
    mlf.log_artifact(tokens["tokenizer"]["path"], "tokenizer")
    data = read_manifest(data_manifest, stage="data")
    counts = data["counts"]
    mlf.log_metrics({"data/read": counts["read"], "data/kept": counts["kept"],
                     "data/dropped": sum(counts["dropped"].values()),
                     "data/quarantined": sum(counts["quarantined"].values()),
                     **{f"data/after_{row['stage']}": row["out"] for row in data.get("funnel", [])},
                     **{f"data/stats/{k}": v for k, v in data.get("stats", {}).items()},
                     "tokens/train": tokens["splits"]["train"]["tokens"],
                     "tokens/validation": tokens["splits"]["validation"]["tokens"]}, step=0)
    return run_id


@task(name="train-model", retries=0, timeout_seconds=6 * 3600)
def train_model(cfg: Config, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str) -> Path:
    """Launch ``training.train`` on ``train.nproc`` processes with torchrun; stream its log. Returns its manifest."""
    from training import launch

    logger = get_run_logger()
    cmd = launch.command(cfg.train, config_file, tokens_manifest, out_dir, run_id, cfg.run.name)
    logger.info("launching: %s", " ".join(cmd))
    launch.run(cmd, logger.info)
    return out_dir / "manifest.json"


@task(name="close-tracking-run")
def close_tracking_run(cfg: Config, run_id: str, train_manifest: Path) -> dict[str, Any]:
    """Attach the training manifest, publish the summary to the Prefect UI and end the MLflow run FINISHED."""
    result = read_manifest(train_manifest, stage="train")
    mlf = tracking.MlflowLogger(cfg.tracking_uri, run_id)
    mlf.log_artifact(train_manifest, "train")
    tracking.close_run(cfg.tracking_uri, run_id)
    create_table_artifact(key="final-metrics", description="Validation metrics of the trained model", table=[
        {"metric": f"validation {name}", "value": round(value, 4)} for name, value in result["val_metrics"].items()
    ] + [
        {"metric": "token loss vs unigram baseline",
         "value": f"{result['token_loss']:.4f} vs {result['unigram_baseline_loss']:.4f}"},
        {"metric": "model", "value": f"{result['model']['family']} ({result['model']['objective']})"},
        {"metric": "parameters", "value": result["model"]["num_params"]},
        {"metric": "tokens seen", "value": result["tokens_seen"]},
    ])
    create_markdown_artifact(key="mlflow-run", markdown=(
        f"**MLflow run** `{run_id}` in experiment `{cfg.tracking.experiment}` at `{cfg.tracking_uri}`\n\n"
        f"Sample: {result['sample']!r}"))
    return result


@flow(name="pretrain-pipeline", log_prints=True)
def pretrain_pipeline(config_path: str | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage on the configured corpus; returns paths, the MLflow run id and the final losses."""
    cfg = resolve_paths(load_config(config_path, overrides), REPO_ROOT)
    run_dir = cfg.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.yaml"
    dump_config(cfg, config_file)

    data_manifest = clean_corpus(cfg, run_dir / "data")
    tokens_manifest = tokenize_corpus(cfg, data_manifest, run_dir / "tokens")
    run_id = open_tracking_run(cfg, config_file, data_manifest, tokens_manifest)
    try:
        train_manifest = train_model(cfg, config_file, tokens_manifest, run_dir / "train", run_id)
        result = close_tracking_run(cfg, run_id, train_manifest)
    except BaseException as e:
        tracking.close_run(cfg.tracking_uri, run_id, error=e)
        raise
    return {
        "run_dir": str(run_dir),
        "mlflow_run_id": run_id,
        "tracking_uri": cfg.tracking_uri,
        "data_manifest": str(data_manifest),
        "tokens_manifest": str(tokens_manifest),
        "train_manifest": str(train_manifest),
        "family": result["model"]["family"],
        "val_loss": result["val_loss"],
        "val_metrics": result["val_metrics"],
        "token_loss": result["token_loss"],
        "unigram_baseline_loss": result["unigram_baseline_loss"],
    }
