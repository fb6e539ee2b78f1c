"""The training entry point every rank runs (started by ``torchrun`` or the ``deepspeed`` launcher).

    python -m tokenmill.training.train --run-config <resolved config.yaml> --tokens-manifest <tokenize manifest.json>
        --out-dir <dir> [--mlflow-run-id <id>]

Trains the configured family (GPT, BERT, T5, Transformer) on its objective with DeepSpeed,
evaluates it on the validation split against a unigram baseline, and on rank 0 logs to MLflow
and writes a model folder (``weights.safetensors``, ``model.json``, ``tokenizer.json``),
``sample.txt``, ``attention/*.png`` and ``manifest.json`` (stage ``train``) into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import logging
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from tokenmill.core.env import prepare_environment

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
    from tokenizers import Tokenizer

    from tokenmill.core.config import load_config
    from tokenmill.core.manifest import read_manifest, sha256_file, write_manifest
    from tokenmill.core.tracking import MetricsLogger, MlflowLogger
    from tokenmill.training import distributed
    from tokenmill.training.attention import attention_maps, save_attention_pngs, token_labels
    from tokenmill.training.data import unigram_cross_entropy
    from tokenmill.training.families import spec_of
    from tokenmill.training.hf import load_hf
    from tokenmill.training.models import architecture, build_model, family_of, family_of_architecture
    from tokenmill.training.objectives import accumulate, label_stream, objective_for_run, token_loss_name
    from tokenmill.training.tokenizer import load_tokens
    from tokenmill.core.plots import loss_curve
    from tokenmill.training.flops import detect_device, flops_per_token, mfu, peak_flops
    from tokenmill.training.weights import save_model_folder

    cfg = load_config(args.run_config)
    tcfg = cfg.train
    rank, world = distributed.init_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    torch.manual_seed(cfg.run.seed)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokens = read_manifest(args.tokens_manifest, stage="tokenize")
    tokenizer = Tokenizer.from_file(tokens["tokenizer"]["path"])
    specials = tokens["tokenizer"]["special_tokens"]
    vocab_size = tokens["tokenizer"]["vocab_size"]
    train_tokens = load_tokens(tokens["splits"]["train"]["path"])
    val_tokens = load_tokens(tokens["splits"]["validation"]["path"])

    if cfg.model.init_from:
        model = load_hf(cfg.model.init_from)
        arch = model.cfg
        if family_of_architecture(arch) != family_of(cfg.model) or arch.vocab_size != vocab_size:
            raise ValueError(f"model.init_from {cfg.model.init_from} holds a {family_of_architecture(arch)} model with "
                             f"{arch.vocab_size} tokens; this run trains a {family_of(cfg.model)} model on a "
                             f"{vocab_size}-token tokenizer (set tokenizer.from_pretrained to the same folder)")
    else:
        arch = architecture(cfg.model, vocab_size=vocab_size, pad_id=specials["pad"])
        model = build_model(arch)
    spec = spec_of(arch)
    family = spec.name
    objective, eval_source = objective_for_run(cfg, family, arch.block_size, specials, vocab_size, tokenizer,
                                               train_tokens, val_tokens)
    n_params = sum(p.numel() for p in model.parameters())
    ds_config = distributed.deepspeed_config(tcfg, world, tcfg.deepspeed_config)
    engine = distributed.initialize(model, tcfg, ds_config)
    dev = distributed.device()
    tracker: MetricsLogger = MlflowLogger(cfg.tracking_uri, args.mlflow_run_id) if (
        rank == 0 and args.mlflow_run_id) else MetricsLogger()
    if rank == 0 and cfg.tracking.system_metrics:
        tracker.start_system_metrics()
    if rank == 0:
        (out_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        tracker.log_artifact(out_dir / "deepspeed_config.json", "config")
        tracker.log_params({"model.num_params": n_params, "train.world_size": world,
                            "train.global_batch": ds_config["train_batch_size"], "model.resolved_family": family,
                            **{f"model.arch.{k}": v for k, v in dataclasses.asdict(arch).items()}})
        log.info("train: %s (%s) with %.2fM parameters, %d train / %d validation tokens, %d rank(s), ZeRO-%d",
                 family, objective.name, n_params / 1e6, len(train_tokens), len(val_tokens), world, tcfg.zero_stage)

    micro, accum, _ = distributed.batch_sizes(tcfg, world)
    device_name, _ = detect_device()
    peak = peak_flops(device_name, tcfg.precision, tcfg.peak_flops)
    per_token = flops_per_token(arch, arch.block_size)
    eval_batches = objective.eval_batches(eval_source, tcfg.eval_max_blocks, batch_size=1)
    if not eval_batches:
        raise ValueError(f"no validation examples from {len(val_tokens)} validation tokens")

    # Resume: the checkpoint restores weights, optimizer, LR schedule and RNGs; the data position is
    # the step itself, since every batch is a pure function of (seed, step).
    ckpt_dir = out_dir / "checkpoints"
    resumed = distributed.load_checkpoint(engine, ckpt_dir) if tcfg.resume else None
    start = resumed["step"] if resumed else 0
    history: list[dict] = resumed["history"] if resumed else []
    tokens_seen = resumed["tokens_seen"] if resumed else 0
    if rank == 0 and resumed:
        log.info("train: resumed from %s at step %d", ckpt_dir, start)
        tracker.set_tags({"tokenmill.resumed_at_step": str(start)})
    stop = _StopFlag()

    def checkpoint(step: int) -> None:
        distributed.save_checkpoint(engine, ckpt_dir, step, {"history": history, "tokens_seen": tokens_seen,
                                                              "mlflow_run_id": args.mlflow_run_id})
        if rank == 0:
            (ckpt_dir / "run.json").write_text(json.dumps({"mlflow_run_id": args.mlflow_run_id, "step": step}))
            log.info("checkpoint: saved step %d in %s", step, ckpt_dir)

    started = window_start = time.time()
    window: dict[str, list[float]] = {}
    window_tokens = 0
    engine.train()
    step = start
    for step in range(start, tcfg.max_steps):
        for micro_step in range(accum):
            # Micro-batch m of step s is slice (m, rank) of the step's global batch.
            batch = {k: v.to(dev) for k, v in objective.batch(step * accum + micro_step, micro * world, rank,
                                                              world).items()}
            loss, metrics = objective.loss(engine, batch)
            engine.backward(loss)
            engine.step()
            accumulate(window, metrics)
            window_tokens += objective.tokens(batch)
        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.max_steps:
            names = sorted(window)
            reduced = distributed.all_reduce_sum([window_tokens] + [x for n in names for x in window[n]])
            step_tokens, sums = int(reduced[0]), reduced[1:]
            tokens_seen += step_tokens
            elapsed = time.time() - window_start
            metrics = {f"train/{n}": sums[2 * i] / max(sums[2 * i + 1], 1) for i, n in enumerate(names)}
            if spec.predicts_stream:
                metrics["train/perplexity"] = math.exp(min(metrics["train/loss"], 50.0))
            metrics.update({"train/lr": engine.get_lr()[0], "train/tokens_per_s": step_tokens / elapsed,
                            "train/tokens_seen": tokens_seen, **_memory_metrics()})
            grad_norm = engine.get_global_grad_norm()
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            utilisation = mfu(metrics["train/tokens_per_s"], per_token, peak, world)
            if utilisation is not None:
                metrics["train/mfu"] = utilisation
            tracker.log_metrics(metrics, step=done)
            history.append({"step": done, **metrics})
            eta = (time.time() - started) / (done - start) * (tcfg.max_steps - done)
            log.info("step %d/%d  %s  lr %.2e  %.0f tokens/s  mfu %s  eta %.0fs", done, tcfg.max_steps,
                     "  ".join(f"{n} {metrics[f'train/{n}']:.4f}" for n in names), metrics["train/lr"],
                     metrics["train/tokens_per_s"], f"{utilisation:.1%}" if utilisation is not None else "n/a", eta)
            window_start, window, window_tokens = time.time(), {}, 0
        if tcfg.eval_every and done % tcfg.eval_every == 0 and done < tcfg.max_steps:
            val = _evaluate(engine, objective, eval_batches, rank, world, dev)
            tracker.log_metrics({f"val/{n}": v for n, v in val.items()}, step=done)
            log.info("eval at step %d: %s", done, "  ".join(f"{n} {v:.4f}" for n, v in val.items()))
            engine.train()
        if stop.requested_everywhere():
            checkpoint(done)
            log.warning("train: stopped by SIGTERM after step %d; rerun the same command to resume", done)
            tracker.stop_system_metrics()
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
            return 143
        if tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0 and done < tcfg.max_steps:
            checkpoint(done)
    if start < tcfg.max_steps or not resumed:
        checkpoint(tcfg.max_steps)

    val = _evaluate(engine, objective, eval_batches, rank, world, dev)
    labels = torch.cat([b["labels"].reshape(-1) for b in eval_batches])
    baseline = unigram_cross_entropy(label_stream(objective, family, train_tokens), labels[labels != -100],
                                     vocab_size)
    token_loss = val[token_loss_name(family, bool(tcfg.pairs))]

    state = distributed.full_state_dict(engine)  # collective under ZeRO-3
    # every rank samples (ZeRO-3 forward passes are collective)
    sample = spec.sampler()(engine.module, tokenizer, specials, tcfg.sample_prompt, tcfg.sample_tokens,
                            cfg.run.seed, dev)
    ids = _attention_ids(val_tokens, specials, spec.attention_framing)
    maps = attention_maps(engine.module, ids)
    if rank == 0:
        save_model_folder(out_dir, state, arch, tokens["tokenizer"]["path"])
        weights = out_dir / "weights.safetensors"
        (out_dir / "sample.txt").write_text(sample)
        pngs = save_attention_pngs(maps, token_labels(tokenizer, ids), out_dir / "attention")
        summary = {f"val/{n}": v for n, v in val.items()}
        summary.update({"val/token_loss": token_loss, "val/unigram_baseline_loss": baseline})
        if spec.predicts_stream:
            summary["val/perplexity"] = math.exp(min(val["loss"], 50.0))
        tracker.log_metrics(summary, step=tcfg.max_steps)
        tracker.log_text(sample, "samples/final.txt")
        for png in pngs:
            tracker.log_artifact(png, "attention")
        for name in ("weights.safetensors", "model.json", "tokenizer.json"):
            tracker.log_artifact(out_dir / name, "model")
        tracker.log_artifact(loss_curve(history, out_dir / "loss_curve.png"), "plots")
        registered = _register(tracker, cfg, family, out_dir, state, arch, tokens["tokenizer"]["path"])
        manifest = {
            "stage": "train",
            "tokens_manifest": {"path": str(Path(args.tokens_manifest).resolve()),
                                "sha256": sha256_file(args.tokens_manifest)},
            "mlflow_run_id": args.mlflow_run_id,
            "model": {"family": family, "objective": objective.name, "num_params": n_params,
                      "vocab_size": vocab_size, "folder": str(out_dir.resolve()),
                      "init_from": cfg.model.init_from},
            "weights": {"path": str(weights.resolve()), "sha256": sha256_file(weights)},
            "world_size": world,
            "steps": tcfg.max_steps,
            "tokens_seen": tokens_seen,
            "val_loss": val["loss"],
            "val_metrics": val,
            "token_loss": token_loss,
            "unigram_baseline_loss": baseline,
            "validation_tokens": int((labels != -100).sum()),
            "history": history,
            "sample": sample,
            "registered_model": registered,
            "resumed_at_step": start if resumed else None,
            "device": device_name,
        }
        write_manifest(out_dir / "manifest.json", manifest)
        log.info("train: validation %s; token loss %.4f vs unigram baseline %.4f",
                 "  ".join(f"{n} {v:.4f}" for n, v in val.items()), token_loss, baseline)
        tracker.stop_system_metrics()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


class _StopFlag:
    """SIGTERM asks for a checkpoint and a clean exit; ranks agree on it at step boundaries."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def requested_everywhere(self) -> bool:
        flag = torch.tensor([1.0 if self.requested else 0.0])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


def _evaluate(engine, objective, batches, rank: int, world: int, dev) -> dict[str, float]:
    """Every rank scores its share of the same fixed batches, padded to equal counts so that ZeRO-3's
    collective forward passes line up; the (sum, count) metrics are summed over ranks."""
    from tokenmill.training import distributed
    from tokenmill.training.objectives import accumulate

    engine.eval()
    mine = list(range(rank, len(batches), world))
    totals: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(-(-len(batches) // world)):
            batch = {k: v.to(dev) for k, v in batches[mine[i] if i < len(mine) else 0].items()}
            _, metrics = objective.loss(engine, batch)
            if i < len(mine):
                accumulate(totals, metrics)
    names = sorted(totals)
    sums = distributed.all_reduce_sum([x for n in names for x in totals[n]])
    return {n: sums[2 * i] / max(sums[2 * i + 1], 1) for i, n in enumerate(names)}


def _memory_metrics() -> dict[str, float]:
    """Peak memory of this process: GPU allocations on CUDA, resident set size on CPU (GiB)."""
    if torch.cuda.is_available():
        return {"train/gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    import resource

    return {"train/peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _register(tracker, cfg, family: str, out_dir: Path, state, arch, tokenizer_path: str) -> dict | None:
    """Export to Hugging Face, log the folder and register it as a new version of the run's model.

    A model with no Hugging Face equivalent (e.g. GPT with RoPE) registers its tokenmill folder instead.
    """
    if not cfg.tracking.register_model:
        return None
    from tokenmill.training.hf import export
    from tokenmill.training.models import build_model

    name = cfg.tracking.model_name or f"tokenmill-{cfg.run.name}-{family}"
    model = build_model(arch)
    model.load_state_dict(state)
    try:
        folder, kind = export(model.eval(), tokenizer_path, out_dir / "hf"), "hf"
    except ValueError as e:
        log.warning("train: no Hugging Face export (%s); registering the tokenmill model folder", e)
        folder, kind = None, "model"
    if folder is not None:
        for path in sorted(folder.iterdir()):
            tracker.log_artifact(path, "hf")
    version = tracker.register_model(name, kind)
    return {"name": name, "version": version, "artifact": kind} if version else None


def _attention_ids(val_tokens, specials: dict[str, int], framing, n: int = 24) -> list[int]:
    """A short validation snippet to draw attention maps for, framed as the family frames its inputs
    (BERT's start with [CLS])."""
    ids = [int(t) for t in val_tokens[: n * 4] if int(t) not in specials.values()][:n]
    return framing.frame(ids[: n - framing.overhead], specials)


if __name__ == "__main__":
    sys.exit(main())
