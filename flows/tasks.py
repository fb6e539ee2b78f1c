"""The thin tasks the flows call: each starts one stage's real work and returns its manifest path.

Heavy work runs elsewhere: the data job in Spark, training in the DeepSpeed ranks torchrun starts,
evaluation in its own process. Every stage task is cached by ``tokenmill.flows.caching`` (inputs, config,
code), so a rerun skips what did not change. Prefect UI artifacts are published by the flows, not
here, so a cached stage still shows them.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tokenmill.core import tracking
from tokenmill.core.config import Config, dump_config
from tokenmill.core.env import REPO_ROOT
from tokenmill.core.fingerprint import file_fingerprint, manifest_fingerprint
from tokenmill.core.manifest import funnel_rows, read_manifest
from tokenmill.flows.caching import stage_cache

# The stages log through "tokenmill.*" loggers; Prefect forwards them (PREFECT_LOGGING_EXTRA_LOGGERS).
logging.getLogger("tokenmill").setLevel(logging.INFO)


def _not_a_config_error(task, task_run, state) -> bool:
    """Retry transient failures (a lost worker, a killed rank: training resumes from its checkpoint),
    not errors that would fail the same way again, nor a stop someone asked for (a cancelled flow run)."""
    from tokenmill.training.launch import Stopped

    try:
        state.result()
    except (ValueError, TypeError, FileNotFoundError, KeyError, Stopped):
        return False
    except Exception as e:
        return not any(f"{name}:" in str(e) for name in ("ValueError", "TypeError", "FileNotFoundError", "KeyError"))
    return True


def stage_task(name: str, hours: int, retry_delay: int):
    """A stage's task: one retry after ``retry_delay`` seconds for transient failures (not for config errors),
    a ``hours`` timeout, and a persisted result (what the stage cache returns on a rerun)."""
    return task(
        name=name,
        retries=1,
        retry_delay_seconds=retry_delay,
        retry_condition_fn=_not_a_config_error,
        timeout_seconds=hours * 3600,
        persist_result=True,
    )


# --------------------------------------------------------------------------- data


def _data_inputs(args: dict[str, Any]) -> list[str]:
    from tokenmill.spark_jobs.readers import expand_inputs

    cfg = args["cfg"]
    # Size and mtime as the listing gives them (local files and object stores alike): no input is read.
    return [item.fingerprint() for item in expand_inputs(cfg.data.input, cfg.data.format)]


@stage_task("clean-corpus", hours=12, retry_delay=10)
def clean_corpus(cfg: Config, out_dir: str) -> str:
    """Spark job: read → configured steps → Parquet shards. Returns the data manifest path."""
    from tokenmill.spark_jobs.clean import run_clean_job

    run_clean_job(cfg.data, out_dir)
    return str(Path(out_dir).resolve() / "manifest.json")


def cached_clean_corpus(cfg: Config, out_dir: str) -> str:
    return clean_corpus.with_options(cache_policy=stage_cache("data", out_dir, _data_inputs))(cfg, out_dir)


def publish_data(manifest_path: str) -> None:
    """The data funnel as a table and a chart in the Prefect UI."""
    from tokenmill.core.plots import funnel_chart

    manifest = read_manifest(manifest_path, stage="data")
    create_table_artifact(
        key="data-funnel",
        table=funnel_rows(manifest["funnel"]),
        description="Documents into and out of each stage of the data job",
    )
    chart = funnel_chart(manifest["funnel"], Path(manifest_path).parent / "funnel.png")
    png = base64.b64encode(chart.read_bytes()).decode()
    create_markdown_artifact(
        key="data-funnel-chart",
        description="The data funnel as a chart",
        markdown=f"![data funnel](data:image/png;base64,{png})",
    )


# --------------------------------------------------------------------------- tokenize


def _tokenize_inputs(args: dict[str, Any]) -> list[str]:
    pretrained = args["cfg"].tokenizer.from_pretrained
    return [
        manifest_fingerprint(args["data_manifest"]),
        *([file_fingerprint(Path(pretrained) / "tokenizer.json")] if pretrained else []),
    ]


@stage_task("tokenize-corpus", hours=6, retry_delay=5)
def tokenize_corpus(cfg: Config, data_manifest: str, out_dir: str) -> str:
    """Spark job: byte-level BPE on a sample of the kept shards, then train/validation token shards in the Megatron
    indexed format. Returns the tokens manifest path."""
    from tokenmill.spark_jobs.tokenize import run_tokenize_job

    run_tokenize_job(data_manifest, out_dir, cfg)
    return str(Path(out_dir).resolve() / "manifest.json")


def cached_tokenize_corpus(cfg: Config, data_manifest: str, out_dir: str) -> str:
    return tokenize_corpus.with_options(cache_policy=stage_cache("tokenize", out_dir, _tokenize_inputs))(
        cfg, data_manifest, out_dir
    )


def publish_tokens(manifest_path: str) -> None:
    """The tokenizer summary table."""
    m = read_manifest(manifest_path, stage="tokenize")
    tok, splits = m["tokenizer"], m["splits"]
    named = [k for k in tok["special_tokens"] if not k.startswith("sentinel_")]
    sentinels = len(tok["special_tokens"]) - len(named)
    sample = tok.get("sample") or {}
    trained_on = (
        f"{sample['documents']:,} documents, {sample['bytes']:,} bytes (fraction {sample['fraction']:.4g})"
        if sample.get("documents")
        else "not trained here"
    )
    rows = [
        {"item": "tokenizer", "value": f"{tok['kind']}, {tok['vocab_size']:,} tokens"},
        {"item": "trained on", "value": trained_on},
        {"item": "special tokens", "value": ", ".join(named) + (f", {sentinels} sentinels" if sentinels else "")},
    ]
    if "format" in m:
        rows.append({"item": "format", "value": f"{m['format']['name']}, {m['format']['dtype']} token ids"})
    for name, split in splits.items():
        shards = f", {len(split['shards']):,} shard(s)" if "shards" in split else ""
        rows.append(
            {
                "item": f"{name} split",
                "value": f"{split['documents']:,} documents, {split['tokens']:,} tokens "
                f"({split['tokens'] / max(split['documents'], 1):,.0f}/doc){shards}",
            }
        )
    rows.append({"item": "manifest", "value": manifest_path})
    create_table_artifact(key="tokenizer-summary", table=rows, description="The tokenizer and the token shards")


# --------------------------------------------------------------------------- train


def _train_inputs(args: dict[str, Any]) -> list[str]:
    from tokenmill.training.stage import train_inputs

    return train_inputs(args["cfg"], args["tokens_manifest"], args.get("run_name"), args.get("parent_run_id"))


@stage_task("train-model", hours=48, retry_delay=10)
def train_model(
    cfg: Config,
    tokens_manifest: str,
    out_dir: str,
    run_name: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``tokenmill.training.stage.train_stage``, with the Prefect lineage in the MLflow run's tags. A retry
    resumes from the last checkpoint into the same MLflow run."""
    from tokenmill.training.stage import train_stage

    return train_stage(
        cfg,
        tokens_manifest,
        out_dir,
        run_name,
        parent_run_id=parent_run_id,
        tags={**prefect_lineage(), **(tags or {})},
        echo=get_run_logger().info,
    )


def cached_train_model(
    cfg: Config,
    tokens_manifest: str,
    out_dir: str,
    run_name: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    return train_model.with_options(cache_policy=stage_cache("train", out_dir, _train_inputs))(
        cfg, tokens_manifest, out_dir, run_name, parent_run_id, tags
    )


def prefect_lineage() -> dict[str, str]:
    """MLflow tags naming the Prefect flow run a person started (the root of any subflows), the stage's own
    flow run, and the deployment that started it, if any."""
    from prefect.runtime import deployment, flow_run

    tags = {
        "tokenmill.prefect_flow_run_id": str(flow_run.root_flow_run_id or flow_run.id or ""),
        "tokenmill.prefect_stage_flow_run_id": str(flow_run.id or ""),
        "tokenmill.prefect_stage_flow_name": str(flow_run.flow_name or ""),
    }
    if deployment.id:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            dep = client.read_deployment(deployment.id)
            tags["tokenmill.prefect_deployment"] = f"{client.read_flow(dep.flow_id).name}/{dep.name}"
    if flow_run.ui_url:  # the page of the run a person started, not of the stage's subflow
        tags["tokenmill.prefect_flow_run_url"] = str(flow_run.ui_url).replace(
            str(flow_run.id), tags["tokenmill.prefect_flow_run_id"]
        )
    return tags


def mlflow_run_url(tracking_uri: str, run_id: str) -> str:
    """Where a person opens the run: its page on a tracking server, else the command that starts a UI and the page."""
    url = tracking.run_url(tracking_uri, run_id)
    command = tracking.ui_command(tracking_uri)
    return f"{command}, then open {url}" if command else url


def publish_training(cfg: Config, result: dict[str, Any]) -> dict[str, Any]:
    """The MLflow run link and the final-metrics table. Returns the train manifest."""
    train = read_manifest(result["train_manifest"], stage="train")
    run_id = result["mlflow_run_id"]
    url = mlflow_run_url(cfg.tracking_uri, run_id)
    link = f"[{url}]({url})" if url.startswith("http") else f"`{url}`"
    create_markdown_artifact(
        key="mlflow-run",
        description="The MLflow run of this training",
        markdown=(
            f"**MLflow run** `{run_id}` in experiment `{cfg.tracking.experiment}`: {link}\n\n"
            f"Sample: {train['sample']!r}"
        ),
    )
    nsp = []  # BERT's next-sentence prediction, when the objective has it
    if "nsp_accuracy" in train:
        nsp.append(
            {
                "metric": "next-sentence accuracy vs the majority label's",
                "value": f"{train['nsp_accuracy']:.4f} vs {train['nsp_majority']:.4f}",
            }
        )
    create_table_artifact(
        key="final-metrics",
        description="Validation metrics of the trained model",
        table=[
            {"metric": f"validation {name}", "value": round(value, 4)} for name, value in train["val_metrics"].items()
        ]
        + [
            {
                "metric": "token loss vs unigram baseline",
                "value": f"{train['token_loss']:.4f} vs {train['unigram_baseline_loss']:.4f}",
            },
            {
                "metric": "token accuracy vs the most frequent token's",
                "value": f"{train['token_accuracy']:.4f} vs {train['unigram_accuracy']:.4f}",
            },
            *nsp,
            {"metric": "model", "value": f"{train['model']['family']} ({train['model']['objective']})"},
            {"metric": "parameters", "value": train["model"]["num_params"]},
            {"metric": "tokens seen", "value": train["tokens_seen"]},
            {"metric": "MLflow run", "value": url},
        ],
    )
    return train


# --------------------------------------------------------------------------- evaluate


def _evaluate_inputs(args: dict[str, Any]) -> list[str]:
    return [manifest_fingerprint(args["train_manifest"])]


@stage_task("evaluate-model", hours=6, retry_delay=5)
def evaluate_model(cfg: Config, train_manifest: str, out_dir: str) -> str:
    """Score the saved model folder on the validation split in its own process; log ``eval/*`` into the
    training's MLflow run. Returns the evaluate manifest path."""
    train = read_manifest(train_manifest, stage="train")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    dump_config(cfg, config_file)
    cmd = [
        sys.executable,
        "-m",
        "tokenmill.training.evaluate",
        "--model",
        train["model"]["folder"],
        "--run-config",
        str(config_file),
        "--tokens-manifest",
        train["tokens_manifest"]["path"],
        "--out",
        str(out / "manifest.json"),
    ]
    if train.get("mlflow_run_id"):
        cmd += ["--mlflow-run-id", train["mlflow_run_id"]]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluation exited with code {proc.returncode}:\n{proc.stderr[-3000:]}")
    get_run_logger().info(proc.stdout.strip())
    return str(out / "manifest.json")


def cached_evaluate_model(cfg: Config, train_manifest: str, out_dir: str) -> str:
    return evaluate_model.with_options(cache_policy=stage_cache("evaluate", out_dir, _evaluate_inputs))(
        cfg, train_manifest, out_dir
    )


# --------------------------------------------------------------------------- the whole pipeline


def publish_pipeline_summary(cfg: Config, result: dict[str, Any], stage_runs: dict[str, str]) -> str:
    """The root run's own artifact: the funnel in one line, the tokens, the final metrics, and links to the MLflow
    run and to each stage's flow run. ``stage_runs`` maps a stage to its flow run id. Returns the markdown."""
    from prefect.settings import PREFECT_UI_URL

    data = read_manifest(result["data_manifest"], stage="data")["counts"]
    tokens = read_manifest(result["tokens_manifest"], stage="tokenize")["splits"]
    ui = PREFECT_UI_URL.value()

    def metrics(values: dict[str, float]) -> str:
        return ", ".join(f"{name} {value:.4f}" for name, value in values.items())

    def run_link(flow_run_id: str) -> str:
        return f"[{flow_run_id}]({ui.rstrip('/')}/runs/flow-run/{flow_run_id})" if ui else f"`{flow_run_id}`"

    mlflow_url = mlflow_run_url(cfg.tracking_uri, result["mlflow_run_id"])
    rows = [
        (
            "documents",
            f"{data['read']:,} read: {data['kept']:,} kept, {sum(data['dropped'].values()):,} dropped, "
            f"{sum(data['quarantined'].values()):,} quarantined",
        ),
        ("tokens", f"{tokens['train']['tokens']:,} train, {tokens['validation']['tokens']:,} validation"),
        ("model", result["family"]),
        ("validation", metrics(result["val_metrics"])),
        ("token loss", f"{result['token_loss']:.4f} vs {result['unigram_baseline_loss']:.4f} for the unigram baseline"),
        ("evaluate (saved weights)", metrics(result["eval_metrics"])),
        (
            "MLflow run",
            f"[{result['mlflow_run_id']}]({mlflow_url})"
            if mlflow_url.startswith("http")
            else f"`{result['mlflow_run_id']}`: `{mlflow_url}`",
        ),
        *((f"{stage} flow run", run_link(flow_run_id)) for stage, flow_run_id in stage_runs.items()),
        ("run folder", f"`{result['run_dir']}`"),
    ]
    markdown = "| | |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows)
    create_markdown_artifact(key="pipeline-summary", description="The pipeline run in one table", markdown=markdown)
    return markdown
