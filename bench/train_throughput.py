"""Tokens/s of a tokenmill GPT training step on CPU versus a plain Hugging Face GPT-2 loop, same run.

    .venv/bin/python bench/train_throughput.py [--layers 6 --width 384 --heads 6 --seq 256 --batch 8
        --vocab 8192] [--warmup 2 --steps 2 --repeats 16] [--zero 2] [--threads N] [--compile]

tokenmill: what ``training/train.py`` does per step, single process: ``CausalLMObjective.batch``,
``objective.loss(engine, batch)`` (GPT's fused output layer and loss), ``engine.backward``, ``engine.step`` (torch's
fused AdamW) on the DeepSpeed engine of
``tokenmill.training.distributed.initialize`` (AdamW, warmup + cosine, gradient clipping 1.0, ``train.zero_stage``
``--zero``: by default the product's default, 2, which ``distributed.zero_stage`` runs as stage 0 on one fp32 rank).
Peer: transformers' ``GPT2LMHeadModel`` (its default SDPA attention) with
the same initial weights and batches, ``torch.optim.AdamW`` with the same parameter groups and
hyper-parameters, the same schedule, ``clip_grad_norm_(1.0)``, cross entropy on its logits. Both
fp32, tied embeddings, biases, GELU-tanh, learned positions, no dropout, the same threads; the final
losses of both are printed and agree (same weights, same batches, same math).

After ``--warmup`` untimed steps each, every repeat runs one untimed then ``--steps`` timed steps
of each side, the side going first alternating (fair under a drifting load; whole blocks, because
a real run never interleaves two models' allocations). Many short repeats (default 16 x 2 steps) make a
distribution of paired ratios (each repeat's two sides ran seconds apart, under the same load): the bench
reports their median with the interquartile range, per wall-clock second and per CPU-second (all threads of this
process). A shared machine widens the spread; it does not bias the paired ratio much, but no verdict is given when
the spread is wider than the effect.

Goal (docs/benchmarks.md): tokenmill's tokens/s >= 1.2x the peer's. The last line says ``met`` (first quartile of
the per-repeat ratios >= 1.2), ``not met`` (third quartile < 1.2), or ``undecided`` with the reason: the
interquartile range straddles 1.2, or is wider than the median's distance from 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
import warnings
from pathlib import Path

from benchlib.verdict import iqr_verdict, quartiles  # bench/benchlib/: the script's folder is on sys.path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
GOAL_RATIO = 1.2  # tokenmill's tokens/s over the HF peer's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_stream(n: int, vocab: int, seed: int = 0):
    """Random documents of 20-400 tokens ending in EOT (id 0); real text would not change the FLOPs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(2, vocab, size=n, dtype=np.int64)
    ends = np.cumsum(rng.integers(20, 400, size=n // 20))
    tokens[ends[ends < n]] = 0
    return tokens


class TokenmillSide:
    """The training loop of ``training/train.py``: objective batch → objective loss → engine backward/step."""

    name = "tokenmill (DeepSpeed engine)"

    def __init__(self, model, objective, train_cfg, zero: int):
        from tokenmill.training import distributed

        ds_config = distributed.deepspeed_config(train_cfg, 1, REPO_ROOT / "conf" / "deepspeed" / "base.json")
        self.engine = distributed.initialize(model, train_cfg, ds_config)
        self.engine.train()
        self.objective, self.batch_size, self.step_no = objective, train_cfg.micro_batch_size, 0
        self.loss = float("nan")

    def step(self) -> int:
        batch = self.objective.batch(self.step_no, self.batch_size)
        loss, metrics = self.objective.loss(self.engine, batch)
        self.engine.backward(loss)
        self.engine.step()
        self.step_no += 1
        self.loss = metrics["loss"][0] / metrics["loss"][1]
        return self.objective.tokens(batch)


class HFSide:
    """A plain PyTorch loop around ``GPT2LMHeadModel``: what one would write without tokenmill."""

    name = "HF GPT2LMHeadModel + AdamW"

    def __init__(self, model, objective, train_cfg):
        import torch

        from tokenmill.training.schedule import learning_rate

        self.model = model.train()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=train_cfg.lr,
            betas=(0.9, 0.95),
            eps=1e-8,
        )
        t = train_cfg
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt,
            lambda s: (
                learning_rate(
                    s, lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps, max_steps=t.max_steps, schedule=t.schedule
                )
                / t.lr
            ),
        )
        self.clip = train_cfg.grad_clip
        self.objective, self.batch_size, self.step_no = objective, train_cfg.micro_batch_size, 0
        self.loss = float("nan")

    def step(self) -> int:
        import torch
        import torch.nn.functional as F

        batch = self.objective.batch(self.step_no, self.batch_size)
        x, y = batch["input_ids"], batch["labels"]
        logits = self.model(input_ids=x).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        if self.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step_no += 1
        self.loss = loss.item()
        return x.numel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side before the first repeat")
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per repeat")
    p.add_argument("--repeats", type=int, default=16)
    p.add_argument(
        "--zero",
        type=int,
        default=None,
        choices=(0, 1, 2),
        help="train.zero_stage of tokenmill's side (default: the product's, TrainConfig.zero_stage)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--compile", action="store_true", help="torch.compile tokenmill's model (compile time excluded)")
    args = p.parse_args()

    from tokenmill.core.env import prepare_environment

    prepare_environment()
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    import logging

    import torch
    from transformers import GPT2LMHeadModel

    from tokenmill.core.config import TrainConfig
    from tokenmill.training import distributed
    from tokenmill.training.hf import gpt2
    from tokenmill.training.models.gpt import GPT, GPTConfig
    from tokenmill.training.objectives import CausalLMObjective

    if args.zero is None:
        args.zero = TrainConfig().zero_stage
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    distributed.init_distributed()
    cfg = GPTConfig(
        vocab_size=args.vocab,
        block_size=args.seq,
        n_layer=args.layers,
        n_head=args.heads,
        n_embd=args.width,
        dropout=0.0,
        bias=True,
        tie_embeddings=True,
        position="learned",
        activation="gelu_tanh",
    )
    train_cfg = TrainConfig(
        nproc=1, zero_stage=args.zero, micro_batch_size=args.batch, grad_accum_steps=1, max_steps=1000, grad_clip=1.0
    )
    objective = CausalLMObjective(token_stream(2_000_000, args.vocab), args.seq, seed=0)

    torch.manual_seed(0)
    ours = GPT(cfg)
    hf = GPT2LMHeadModel(gpt2.hf_config(cfg, {"eot": 0, "pad": 1}))
    hf.load_state_dict(gpt2.to_hf_state(ours.state_dict(), cfg), strict=True)
    n_params = ours.num_params()
    compile_s = None
    if args.compile:
        ours = torch.compile(ours)
    sides = [TokenmillSide(ours, objective, train_cfg, args.zero), HFSide(hf, objective, train_cfg)]

    print(
        f"model: GPT-2-like, {args.layers} layers x {args.width} wide, {args.heads} heads, vocab {args.vocab}, "
        f"{n_params / 1e6:.1f}M parameters (tied), biases, GELU-tanh, fp32",
        flush=True,
    )
    print(
        f"step: batch {args.batch} x seq {args.seq} = {args.batch * args.seq} tokens, AdamW (0.9, 0.95), "
        f"weight decay {train_cfg.weight_decay}, clip {train_cfg.grad_clip}; tokenmill train.zero_stage {args.zero} "
        f"(runs as ZeRO-{sides[0].engine.zero_optimization_stage()}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, HF attention "
        f"{hf.config._attn_implementation}",
        flush=True,
    )
    for side in sides:
        started = time.perf_counter()
        for _ in range(args.warmup):
            side.step()
        if side is sides[0] and args.compile:
            compile_s = time.perf_counter() - started
    if compile_s is not None:
        print(f"warm-up of tokenmill's side including torch.compile: {compile_s:.1f} s", flush=True)

    rates: dict[str, list[float]] = {side.name: [] for side in sides}
    cpu_rates: dict[str, list[float]] = {side.name: [] for side in sides}
    for r in range(args.repeats):
        for side in sides if r % 2 == 0 else sides[::-1]:  # who goes first alternates: fair under drifting load
            side.step()  # untimed: lets the allocator settle after the other side's step, as in a real run
            tokens = seconds = cpu = 0.0
            for _ in range(args.steps):
                started, started_cpu = time.perf_counter(), time.process_time()
                tokens += side.step()
                seconds += time.perf_counter() - started
                cpu += time.process_time() - started_cpu
            rates[side.name].append(tokens / seconds)
            cpu_rates[side.name].append(tokens / cpu)
        print(
            f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n} {v[-1]:,.0f} tokens/s" for n, v in rates.items()),
            flush=True,
        )

    per_repeat = [a / b for a, b in zip(*rates.values())]
    per_repeat_cpu = [a / b for a, b in zip(*cpu_rates.values())]
    ours_rate, hf_rate = (statistics.median(rates[s.name]) for s in sides)
    q1, ratio, q3 = quartiles(per_repeat)
    c1, cpu_ratio, c3 = quartiles(per_repeat_cpu)
    print(f"\n{'':30}{'tokens/s':>10}{'q1':>8}{'q3':>8}{'tokens/CPU-s':>14}{'final loss':>12}")
    for side in sides:
        v = rates[side.name]
        lo, mid, hi = quartiles(v)
        print(
            f"{side.name:30}{mid:10,.0f}{lo:8,.0f}{hi:8,.0f}{statistics.median(cpu_rates[side.name]):14,.0f}{side.loss:12.4f}"
        )
    print(
        f"\nratio tokenmill / HF, tokens per second: median {ratio:.2f}x, IQR {q1:.2f}-{q3:.2f} "
        f"(range {min(per_repeat):.2f}-{max(per_repeat):.2f}) over {args.repeats} paired repeats x {args.steps} steps; "
        f"per CPU-second: median {cpu_ratio:.2f}x, IQR {c1:.2f}-{c3:.2f}"
    )
    torch.distributed.destroy_process_group()
    verdict = iqr_verdict(per_repeat, GOAL_RATIO)
    print(
        f"bench train_throughput: {ratio:.2f}x the HF peer's tokens/s [IQR {q1:.2f}-{q3:.2f}] ({ours_rate:,.0f} vs "
        f"{hf_rate:,.0f} tokens/s, medians of {args.repeats} paired repeats x {args.steps} steps), {cpu_ratio:.2f}x "
        f"per CPU-second [IQR {c1:.2f}-{c3:.2f}], {args.layers} layers x {args.width}, batch {args.batch} x "
        f"{args.seq} | goal >= {GOAL_RATIO}x the peer's tokens/s: {verdict}"
    )


if __name__ == "__main__":
    main()
