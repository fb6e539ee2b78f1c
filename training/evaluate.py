"""Evaluate a trained model folder on the validation split, from its saved weights, in one process.

    python -m tokenmill.training.evaluate --model <model folder> --run-config <config.yaml>
        --tokens-manifest <tokenize manifest.json> --out <evaluate manifest.json> [--mlflow-run-id <id>]
    python -m tokenmill.training.evaluate --train-manifest <train manifest.json> --run-config <config.yaml>
        --heldout-manifest <heldout manifest.json> --out <scores.json>

Scores the same validation examples training scored (same objective, same seed), against the same
unigram baseline, so a model folder that round-trips its weights reproduces the training-time
validation metrics. Writes an ``evaluate`` manifest and, given a run id, logs ``eval/*`` metrics
into that MLflow run. With ``--heldout-manifest`` (the data ablation) it scores the model of a train manifest on
every held-out set instead and writes ``score_heldout``'s result as JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tokenmill.core.env import prepare_environment

#: examples per forward pass; the losses are sums over targets, so the batch size changes only the speed
EVAL_BATCH = 16


def evaluate(
    model_dir: str | Path,
    cfg,
    tokens_manifest: str | Path,
    heldout: dict[str, Any] | None = None,
    max_blocks: int | None = None,
) -> dict[str, Any]:
    """Validation metrics of the model in ``model_dir`` under the run config ``cfg``: the objective's
    named losses, the token loss and the unigram baseline (nats/token), and perplexity for GPT.

    ``heldout`` (``core.manifest.heldout_split``): score that set's tokens instead of the validation split, every
    window once (``max_blocks`` caps the examples; default ``train.eval_max_blocks`` for the validation split); the
    baseline still counts the training tokens. Its tokenizer must be the one the model trained with."""
    from tokenmill.core.manifest import read_manifest
    from tokenmill.core.tokenizer import load_pretrained
    from tokenmill.training.data import open_split
    from tokenmill.training.families import spec_of
    from tokenmill.training.objectives import (
        BASELINE_METRICS,
        NSP_METRICS,
        accumulate,
        against_baseline,
        objective_for_run,
    )
    from tokenmill.training.weights import load_model

    tokens = read_manifest(tokens_manifest, stage="tokenize")
    model, tokenizer_path = load_model(model_dir)
    spec = spec_of(model.cfg)
    family = spec.name
    tokenizer = load_pretrained(tokenizer_path)  # as the tokenize stage encoded
    specials = tokens["tokenizer"]["special_tokens"]
    vocab_size = tokens["tokenizer"]["vocab_size"]
    train_tokens = open_split(tokens, "train")
    if heldout is not None and heldout["tokenizer"]["sha256"] != tokens["tokenizer"]["sha256"]:
        raise ValueError(
            f"the held-out set was encoded with {heldout['tokenizer']['path']}, the model trained on tokens of "
            f"{tokens['tokenizer']['path']}: their losses do not compare"
        )
    val_tokens = open_split(heldout if heldout is not None else tokens, "validation")
    objective, source = objective_for_run(
        cfg, family, model.cfg.block_size, specials, vocab_size, tokenizer, train_tokens, val_tokens
    )
    if max_blocks is None:
        # a held-out set is scored whole (each window once); the validation split as training scored it
        max_blocks = (
            max(1, len(val_tokens) // model.cfg.block_size) if heldout is not None else cfg.train.eval_max_blocks
        )
    batches = objective.eval_batches(source, max_blocks, batch_size=EVAL_BATCH)
    if not batches:
        raise ValueError(f"no validation examples from {len(val_tokens)} validation tokens")
    started = time.time()
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in batches:
            accumulate(totals, objective.loss(model, batch)[1])
    metrics = {n: s / max(c, 1) for n, (s, c) in totals.items()}
    scored = against_baseline(
        metrics, objective, family, batches, train_tokens, vocab_size, specials, bool(cfg.train.pairs)
    )
    perplexity = scored.pop("perplexity")
    out = {
        "family": family,
        "objective": objective.name,
        "metrics": metrics,
        **{k: scored[k] for k in BASELINE_METRICS},
        "beyond_frequencies": scored["beyond_frequencies"],
        **{k: scored[k] for k in NSP_METRICS if k in scored},
        "examples": sum(b["input_ids"].size(0) for b in batches),
        "validation_tokens": scored["validation_tokens"],
        "seconds": time.time() - started,
    }
    if perplexity is not None:
        out["perplexity"] = perplexity
    return out


def score_heldout(train_manifest: str | Path, cfg, heldout_manifest: str | Path) -> dict[str, dict[str, Any]]:
    """Every set of a ``heldout`` manifest (``spark_jobs.heldout``) scored by the model a train manifest names:
    per set, the token loss (nats/token), its unigram baseline, accuracy and the tokens scored. A set left empty by
    decontamination is absent."""
    from tokenmill.core.manifest import heldout_split, read_manifest

    train = read_manifest(train_manifest, stage="train")
    heldout = read_manifest(heldout_manifest, stage="heldout")
    scores = {}
    for name, entry in heldout["sets"].items():
        if "split" not in entry:
            continue
        result = evaluate(train["model"]["folder"], cfg, train["tokens_manifest"]["path"], heldout_split(heldout, name))
        scores[name] = {
            "token_loss": result["token_loss"],
            "unigram_baseline_loss": result["unigram_baseline_loss"],
            "token_accuracy": result["token_accuracy"],
            "validation_tokens": result["validation_tokens"],
        }
    return scores


def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="tokenmill model folder (a run's train/ folder)")
    p.add_argument("--run-config", required=True, help="the run's resolved config.yaml")
    p.add_argument("--tokens-manifest")
    p.add_argument("--out", required=True, help="where to write the evaluate manifest (JSON)")
    p.add_argument("--mlflow-run-id", default=None, help="log eval/* metrics into this run")
    p.add_argument("--train-manifest", help="with --heldout-manifest: the model (and its tokens) to score")
    p.add_argument("--heldout-manifest", help="score every held-out set of this manifest (spark_jobs.heldout)")
    args = p.parse_args(argv)

    import json

    from tokenmill.core.config import load_config
    from tokenmill.core.manifest import sha256_file, write_manifest

    torch.manual_seed(0)
    cfg = load_config(args.run_config)
    if args.heldout_manifest:
        if not args.train_manifest:
            p.error("--heldout-manifest needs --train-manifest")
        scores = score_heldout(args.train_manifest, cfg, args.heldout_manifest)
        Path(args.out).write_text(json.dumps(scores, indent=2))
        print("evaluate: " + "  ".join(f"{s} {v['token_loss']:.4f}" for s, v in scores.items()))
        return 0
    if not (args.model and args.tokens_manifest):
        p.error("--model and --tokens-manifest are required (or --train-manifest with --heldout-manifest)")
    result = evaluate(args.model, cfg, args.tokens_manifest)
    manifest = {
        "stage": "evaluate",
        "model": {
            "folder": str(Path(args.model).resolve()),
            "sha256": sha256_file(Path(args.model) / "weights.safetensors"),
        },
        "tokens_manifest": str(Path(args.tokens_manifest).resolve()),
        "mlflow_run_id": args.mlflow_run_id,
        **result,
    }
    # the run folder is the one holding the model's folder (<run>/train), as the manifest sits in <run>/train/evaluate
    write_manifest(args.out, manifest, root=Path(args.model).resolve().parent)
    if args.mlflow_run_id:
        from tokenmill.core.tracking import MlflowLogger
        from tokenmill.training.objectives import BASELINE_METRICS

        logged = {f"eval/{n}": v for n, v in result["metrics"].items()}
        logged.update({f"eval/{k}": result[k] for k in BASELINE_METRICS})
        if "perplexity" in result:
            logged["eval/perplexity"] = result["perplexity"]
        if "nsp_majority" in result:
            logged["eval/nsp_majority"] = result["nsp_majority"]
        MlflowLogger(cfg.tracking_uri, args.mlflow_run_id).log_metrics(logged, step=cfg.train.max_steps)
    print(
        "evaluate: "
        + "  ".join(f"{n} {v:.4f}" for n, v in result["metrics"].items())
        + f"  (unigram baseline {result['unigram_baseline_loss']:.4f}) on {result['examples']} examples"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
