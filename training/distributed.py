"""Everything DeepSpeed: the derived DeepSpeed config, process-group start-up and the engine.

Models never import DeepSpeed; this module wraps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from tokenmill.config import TrainConfig
from training.schedule import warmup_cosine


def deepspeed_config(train: TrainConfig, world_size: int, base_path: str | Path | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON for this run: the base file plus every value derived from ``train``.

    The global batch is ``micro_batch_size × grad_accum_steps × world_size`` sequences.
    """
    if train.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {train.zero_stage}")
    if train.micro_batch_size < 1 or train.grad_accum_steps < 1:
        raise ValueError("train.micro_batch_size and train.grad_accum_steps must be at least 1")
    base: dict[str, Any] = {}
    if base_path is not None:
        path = Path(base_path)
        if not path.is_file():
            raise FileNotFoundError(f"train.deepspeed_config {path} does not exist")
        base = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    cfg = dict(base)
    cfg["train_micro_batch_size_per_gpu"] = train.micro_batch_size
    cfg["gradient_accumulation_steps"] = train.grad_accum_steps
    cfg["train_batch_size"] = train.micro_batch_size * train.grad_accum_steps * world_size
    cfg["gradient_clipping"] = train.grad_clip
    cfg["zero_optimization"] = {**base.get("zero_optimization", {}), "stage": train.zero_stage}
    return cfg


def init_distributed() -> tuple[int, int]:
    """Join the process group started by torchrun / the deepspeed launcher (gloo on CPU, nccl on GPU)."""
    import deepspeed
    import deepspeed.ops

    # The shared-memory allreduce op would be JIT-compiled (~35 s) at every CPU start and leaks
    # /dev/shm buffers; gloo alone is correct and fast enough for CPU runs.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                         ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")):
        os.environ.setdefault(key, default)
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def initialize(model: torch.nn.Module, train: TrainConfig, ds_config: dict[str, Any]):
    """Wrap ``model`` in a DeepSpeed engine with AdamW (no decay on norms, biases) and warmup + cosine."""
    import deepspeed

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train.lr, betas=(0.9, 0.95), eps=1e-8, foreach=False,
    )

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(
            step, lr=train.lr, min_lr=train.min_lr, warmup_steps=train.warmup_steps,
            max_steps=train.max_steps) / train.lr)

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=ds_config)
    return engine


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """The complete fp32 weights on every rank, gathering ZeRO-3 partitions first (collective: call on all ranks).

    Tensors that share storage in the model (tied embeddings) share it in the copy too.
    """
    import contextlib

    import deepspeed

    model = engine.module
    gather = (deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
              if engine.zero_optimization_stage() == 3 else contextlib.nullcontext())
    with gather:
        copies: dict[int, torch.Tensor] = {}
        state = {}
        for name, t in model.state_dict(keep_vars=False).items():
            ptr = t.data_ptr()
            if ptr not in copies:
                copies[ptr] = t.detach().float().cpu().clone()
            state[name] = copies[ptr]
        return state


def all_reduce_sum(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device())
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.cpu().tolist()
