"""``bakeoff`` flow: the course's "which transformer flavour is right for you", measured.

GPT (causal LM), BERT (masked LM + next-sentence prediction) and T5 (span corruption) of comparable
size train on the same shards with the same budget of input tokens, as child runs under one MLflow
parent run. The comparison (parameters, tokens, wall time, final losses per objective, throughput)
goes to the Prefect UI as a table and to the parent run as JSON, CSV and a plot. The objectives'
losses differ in kind, so each family's validation token loss is set against the unigram baseline
of the very tokens it predicts.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tokenmill.core import tracking
from tokenmill.core.config import Config
from tokenmill.core.manifest import read_manifest
from tokenmill.flows.data import data_flow
from tokenmill.flows.tasks import cached_train_model, mlflow_run_url, prefect_lineage
from tokenmill.flows.tokens import tokenize_flow
from tokenmill.resolve import resolve_and_dump

DEFAULT_FAMILIES = ["gpt", "bert", "t5"]


def bakeoff_sizes(
    cfg: Config, families: list[str], vocab_size: int, token_budget: int | None = None
) -> dict[str, dict[str, Any]]:
    """The sizing rules, in one place: per family, the ``model.*`` and ``train.max_steps`` overrides.

    Every family keeps the width, heads and context of ``cfg.model``. GPT and BERT keep its depth; an
    encoder-decoder gets the (equal) encoder and decoder depth whose parameter count is closest to the
    GPT's. Every family trains the same number of steps on the same global batch, so on the same
    number of input tokens: ``token_budget`` (rounded up to whole steps), default
    ``train.max_steps`` × global batch × context.
    """
    from tokenmill.training.distributed import batch_sizes
    from tokenmill.training.families import FAMILIES
    from tokenmill.training.models import architecture, count_parameters

    base = dataclasses.replace(cfg.model, family="gpt")
    reference = count_parameters(architecture(base, vocab_size=vocab_size))
    depth = architecture(base).n_layer
    _, _, global_batch = batch_sizes(cfg.train, cfg.train.nproc * cfg.train.nnodes)
    block = architecture(base).block_size
    steps = cfg.train.max_steps if token_budget is None else math.ceil(token_budget / (global_batch * block))
    sizes: dict[str, dict[str, Any]] = {}
    for family in families:
        if family not in FAMILIES:
            *others, last = FAMILIES
            raise ValueError(f"unknown family {family!r} in the bake-off: expected {', '.join(others)} or {last}")
        model = {"family": family}
        if FAMILIES[family].encoder_decoder:

            def params(k: int, family: str = family) -> int:
                return count_parameters(
                    architecture(
                        dataclasses.replace(base, family=family, n_layer=k, n_decoder_layer=k), vocab_size=vocab_size
                    )
                )

            k = min(range(1, 2 * depth + 1), key=lambda n: abs(params(n) - reference))
            model.update(n_layer=k, n_decoder_layer=k)
        arch = architecture(dataclasses.replace(base, **model), vocab_size=vocab_size)
        sizes[family] = {
            "model": model,
            "max_steps": steps,
            "parameters": count_parameters(arch),
            "input_tokens": steps * global_batch * block,
        }
    return sizes


def _family_config(cfg: Config, size: dict[str, Any]) -> Config:
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, **size["model"]),
        train=dataclasses.replace(cfg.train, max_steps=size["max_steps"]),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def comparison_row(
    family: str, size: dict[str, Any], train: dict[str, Any], wall_seconds: float, run_id: str
) -> dict[str, Any]:
    """One row of the comparison, from a family's train manifest."""
    model = size["model"]
    layers = f"{model['n_layer']}+{model['n_decoder_layer']}" if "n_decoder_layer" in model else "same as config"
    history = train["history"]
    return {
        "family": family,
        "objective": train["model"]["objective"],
        "layers": layers,
        "parameters": train["model"]["num_params"],
        "input_tokens": size["input_tokens"],
        "tokens_seen": train["tokens_seen"],
        "steps": train["steps"],
        "wall_s": round(wall_seconds, 1),
        # the training loop's own rate (median over log windows); wall time adds start-up and export
        "tokens_per_s": round(statistics.median(h["train/tokens_per_s"] for h in history), 1) if history else None,
        "final_train_loss": round(history[-1]["train/loss"], 4) if history else None,
        "val_losses": ", ".join(f"{k} {v:.4f}" for k, v in train["val_metrics"].items()),
        "token_loss": round(train["token_loss"], 4),
        "unigram_baseline": round(train["unigram_baseline_loss"], 4),
        "gain_over_baseline": round(train["unigram_baseline_loss"] - train["token_loss"], 4),
        "token_accuracy": round(train["token_accuracy"], 4),
        "unigram_accuracy": round(train["unigram_accuracy"], 4),  # predicting the most frequent token everywhere
        "beyond_frequencies": train["beyond_frequencies"],
        # next-sentence prediction (BERT): accuracy against always answering the commoner label; None elsewhere
        "nsp_accuracy": _rounded(train.get("nsp_accuracy")),
        "nsp_majority": _rounded(train.get("nsp_majority")),
        "nsp_beyond_chance": train.get("nsp_beyond_chance"),
        "mlflow_run_id": run_id,
    }


@flow(name="bakeoff", log_prints=True)
def bakeoff_flow(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    families: list[str] | None = None,
    token_budget: int | None = None,
) -> dict[str, Any]:
    """Train each of ``families`` (default gpt, bert, t5) on the run's shards with one token budget;
    returns the parent MLflow run id, the comparison rows and the plot's path."""
    logger = get_run_logger()
    families = families or list(DEFAULT_FAMILIES)
    cfg, resolved = resolve_and_dump(config_path, overrides)
    data_manifest = data_flow(resolved)
    tokens_manifest = tokenize_flow(data_manifest, resolved)
    vocab = read_manifest(tokens_manifest, stage="tokenize")["tokenizer"]["vocab_size"]
    sizes = bakeoff_sizes(cfg, families, vocab, token_budget)
    out = cfg.run_dir.resolve() / "bakeoff"
    out.mkdir(parents=True, exist_ok=True)

    with tracking.parent_run(
        cfg.tracking_uri,
        cfg.tracking.experiment,
        f"{cfg.run.name}-bakeoff",
        tags={
            "tokenmill.stage": "bakeoff",
            **prefect_lineage(),
            "tokenmill.bakeoff_families": ",".join(families),
            **tracking.lineage_tags(Path(tokens_manifest)),
        },
    ) as parent:
        mlf = tracking.MlflowLogger(cfg.tracking_uri, parent)
        mlf.log_params(
            {
                "bakeoff.families": ",".join(families),
                "bakeoff.input_tokens": sizes[families[0]]["input_tokens"],
                "bakeoff.max_steps": sizes[families[0]]["max_steps"],
                **{f"bakeoff.{f}.parameters": s["parameters"] for f, s in sizes.items()},
            }
        )
        rows, histories = [], {}
        for family in families:
            logger.info(
                "bake-off: training %s with %s (%.2fM parameters)",
                family,
                sizes[family]["model"],
                sizes[family]["parameters"] / 1e6,
            )
            result = cached_train_model(
                _family_config(cfg, sizes[family]),
                tokens_manifest,
                str(out / family),
                f"{cfg.run.name}-bakeoff-{family}",
                parent_run_id=parent,
                tags={"tokenmill.bakeoff_parent": parent},
            )
            train = read_manifest(result["train_manifest"], stage="train")
            rows.append(comparison_row(family, sizes[family], train, result["wall_seconds"], result["mlflow_run_id"]))
            histories[family] = train["history"]
        chart = _publish(cfg, parent, rows, histories, out)
    return {
        "parent_run_id": parent,
        "rows": rows,
        "chart": str(chart),
        "tracking_uri": cfg.tracking_uri,
        "tokens_manifest": tokens_manifest,
    }


def _publish(cfg: Config, parent: str, rows: list[dict], histories: dict[str, list], out: Path) -> Path:
    """The comparison as a Prefect table and markdown (with the plot), and as MLflow artifacts and metrics."""
    from tokenmill.core.plots import bakeoff_chart

    chart = bakeoff_chart(rows, histories, out / "comparison.png")
    (out / "comparison.json").write_text(json.dumps(rows, indent=2))
    with open(out / "comparison.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    mlf = tracking.MlflowLogger(cfg.tracking_uri, parent)
    for name in ("comparison.png", "comparison.json", "comparison.csv"):
        mlf.log_artifact(out / name, "bakeoff")
    mlf.log_metrics(
        {
            f"{r['family']}/{k}": r[k]
            for r in rows
            for k in (
                "token_loss",
                "unigram_baseline",
                "gain_over_baseline",
                "tokens_per_s",
                "wall_s",
                "parameters",
                "nsp_accuracy",
                "nsp_majority",
            )
            if r[k] is not None
        },
        step=0,
    )
    create_table_artifact(
        key="bakeoff-comparison", table=rows, description="GPT vs BERT vs T5 on the same shards and token budget"
    )
    png = base64.b64encode(chart.read_bytes()).decode()
    url = mlflow_run_url(cfg.tracking_uri, parent)
    create_markdown_artifact(
        key="bakeoff-chart",
        description="The bake-off as a plot",
        markdown=(f"![bake-off](data:image/png;base64,{png})\n\nParent MLflow run `{parent}`: {url}"),
    )
    return chart
