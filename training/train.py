"""The training entry point every rank runs (started by ``torchrun`` or the ``deepspeed`` launcher).

    python -m training.train --run-config <resolved config.yaml> --tokens-manifest <tokenize manifest.json>
        --out-dir <dir> [--mlflow-run-id <id>]

Trains with DeepSpeed, evaluates validation loss against a unigram baseline, and on rank 0
logs to MLflow and writes ``weights.safetensors``, ``sample.txt`` and ``manifest.json``
(stage ``train``) into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from tokenmill.env import prepare_environment

log = logging.getLogger("tokenmill.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Flag names are long and distinct: torchrun swallows script flags that prefix its own (--log, --d...).
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-config", required=True)
    p.add_argument("--tokens-manifest", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--mlflow-run-id", default=None)
    return p.parse_args(argv)


@record  # torchrun then reports the failing rank's exception as the root cause
def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    # Known-noisy deprecations inside DeepSpeed's ZeRO collectives; nothing to act on here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    args = parse_args(argv)
    from tokenmill.config import load_config
    from tokenmill.manifest import read_manifest, sha256_file, write_manifest
    from tokenmill.tracking import MetricsLogger, MlflowLogger
    from training import distributed
    from training.data import PackedBatches, eval_blocks, unigram_cross_entropy
    from training.models import build_model
    from training.tokenizer import load_tokens
    from training.weights import save_weights

    cfg = load_config(args.run_config)
    tcfg = cfg.train
    rank, world = distributed.init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    torch.manual_seed(cfg.run.seed)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokens = read_manifest(args.tokens_manifest, stage="tokenize")
    vocab_size = tokens["tokenizer"]["vocab_size"]
    train_tokens = load_tokens(tokens["splits"]["train"]["path"])
    val_tokens = load_tokens(tokens["splits"]["validation"]["path"])
    batches = PackedBatches(train_tokens, cfg.model.block_size, seed=cfg.run.seed)

    model = build_model(cfg.model, vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    ds_config = distributed.deepspeed_config(tcfg, world, tcfg.deepspeed_config)
    engine = distributed.initialize(model, tcfg, ds_config)
    dev = distributed.device()
    tracker: MetricsLogger = MlflowLogger(cfg.tracking_uri, args.mlflow_run_id) if (
        rank == 0 and args.mlflow_run_id) else MetricsLogger()
    if rank == 0:
        (out_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        tracker.log_artifact(out_dir / "deepspeed_config.json", "config")
        tracker.log_params({"model.num_params": n_params, "train.world_size": world,
                            "train.global_batch": ds_config["train_batch_size"]})
        log.info("train: %s with %.2fM parameters, %d train / %d validation tokens, %d rank(s), ZeRO-%d",
                 cfg.model.family, n_params / 1e6, len(train_tokens), len(val_tokens), world, tcfg.zero_stage)

    micro, accum = tcfg.micro_batch_size, tcfg.grad_accum_steps
    tokens_per_step = ds_config["train_batch_size"] * cfg.model.block_size
    history: list[dict] = []
    started = window_start = time.time()
    window_loss, window_n = 0.0, 0
    engine.train()
    for step in range(tcfg.max_steps):
        for micro_step in range(accum):
            # Micro-batch m of step s is slice (m, rank) of the step's global batch.
            x, y = batches.batch(step * accum + micro_step, micro * world, rank, world)
            _, loss = engine(x.to(dev), y.to(dev))
            engine.backward(loss)
            engine.step()
            window_loss += loss.item()
            window_n += 1
        if (step + 1) % tcfg.log_every == 0 or step + 1 == tcfg.max_steps:
            loss_sum, n = distributed.all_reduce_sum([window_loss, window_n])
            elapsed = time.time() - window_start
            steps_in_window = window_n // accum
            metrics = {"train/loss": loss_sum / n, "train/lr": engine.get_lr()[0],
                       "train/tokens_per_s": steps_in_window * tokens_per_step / elapsed}
            tracker.log_metrics(metrics, step=step + 1)
            history.append({"step": step + 1, **metrics})
            eta = (time.time() - started) / (step + 1) * (tcfg.max_steps - step - 1)
            log.info("step %d/%d  loss %.4f  lr %.2e  %.0f tokens/s  eta %.0fs", step + 1, tcfg.max_steps,
                     metrics["train/loss"], metrics["train/lr"], metrics["train/tokens_per_s"], eta)
            window_start, window_loss, window_n = time.time(), 0.0, 0

    # Validation: every rank evaluates its share of the same fixed blocks, padded to equal counts
    # so that ZeRO-3's collective forward passes line up.
    engine.eval()
    vx, vy = eval_blocks(val_tokens, cfg.model.block_size, tcfg.eval_max_blocks)
    mine = list(range(rank, len(vx), world))
    rounds = -(-len(vx) // world)
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        for i in range(rounds):
            j = mine[i] if i < len(mine) else 0
            _, loss = engine(vx[j:j + 1].to(dev), vy[j:j + 1].to(dev))
            if i < len(mine):
                loss_sum += loss.item()
                count += 1
    loss_sum, count = distributed.all_reduce_sum([loss_sum, count])
    val_loss = loss_sum / count
    baseline = unigram_cross_entropy(train_tokens, vy, vocab_size)

    state = distributed.full_state_dict(engine)  # collective under ZeRO-3
    sample = _sample(engine.module, tokens["tokenizer"]["path"], tcfg.sample_prompt, tcfg.sample_tokens,
                     cfg.run.seed, dev)
    if rank == 0:
        weights = save_weights(state, out_dir / "weights.safetensors")
        (out_dir / "sample.txt").write_text(sample)
        summary = {"val/loss": val_loss, "val/perplexity": float(torch.tensor(val_loss).exp()),
                   "val/unigram_baseline_loss": baseline}
        tracker.log_metrics(summary, step=tcfg.max_steps)
        tracker.log_text(sample, "samples/final.txt")
        tracker.log_artifact(weights, "model")
        manifest = {
            "stage": "train",
            "tokens_manifest": {"path": str(Path(args.tokens_manifest).resolve()),
                                "sha256": sha256_file(args.tokens_manifest)},
            "mlflow_run_id": args.mlflow_run_id,
            "model": {"family": cfg.model.family, "num_params": n_params, "vocab_size": vocab_size},
            "weights": {"path": str(weights.resolve()), "sha256": sha256_file(weights)},
            "world_size": world,
            "steps": tcfg.max_steps,
            "tokens_seen": tcfg.max_steps * tokens_per_step,
            "val_loss": val_loss,
            "unigram_baseline_loss": baseline,
            "validation_tokens": int(vy.numel()),
            "history": history,
            "sample": sample,
        }
        write_manifest(out_dir / "manifest.json", manifest)
        log.info("train: validation loss %.4f vs unigram baseline %.4f", val_loss, baseline)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


def _sample(model, tokenizer_path: str, prompt: str, n_tokens: int, seed: int, dev) -> str:
    """Top-k sample from the trained model; every rank runs it (ZeRO-3 forward passes are collective)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    ids = tok.encode(prompt).ids or [tok.token_to_id("<|endoftext|>")]
    gen = torch.Generator(device=dev).manual_seed(seed)
    out = model.generate(torch.tensor([ids], device=dev), n_tokens, temperature=0.8, top_k=40, generator=gen)
    return tok.decode(out[0].tolist())


if __name__ == "__main__":
    sys.exit(main())
