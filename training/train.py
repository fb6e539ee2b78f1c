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
import logging
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributed.elastic.multiprocessing.errors import record

from tokenmill.core.env import prepare_environment
from tokenmill.training import distributed

log = logging.getLogger("tokenmill.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Flag names are long and distinct: torchrun swallows script flags that prefix its own (--log, --d...).
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-config", required=True)
    p.add_argument("--tokens-manifest", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--mlflow-run-id", default=None)
    return p.parse_args(argv)


@dataclass
class Run:
    """What the pieces of one rank's training read: set up once by ``setup``."""

    cfg: Any
    args: argparse.Namespace
    rank: int
    world: int
    out_dir: Path
    tokens: dict  # the tokenize manifest
    tokenizer: Any
    train_tokens: Any  # the train split (tokenmill.training.data.Split): shards memory-mapped
    val_tokens: Any  # the validation split
    arch: Any  # the family's config dataclass
    spec: Any  # the family's ModelSpec
    objective: Any
    eval_batches: list[dict]
    engine: Any  # the DeepSpeed engine
    dev: torch.device
    tracker: Any  # MlflowLogger on rank 0 with a run id, else a MetricsLogger that logs nothing
    node_metrics: Any  # what samples this node's system metrics into the run (local rank 0), else a no-op
    n_params: int
    micro: int  # sequences per rank per micro-step
    accum: int  # micro-steps per step
    device_name: str
    peak: float | None  # peak FLOP/s of one device, for MFU
    per_token: float  # training FLOPs per token

    @property
    def specials(self) -> dict[str, int]:
        return self.tokens["tokenizer"]["special_tokens"]

    @property
    def vocab_size(self) -> int:
        return self.tokens["tokenizer"]["vocab_size"]


@dataclass
class Progress:
    """Where training is: restored from a checkpoint by ``resume``, advanced by ``train_step``."""

    start: int = 0
    resumed: bool = False
    history: list[dict] = field(default_factory=list)
    tokens_seen: int = 0
    started: float = field(default_factory=time.time)
    window_start: float = field(default_factory=time.time)
    window: dict[str, list[float]] = field(default_factory=dict)  # metric -> [sum, count] since the last log
    window_tokens: int = 0
    # per metric group (train, val): steps up to here are in MLflow already (a killed run logged them after its
    # last checkpoint), so they are computed again but not logged twice
    logged_through: dict[str, int] = field(default_factory=dict)
    checkpointed: float = field(default_factory=time.monotonic)  # when the last checkpoint was written


@record  # torchrun then reports the failing rank's exception as the root cause
def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    # Known-noisy deprecations inside DeepSpeed's ZeRO collectives; nothing to act on here.
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    stop = _StopSignals()  # before the slow set-up, so an early SIGTERM is not lost
    run = setup(parse_args(argv))
    progress = resume(run)
    tcfg = run.cfg.train
    run.engine.train()
    for step in range(progress.start, tcfg.max_steps):
        train_step(run, progress, step)
        done = step + 1
        if done % tcfg.log_every == 0 or done == tcfg.max_steps:
            log_window(run, progress, done)
        if tcfg.eval_every and done % tcfg.eval_every == 0 and done < tcfg.max_steps:
            evaluate_now(run, progress, done)
        # One collective per step settles both: a signal on any rank stops every rank here, and a checkpoint
        # due by the clock of any rank is written by all of them.
        late = (
            bool(tcfg.checkpoint_minutes) and time.monotonic() - progress.checkpointed >= tcfg.checkpoint_minutes * 60
        )
        signum, due = (int(x) for x in distributed.all_reduce_max([stop.signum, float(late)]))
        if signum:
            checkpoint(run, progress, done)
            name = signal.Signals(signum).name
            log.warning("train: stopped by %s after step %d; rerun the same command to resume", name, done)
            run.tracker.stop_system_metrics()
            run.node_metrics.stop_system_metrics()
            return shut_down(128 + signum)
        if done < tcfg.max_steps and (due or (tcfg.checkpoint_every and done % tcfg.checkpoint_every == 0)):
            checkpoint(run, progress, done)
    if progress.start < tcfg.max_steps or not progress.resumed:
        checkpoint(run, progress, tcfg.max_steps)
    finish(run, progress)
    return shut_down(0)


def setup(args: argparse.Namespace) -> Run:
    """Ranks, the resolved config, the token shards, the model (fresh or ``model.init_from``), its objective,
    the DeepSpeed engine and the tracker; on rank 0 the DeepSpeed JSON and the resolved model go to MLflow."""
    from tokenmill.core.config import load_config
    from tokenmill.core.manifest import read_manifest
    from tokenmill.core.tokenizer import load_pretrained
    from tokenmill.core.tracking import MetricsLogger, MlflowLogger
    from tokenmill.training.data import open_split
    from tokenmill.training.families import spec_of
    from tokenmill.training.flops import detect_device, flops_per_token, peak_flops
    from tokenmill.training.objectives import objective_for_run

    cfg = load_config(args.run_config)  # the dump the CLI or flow resolved: no step registry needed here
    rank, world = distributed.init_distributed()
    out_dir = Path(args.out_dir)
    # precision auto is decided here, by the ranks' own devices (the CLI may run on a login node without a GPU), or
    # by the checkpoint a run resumes.
    saved = distributed.checkpoint_precision(out_dir / "checkpoints") if cfg.train.resume else None
    cfg = dataclasses.replace(cfg, train=distributed.resolve_precision(cfg.train, checkpoint=saved))
    tcfg = cfg.train
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    torch.manual_seed(cfg.run.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokens = read_manifest(args.tokens_manifest, stage="tokenize")
    tokenizer = load_pretrained(tokens["tokenizer"]["path"])  # as the tokenize stage encoded
    specials, vocab_size = tokens["tokenizer"]["special_tokens"], tokens["tokenizer"]["vocab_size"]
    train_tokens, val_tokens = open_split(tokens, "train"), open_split(tokens, "validation")
    model, arch = _model(cfg, vocab_size, specials)
    spec = spec_of(arch)
    objective, eval_source = objective_for_run(
        cfg, spec.name, arch.block_size, specials, vocab_size, tokenizer, train_tokens, val_tokens
    )
    n_params = sum(p.numel() for p in model.parameters())
    ds_config = distributed.deepspeed_config(tcfg, world, tcfg.deepspeed_config)
    engine = distributed.initialize(model, tcfg, ds_config)
    tracker = (
        MlflowLogger(cfg.tracking_uri, args.mlflow_run_id) if (rank == 0 and args.mlflow_run_id) else MetricsLogger()
    )
    # System metrics from every node, each under its node rank (system/node_<n>/...), by its first rank. torchrun
    # names the node rank and ranks per node GROUP_RANK and LOCAL_WORLD_SIZE, DeepSpeed's launcher CROSS_RANK and
    # LOCAL_SIZE.
    node_metrics = MetricsLogger()
    if cfg.tracking.system_metrics and args.mlflow_run_id and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", world)))
        node_rank = int(os.environ.get("GROUP_RANK", os.environ.get("CROSS_RANK", rank // max(local_world, 1))))
        node_metrics = tracker if rank == 0 else MlflowLogger(cfg.tracking_uri, args.mlflow_run_id)
        node_metrics.start_system_metrics(node_id=f"node_{node_rank}")
    if rank == 0:
        (out_dir / "deepspeed_config.json").write_text(json.dumps(ds_config, indent=2))
        tracker.log_artifact(out_dir / "deepspeed_config.json", "config")
        tracker.log_params(
            {
                "model.num_params": n_params,
                "train.world_size": world,
                "train.global_batch": ds_config["train_batch_size"],
                "model.resolved_family": spec.name,
                "train.resolved_precision": tcfg.precision,
                **{f"model.arch.{k}": v for k, v in dataclasses.asdict(arch).items()},
            }
        )
        log.info(
            "train: %s (%s) with %.2fM parameters, %d train / %d validation tokens, %d rank(s), ZeRO-%d, %s",
            spec.name,
            objective.name,
            n_params / 1e6,
            len(train_tokens),
            len(val_tokens),
            world,
            ds_config["zero_optimization"]["stage"],  # distributed.zero_stage: 1 and 2 run as 0 on one fp32 rank
            tcfg.precision,
        )
        if objective.windows_per_epoch:
            log.info(
                "train: an epoch is %d examples, %d tokens (%d shard(s), %d documents), drawn without replacement",
                objective.windows_per_epoch,
                objective.tokens_per_epoch,
                len(train_tokens.shards),
                train_tokens.num_documents,
            )

    micro, accum, _ = distributed.batch_sizes(tcfg, world)
    device_name, _ = detect_device()
    eval_batches = objective.eval_batches(eval_source, tcfg.eval_max_blocks, batch_size=1)
    if not eval_batches:
        raise ValueError(f"no validation examples from {len(val_tokens)} validation tokens")
    return Run(
        cfg=cfg,
        args=args,
        rank=rank,
        world=world,
        out_dir=out_dir,
        tokens=tokens,
        tokenizer=tokenizer,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        arch=arch,
        spec=spec,
        objective=objective,
        eval_batches=eval_batches,
        engine=engine,
        dev=distributed.device(),
        tracker=tracker,
        node_metrics=node_metrics,
        n_params=n_params,
        micro=micro,
        accum=accum,
        device_name=device_name,
        peak=peak_flops(device_name, tcfg.precision, tcfg.peak_flops),
        per_token=flops_per_token(arch, arch.block_size),
    )


def _model(cfg, vocab_size: int, specials: dict[str, int]):
    """(model, its config): continued from the Hugging Face folder ``model.init_from``, else freshly built."""
    from tokenmill.training.hf import load_hf
    from tokenmill.training.models import architecture, build_model, family_of, family_of_architecture

    if not cfg.model.init_from:
        arch = architecture(cfg.model, vocab_size=vocab_size, pad_id=specials["pad"])
        return build_model(arch), arch
    model = load_hf(cfg.model.init_from)
    arch = model.cfg
    if family_of_architecture(arch) != family_of(cfg.model) or arch.vocab_size != vocab_size:
        raise ValueError(
            f"model.init_from {cfg.model.init_from} holds a {family_of_architecture(arch)} model with "
            f"{arch.vocab_size} tokens; this run trains a {family_of(cfg.model)} model on a "
            f"{vocab_size}-token tokenizer (set tokenizer.from_pretrained to the same folder)"
        )
    return model, arch


def resume(run: Run) -> Progress:
    """The progress of the checkpoint under ``<out>/checkpoints`` (``train.resume``), else a fresh start.

    The checkpoint restores weights, optimizer, LR schedule and RNGs; the data position is the step
    itself, since every batch is a pure function of (seed, step).
    """
    ckpt_dir = run.out_dir / "checkpoints"
    distributed.check_shared_folder(ckpt_dir)
    resumed = distributed.load_checkpoint(run.engine, ckpt_dir) if run.cfg.train.resume else None
    if not resumed:
        return Progress()
    window, window_tokens = _own_window(resumed.get("window"), run.rank, run.world)
    progress = Progress(
        start=resumed["step"],
        resumed=True,
        history=resumed["history"],
        tokens_seen=resumed["tokens_seen"],
        window=window,
        window_tokens=window_tokens,
        logged_through={group: run.tracker.last_step(f"{group}/loss") or 0 for group in ("train", "val")},
    )
    if run.rank == 0:
        log.info("train: resumed from %s at step %d", ckpt_dir, resumed["step"])
        run.tracker.set_tags({"tokenmill.resumed_at_step": str(resumed["step"])})
    return progress


def _own_window(saved: dict | None, rank: int, world: int) -> tuple[dict[str, list[float]], int]:
    """This rank's part of the logging window a checkpoint holds (every rank's sums, as ``checkpoint`` saved
    them), so the first window after a resume logs what an uninterrupted run logs. Resumed on another world
    size, rank 0 carries the whole window."""
    if not saved:
        return {}, 0
    names, ranks = saved["names"], saved["ranks"]
    if len(ranks) == world:
        mine = ranks[rank]
    else:
        mine = [sum(col) for col in zip(*ranks, strict=True)] if rank == 0 else [0.0] * len(ranks[0])
    return {n: [mine[1 + 2 * i], mine[2 + 2 * i]] for i, n in enumerate(names)}, int(mine[0])


def train_step(run: Run, progress: Progress, step: int) -> None:
    """One optimizer step: ``accum`` micro-batches, each this rank's slice of the step's global batch."""
    from tokenmill.training.objectives import accumulate

    for micro_step in range(run.accum):
        # Micro-batch m of step s is slice (m, rank) of the step's global batch.
        batch = run.objective.batch(step * run.accum + micro_step, run.micro * run.world, run.rank, run.world)
        batch = {k: v.to(run.dev) for k, v in batch.items()}
        loss, metrics = run.objective.loss(run.engine, batch)
        run.engine.backward(loss)
        run.engine.step()
        accumulate(progress.window, metrics)
        progress.window_tokens += run.objective.tokens(batch)


def log_window(run: Run, progress: Progress, done: int) -> None:
    """The metrics since the last log, summed over ranks: to MLflow, the history and the log line."""
    from tokenmill.training.flops import mfu

    tcfg, engine = run.cfg.train, run.engine
    names = sorted(progress.window)
    reduced = distributed.all_reduce_sum([progress.window_tokens] + [x for n in names for x in progress.window[n]])
    step_tokens, sums = int(reduced[0]), reduced[1:]
    progress.tokens_seen += step_tokens
    elapsed = time.time() - progress.window_start
    metrics = {f"train/{n}": sums[2 * i] / max(sums[2 * i + 1], 1) for i, n in enumerate(names)}
    if run.spec.predicts_stream:
        metrics["train/perplexity"] = math.exp(min(metrics["train/loss"], 50.0))
    epoch = _epoch(run, done)
    if epoch is not None:  # train/epoch, and a line for each epoch completed since the last log
        metrics["train/epoch"] = epoch
        previous = progress.history[-1]["step"] if progress.history else progress.start
        for e in range(int(_epoch(run, previous)), int(epoch)):
            log.info(
                "train: epoch %d complete by step %d (%d tokens per epoch, %d examples)",
                e + 1,
                done,
                run.objective.tokens_per_epoch,
                run.objective.windows_per_epoch,
            )
    metrics.update(
        {
            "train/lr": engine.get_lr()[0],
            "train/tokens_per_s": step_tokens / elapsed,
            "train/tokens_seen": progress.tokens_seen,
            **_memory_metrics(),
        }
    )
    grad_norm = engine.get_global_grad_norm()
    if grad_norm is not None:
        metrics["train/grad_norm"] = float(grad_norm)
    utilisation = mfu(metrics["train/tokens_per_s"], run.per_token, run.peak, run.world)
    if utilisation is not None:
        metrics["train/mfu"] = utilisation
    if done > progress.logged_through.get("train", 0):
        run.tracker.log_metrics(metrics, step=done)
    progress.history.append({"step": done, **metrics})
    eta = (time.time() - progress.started) / (done - progress.start) * (tcfg.max_steps - done)
    log.info(
        "step %d/%d  %s  lr %.2e  %.0f tokens/s  mfu %s  eta %.0fs",
        done,
        tcfg.max_steps,
        "  ".join(f"{n} {metrics[f'train/{n}']:.4f}" for n in names),
        metrics["train/lr"],
        metrics["train/tokens_per_s"],
        f"{utilisation:.1%}" if utilisation is not None else "n/a",
        eta,
    )
    progress.window_start, progress.window, progress.window_tokens = time.time(), {}, 0


def _epoch(run: Run, done: int) -> float | None:
    """Epochs of the stream completed after ``done`` steps (fractional), for an objective that has epochs."""
    per_epoch = run.objective.windows_per_epoch
    if not per_epoch:
        return None
    return done * run.accum * run.micro * run.world / per_epoch


def evaluate_now(run: Run, progress: Progress, done: int) -> None:
    """A validation pass during training (``train.eval_every``), logged as ``val/*`` at step ``done``."""
    val = _evaluate(run.engine, run.objective, run.eval_batches, run.rank, run.world, run.dev)
    if done > progress.logged_through.get("val", 0):
        run.tracker.log_metrics({f"val/{n}": v for n, v in val.items()}, step=done)
    log.info("eval at step %d: %s", done, "  ".join(f"{n} {v:.4f}" for n, v in val.items()))
    run.engine.train()


def checkpoint(run: Run, progress: Progress, step: int) -> None:
    """Weights, optimizer and progress under ``<out>/checkpoints`` (every rank: ZeRO shards its state). The
    progress includes every rank's part of the open logging window: the state is saved by rank 0 alone."""
    ckpt_dir = run.out_dir / "checkpoints"
    names = sorted(progress.window)
    ranks = distributed.all_gather_values([progress.window_tokens] + [x for n in names for x in progress.window[n]])
    distributed.save_checkpoint(
        run.engine,
        ckpt_dir,
        step,
        {
            "history": progress.history,
            "tokens_seen": progress.tokens_seen,
            "window": {"names": names, "ranks": ranks},
            "mlflow_run_id": run.args.mlflow_run_id,
        },
    )
    progress.checkpointed = time.monotonic()
    if run.rank == 0:
        (ckpt_dir / "run.json").write_text(json.dumps({"mlflow_run_id": run.args.mlflow_run_id, "step": step}))
        log.info("checkpoint: saved step %d in %s", step, ckpt_dir)


def finish(run: Run, progress: Progress) -> None:
    """The final validation against the unigram baseline, the sample and attention maps (every rank: ZeRO-3
    forward passes are collective); on rank 0 the model folder, MLflow artifacts, the registered model and
    the train manifest."""
    from tokenmill.core.manifest import sha256_file, write_manifest
    from tokenmill.core.plots import loss_curve
    from tokenmill.training.attention import attention_maps, save_attention_pngs, token_labels
    from tokenmill.training.objectives import BASELINE_METRICS, NSP_METRICS, against_baseline
    from tokenmill.training.weights import save_model_folder

    cfg, tcfg, spec, out_dir, tracker = run.cfg, run.cfg.train, run.spec, run.out_dir, run.tracker
    val = _evaluate(run.engine, run.objective, run.eval_batches, run.rank, run.world, run.dev)
    run.node_metrics.stop_system_metrics()
    scored = against_baseline(
        val,
        run.objective,
        spec.name,
        run.eval_batches,
        run.train_tokens,
        run.vocab_size,
        run.specials,
        bool(tcfg.pairs),
    )
    state = distributed.full_state_dict(run.engine)  # collective under ZeRO-3
    sample = spec.sampler()(
        run.engine.module, run.tokenizer, run.specials, tcfg.sample_prompt, tcfg.sample_tokens, cfg.run.seed, run.dev
    )
    ids = _attention_ids(run.val_tokens, run.specials, spec.attention_framing)
    maps = attention_maps(run.engine.module, ids)
    if run.rank != 0:
        return
    tokenizer_path = run.tokens["tokenizer"]["path"]
    save_model_folder(out_dir, state, run.arch, tokenizer_path)
    weights = out_dir / "weights.safetensors"
    (out_dir / "sample.txt").write_text(sample)
    pngs = save_attention_pngs(maps, token_labels(run.tokenizer, ids), out_dir / "attention")
    summary = {f"val/{n}": v for n, v in val.items()}
    summary.update({f"val/{k}": scored[k] for k in BASELINE_METRICS})
    if scored["perplexity"] is not None:
        summary["val/perplexity"] = scored["perplexity"]
    if "nsp_majority" in scored:
        summary["val/nsp_majority"] = scored["nsp_majority"]
    tracker.log_metrics(summary, step=tcfg.max_steps)
    tracker.log_text(sample, "samples/final.txt")
    for png in pngs:
        tracker.log_artifact(png, "attention")
    tracker.log_artifact(loss_curve(progress.history, out_dir / "loss_curve.png"), "plots")
    facts = {  # for the export's model card
        "run_name": cfg.run.name,
        "data_input": cfg.data.input,
        "tokens_seen": progress.tokens_seen,
        "steps": tcfg.max_steps,
        "objective": run.objective.name,
        "metrics": summary,
        "config": {"world_size": run.world}
        | {f"train.{k}": getattr(tcfg, k) for k in ("precision", "zero_stage", "micro_batch_size", "lr", "schedule")},
    }
    registered = _log_model(tracker, cfg, spec, out_dir, state, run.arch, facts)
    manifest = {
        "stage": "train",
        "tokens_manifest": {
            "path": str(Path(run.args.tokens_manifest).resolve()),
            "sha256": sha256_file(run.args.tokens_manifest),
        },
        "mlflow_run_id": run.args.mlflow_run_id,
        "model": {
            "family": spec.name,
            "objective": run.objective.name,
            "num_params": run.n_params,
            "vocab_size": run.vocab_size,
            "folder": str(out_dir.resolve()),
            "init_from": cfg.model.init_from,
        },
        "weights": {"path": str(weights.resolve()), "sha256": sha256_file(weights)},
        "world_size": run.world,
        "precision": tcfg.precision,  # what ran: train.precision auto resolved by the ranks' devices
        "steps": tcfg.max_steps,
        "tokens_seen": progress.tokens_seen,
        "val_loss": val["loss"],
        "val_metrics": val,
        **{k: scored[k] for k in (*BASELINE_METRICS, "validation_tokens", "beyond_frequencies")},
        **{k: scored[k] for k in NSP_METRICS if k in scored},
        "history": progress.history,
        "sample": sample,
        "registered_model": registered,
        "model_card": facts,  # what `tokenmill export` of this folder writes in the card
        "resumed_at_step": progress.start if progress.resumed else None,
        "device": run.device_name,
    }
    write_manifest(out_dir / "manifest.json", manifest)
    log.info(
        "train: validation %s; token loss %.4f vs unigram baseline %.4f, accuracy %.4f vs %.4f (most frequent token)",
        "  ".join(f"{n} {v:.4f}" for n, v in val.items()),
        *(scored[k] for k in BASELINE_METRICS),
    )
    if not scored["beyond_frequencies"]:
        log.warning(
            "train: the %s has learned no more than token frequencies: its token loss or accuracy does not clearly "
            "beat the unigram's (train longer, or check train.lr and train.warmup_steps)",
            spec.title,
        )
    if "nsp_beyond_chance" in scored:
        log.info(
            "train: next-sentence accuracy %.4f vs %.4f (always the majority label) on %d validation pairs",
            *(scored[k] for k in ("nsp_accuracy", "nsp_majority", "nsp_pairs")),
        )
        if not scored["nsp_beyond_chance"]:
            log.warning(
                "train: next-sentence prediction is at chance: its accuracy does not clearly beat the majority label's "
                "(train longer; docs/models.md has how long it takes)"
            )
    tracker.stop_system_metrics()


def shut_down(code: int) -> int:
    """Leave together: every rank waits for the others, then the process group goes."""
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return code


class _StopSignals:
    """SIGTERM or SIGINT asks for a checkpoint and a clean exit (status 128 + signal); ranks agree on it at
    step boundaries. ``signum`` is the signal received, 0 while none."""

    def __init__(self):
        self.signum = 0
        from tokenmill.training.launch import STOP_SIGNALS

        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signum = max(self.signum, signum)


def _evaluate(engine, objective, batches, rank: int, world: int, dev) -> dict[str, float]:
    """Every rank scores its share of the same fixed batches, padded to equal counts so that ZeRO-3's
    collective forward passes line up; the (sum, count) metrics are summed over ranks."""
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


def _log_model(tracker, cfg, spec, out_dir: Path, state, arch, facts: dict) -> dict | None:
    """Log the model once, as the run's ``model`` artifact, and register it (``tracking.register_model``) as a new
    version of the run's model; returns the registered name and version.

    The artifact is an MLflow model of the Hugging Face export (``hf/`` beside the model folder): it loads with
    ``mlflow.pyfunc.load_model`` and, for GPT and BERT, ``mlflow.transformers.load_model``. A model with no
    Hugging Face equivalent (e.g. GPT with RoPE) logs its tokenmill model folder instead.
    """
    import tempfile

    from tokenmill.training.hf import export
    from tokenmill.training.hf.mlflow_model import save_mlflow_model
    from tokenmill.training.models import build_model

    model = build_model(arch)
    model.load_state_dict(state)
    try:
        folder = export(model.eval(), out_dir / "tokenizer.json", out_dir / "hf", facts)
    except ValueError as e:
        log.warning("train: no Hugging Face export (%s); logging the tokenmill model folder", e)
        folder = None
    if folder is not None:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            tracker.log_artifacts(save_mlflow_model(folder, spec, Path(tmp) / "model"), "model")
    else:
        for name in ("weights.safetensors", "model.json", "tokenizer.json"):
            tracker.log_artifact(out_dir / name, "model")
    if not cfg.tracking.register_model:
        return None
    name = cfg.tracking.model_name or f"tokenmill-{cfg.run.name}-{spec.name}"
    version = tracker.register_model(name, "model")
    kind = "mlflow" if folder is not None else "tokenmill"
    return {"name": name, "version": version, "artifact": "model", "format": kind} if version else None


def _attention_ids(val_tokens, specials: dict[str, int], framing, n: int = 24) -> list[int]:
    """A short validation snippet to draw attention maps for, framed as the family frames its inputs
    (BERT's start with [CLS])."""
    head = val_tokens.window(0, min(len(val_tokens), n * 4))  # reads only these tokens
    ids = [int(t) for t in head if int(t) not in specials.values()][:n]
    return framing.frame(ids[: n - framing.overhead], specials)


if __name__ == "__main__":
    sys.exit(main())
