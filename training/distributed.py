"""Everything DeepSpeed: the derived DeepSpeed config, process-group start-up and the engine.

Models never import DeepSpeed; this module wraps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from tokenmill.core.config import TrainConfig, check_offload
from tokenmill.training.schedule import learning_rate

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16(dev: torch.device | None = None) -> bool:
    """True when ``dev`` (default: this rank's ``device()``) computes bf16 matmuls natively: a CUDA GPU of compute
    capability 8.0 or later (Ampere, Hopper), or a CPU with AVX512-BF16 or AMX tiles. Elsewhere bf16 is emulated
    and slower than fp32."""
    dev = device() if dev is None else dev
    if dev.type == "cuda":
        return torch.cuda.get_device_capability(dev)[0] >= 8
    if dev.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        return any(
            bool(getattr(cpu, probe, lambda: False)())
            for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        )
    return False


def resolve_precision(train: TrainConfig, agree: bool = True, checkpoint: str | None = None) -> TrainConfig:
    """``train`` with ``precision: auto`` made concrete: bf16 when every rank's device has native bf16
    (``native_bf16``), else fp32; other precisions are returned as they are.

    With ``agree`` and a process group up, the ranks take the minimum of their answers (a collective), so a job
    that spans unlike nodes runs one precision everywhere. ``checkpoint``, the precision of the checkpoint a run
    resumes (``checkpoint_precision``), wins over auto: a run continues as it started, on whatever nodes it resumes;
    a precision written out that contradicts it is a ``ValueError``."""
    import dataclasses

    if checkpoint is not None:
        if train.precision not in ("auto", checkpoint):
            raise ValueError(
                f"the checkpoint this run resumes was trained in {checkpoint}, and train.precision is "
                f"{train.precision}: set train.precision={checkpoint} (or auto) to resume it, or train into another "
                "folder (--out) or with train.resume=false"
            )
        return dataclasses.replace(train, precision=checkpoint)
    if train.precision != "auto":
        return train
    native = native_bf16()
    if agree and torch.distributed.is_available() and torch.distributed.is_initialized():
        (native,) = _all_reduce([float(native)], torch.distributed.ReduceOp.MIN)
    return dataclasses.replace(train, precision="bf16" if native else "fp32")


def batch_sizes(train: TrainConfig, world_size: int) -> tuple[int, int, int]:
    """``(micro, accumulation, global)`` in sequences, checked: global = micro × accumulation × world size."""
    micro = train.micro_batch_size
    if micro < 1:
        raise ValueError(f"train.micro_batch_size must be at least 1, got {micro}")
    if train.global_batch_size is None:
        accum = 1 if train.grad_accum_steps is None else train.grad_accum_steps
    else:
        if train.global_batch_size % (micro * world_size):
            raise ValueError(
                f"train.global_batch_size {train.global_batch_size} is not divisible by micro_batch_size {micro} "
                f"x world size {world_size} = {micro * world_size}; choose a multiple of {micro * world_size}"
            )
        accum = train.global_batch_size // (micro * world_size)
        if train.grad_accum_steps is not None and train.grad_accum_steps != accum:
            raise ValueError(
                f"train.grad_accum_steps {train.grad_accum_steps} contradicts global_batch_size "
                f"{train.global_batch_size} = {micro} x {world_size} x {accum}; set only one of them"
            )
    if accum < 1:
        raise ValueError(f"train.grad_accum_steps must be at least 1, got {accum}")
    return micro, accum, micro * accum * world_size


def deepspeed_config(train: TrainConfig, world_size: int, base_path: str | Path | None = None) -> dict[str, Any]:
    """The DeepSpeed JSON for this run: the base file plus every value derived from ``train``.

    The one place where batch sizes, ZeRO stage, offload, precision and clipping become DeepSpeed
    settings; invalid combinations fail here with the fix in the message.
    """
    if train.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"train.zero_stage must be 0, 1, 2 or 3, got {train.zero_stage}")
    if train.precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {', '.join(PRECISIONS)}, got {train.precision!r}")
    check_offload(train)  # a ConfigError, which is a ValueError
    train = resolve_precision(train, agree=False)  # training's setup() has made the ranks agree already
    if train.grad_clip < 0:
        raise ValueError(f"train.grad_clip must be >= 0 (0 disables clipping), got {train.grad_clip}")
    micro, accum, global_batch = batch_sizes(train, world_size)
    base: dict[str, Any] = {}
    if base_path is not None:
        path = Path(base_path)
        if not path.is_file():
            raise FileNotFoundError(f"train.deepspeed_config {path} does not exist")
        base = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    cfg = dict(base)
    cfg["train_micro_batch_size_per_gpu"] = micro
    cfg["gradient_accumulation_steps"] = accum
    cfg["train_batch_size"] = global_batch
    cfg["gradient_clipping"] = train.grad_clip
    zero = {**base.get("zero_optimization", {}), "stage": zero_stage(train, world_size)}
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    cfg["zero_optimization"] = zero
    cfg["bf16"] = {"enabled": train.precision == "bf16"}
    # fp16 needs loss scaling: dynamic (loss_scale 0) starts at 2^16 and halves on overflow.
    cfg["fp16"] = {
        "enabled": train.precision == "fp16",
        "loss_scale": 0,
        "initial_scale_power": 16,
        "loss_scale_window": 1000,
        "hysteresis": 2,
        "min_loss_scale": 1,
    }
    if train.offload_optimizer:
        # DeepSpeed's CPU Adam runs the offloaded step (AdamW mode, decoupled weight decay).
        cfg["optimizer"] = {
            "type": "AdamW",
            "params": {"lr": train.lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": train.weight_decay},
        }
    return cfg


def zero_stage(train: TrainConfig, world_size: int) -> int:
    """The ZeRO stage the engine runs: ``train.zero_stage``, except 0 for stage 1 or 2 in fp32 on one rank without
    offload.

    Stages 1 and 2 partition the optimizer state and gradients over the data-parallel ranks; with one rank there is
    nothing to partition, and DeepSpeed's ZeRO optimizer still flattens every gradient into its own fp32 buffer and
    copies the weights back each step (a quarter of a CPU step in ``bench/train_throughput.py``). In fp32, stage 0 is
    the plain optimizer on the model's own weights: the same update without the copies. Offloading needs stage >= 1,
    bf16 and fp16 keep their ZeRO master weights, and stage 3 is left as configured.
    """
    stage = train.zero_stage
    train = resolve_precision(train, agree=False)  # one rank: nothing to agree with
    if world_size == 1 and stage in (1, 2) and train.precision == "fp32" and not train.offload_optimizer:
        return 0
    return stage


def init_distributed() -> tuple[int, int]:
    """Join the process group started by torchrun / the deepspeed launcher (gloo on CPU, nccl on GPU)."""
    import deepspeed
    import deepspeed.ops

    # The shared-memory allreduce op would be JIT-compiled (~35 s) at every CPU start and leaks
    # /dev/shm buffers; gloo alone is correct and fast enough for CPU runs.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    for key, default in (
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ):
        os.environ.setdefault(key, default)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        _join_agent_store(backend)
    deepspeed.init_distributed(dist_backend=backend)  # wraps the group already there
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _join_agent_store(backend: str) -> None:
    """Start the process group on torchrun's store, under a prefix of this attempt's own.

    torchrun keeps its store across the restarts of a worker group, and the groups DeepSpeed creates
    (``new_group``) would read the previous attempt's addresses from it: after one rank died, every restarted
    rank waited on a gloo connection to a dead process. A prefix per restart keeps each attempt to its own keys."""
    from datetime import timedelta

    dist = torch.distributed
    timeout = timedelta(minutes=30)
    world = int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=timeout
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"tokenmill/attempt_{attempt}", store)
    dist.init_process_group(backend, store=prefixed, rank=int(os.environ["RANK"]), world_size=world, timeout=timeout)


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def initialize(model: torch.nn.Module, train: TrainConfig, ds_config: dict[str, Any]):
    """Wrap ``model`` in a DeepSpeed engine with AdamW (no decay on norms, biases) and warmup + decay."""
    import deepspeed

    if train.activation_checkpointing:
        checkpoint_blocks(model)
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": train.weight_decay},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = None
    if "optimizer" not in ds_config:
        # The fused kernel (CPU and CUDA) updates each tensor in one pass instead of a dozen elementwise ops.
        optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: (
                learning_rate(
                    step,
                    lr=train.lr,
                    min_lr=train.min_lr,
                    warmup_steps=train.warmup_steps,
                    max_steps=train.max_steps,
                    schedule=train.schedule,
                )
                / train.lr
            ),
        )

    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, model_parameters=groups, lr_scheduler=schedule, config=ds_config
    )
    if engine.zero_optimization_stage() == 0 and engine.dp_world_size == 1:
        # Averaging the gradients over one rank is the identity, but DeepSpeed still flattens them all into one
        # buffer, all-reduces it and copies it back after every backward pass.
        engine.enable_backward_allreduce = False
    return engine


def checkpoint_blocks(model: torch.nn.Module) -> int:
    """Activation checkpointing per block: every module in a ``blocks`` list recomputes its forward pass
    during the backward pass instead of keeping its activations. Returns how many blocks were wrapped.

    Done here, by wrapping, so the models stay plain PyTorch; only training with gradients recomputes.
    """
    from torch.utils.checkpoint import checkpoint

    wrapped = 0
    for name, module in model.named_modules():
        if not (name == "blocks" or name.endswith(".blocks")) or not isinstance(module, torch.nn.ModuleList):
            continue
        for block in module:
            forward = block.forward

            def recomputed(*args, _forward=forward, _block=block, **kwargs):
                if _block.training and torch.is_grad_enabled():
                    return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
                return _forward(*args, **kwargs)

            block.forward = recomputed
            wrapped += 1
    if not wrapped:
        raise ValueError(f"{type(model).__name__} has no 'blocks' list to checkpoint")
    return wrapped


def full_state_dict(engine) -> dict[str, torch.Tensor]:
    """The complete fp32 weights on every rank, gathering ZeRO-3 partitions first (collective: call on all ranks).

    Tensors that share storage in the model (tied embeddings) share it in the copy too.
    """
    import contextlib

    import deepspeed

    model = engine.module
    gather = (
        deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
        if engine.zero_optimization_stage() == 3
        else contextlib.nullcontext()
    )
    with gather:
        copies: dict[int, torch.Tensor] = {}
        state = {}
        for name, t in model.state_dict(keep_vars=False).items():
            ptr = t.data_ptr()
            if ptr not in copies:
                copies[ptr] = t.detach().float().cpu().clone()
            state[name] = copies[ptr]
        return state


# Every tensor that enters a collective is made here, on ``device()``: NCCL has no CPU backend, so a host tensor
# in a collective fails on the first GPU step ("No backend type associated with device type cpu").


def all_reduce_sum(values: list[float]) -> list[float]:
    """``values`` summed over ranks (float64). Collective."""
    return _all_reduce(values, torch.distributed.ReduceOp.SUM)


def all_reduce_max(values: list[float]) -> list[float]:
    """The largest of each value over ranks (float64). Collective."""
    return _all_reduce(values, torch.distributed.ReduceOp.MAX)


def _all_reduce(values: list[float], op) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device())
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=op)
    return t.cpu().tolist()


def all_gather_values(values: list[float]) -> list[list[float]]:
    """Every rank's ``values`` (the same length on each), in rank order (float64). Collective."""
    t = torch.tensor(values, dtype=torch.float64, device=device())
    if not torch.distributed.is_initialized():
        return [t.cpu().tolist()]
    parts = [torch.empty_like(t) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, t)
    return [p.cpu().tolist() for p in parts]


def broadcast_value(value: float) -> float:
    """Rank 0's ``value`` on every rank (float64). Collective."""
    t = torch.tensor([value], dtype=torch.float64, device=device())
    if torch.distributed.is_initialized():
        torch.distributed.broadcast(t, src=0)
    return float(t.item())


def check_shared_folder(folder: str | Path) -> None:
    """Fail on every rank unless every rank sees what every other rank writes in ``folder``: checkpoints
    written to node-local disks would leave ranks disagreeing on where to resume. Collective."""
    import uuid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    nonce = int(broadcast_value(float(uuid.uuid4().int % 2**52)))  # this start's, so old markers do not count
    mine = folder / f".visible-{rank}"
    mine.write_text(f"{nonce}\n")
    torch.distributed.barrier()
    unseen = []
    for other in range(world):
        marker = folder / f".visible-{other}"
        try:
            ok = marker.read_text().strip() == str(nonce)
        except OSError:
            ok = False
        if not ok:
            unseen.append(other)
    blind = all_gather_values([float(len(unseen))])
    torch.distributed.barrier()
    mine.unlink(missing_ok=True)
    if any(n for (n,) in blind):
        ranks = [r for r, (n,) in enumerate(blind) if n]
        raise RuntimeError(
            f"the checkpoint folder {folder} is not shared: rank(s) {ranks} cannot read what the other ranks write "
            f"there{f' (this rank, {rank}, misses ranks {unseen})' if unseen else ''}; put --out (the checkpoints) "
            "on storage every node mounts at the same path"
        )


# --- checkpoints --------------------------------------------------------------------------------


def _safe_globals() -> list:
    """The only non-tensor classes DeepSpeed's checkpoints hold; nothing else may be unpickled."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _use_safe_loading(engine) -> None:
    """Make the engine read checkpoints with ``torch.load(weights_only=True)`` and an explicit allowlist:
    DeepSpeed's own engine unpickles anything (``weights_only=False``)."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(_safe_globals()):
                return torch.load(path, map_location=map_location, weights_only=True)

    engine.checkpoint_engine = SafeCheckpointEngine(getattr(engine, "_config", None))


def engine_precision(engine) -> str:
    """The precision ``engine`` trains in: bf16, fp16 or fp32."""
    return "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"


def checkpoint_precision(directory: str | Path) -> str | None:
    """The precision of the latest checkpoint in ``directory`` (``save_checkpoint`` writes it beside the weights), or
    ``None`` without one. Rank 0 reads it and every rank gets its answer. Collective."""
    directory = Path(directory)
    code = -1.0
    if torch.distributed.get_rank() == 0 and (directory / "latest").is_file():
        marker = directory / (directory / "latest").read_text().strip() / "precision"
        written = marker.read_text().strip() if marker.is_file() else None
        code = float(PRECISIONS.index(written)) if written in PRECISIONS[1:] else -1.0
    code = int(broadcast_value(code))
    return PRECISIONS[code] if code > 0 else None


def save_checkpoint(engine, directory: str | Path, step: int, client_state: dict[str, Any], keep: int = 2) -> Path:
    """Model, optimizer, LR schedule, loss scaler (DeepSpeed) plus ``client_state`` and every RNG state,
    under ``directory/step-NNNNNNN``, and the engine's precision in its ``precision`` file; older checkpoints beyond
    ``keep`` are removed. Collective."""
    import shutil

    directory = Path(directory)
    tag = f"step-{step:07d}"
    state = {
        **client_state,
        "step": step,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }
    engine.save_checkpoint(str(directory), tag=tag, client_state=state)
    torch.distributed.barrier()
    if torch.distributed.get_rank() == 0:
        (directory / tag / "precision").write_text(engine_precision(engine) + "\n")
        for old in sorted(directory.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()
    return directory / tag


def load_checkpoint(engine, directory: str | Path) -> dict[str, Any] | None:
    """Restore the latest checkpoint in ``directory`` into ``engine`` (and the RNGs); its client state,
    or ``None`` when there is none. Collective: rank 0 reads ``latest`` and every rank loads that step, or
    every rank fails, naming the path a rank could not read."""
    directory = Path(directory)
    step = -1.0
    if torch.distributed.get_rank() == 0 and (directory / "latest").is_file():
        tag = (directory / "latest").read_text().strip()
        step = float(tag.removeprefix("step-")) if tag.startswith("step-") and tag[5:].isdigit() else -2.0
    step = int(broadcast_value(step))
    if step == -2:
        raise RuntimeError(f"{directory / 'latest'} does not name a step-NNNNNNN checkpoint")
    if step < 0:
        return None
    tag = f"step-{step:07d}"
    readable = (directory / tag).is_dir() and any((directory / tag).iterdir())
    missing = [r for r, (ok,) in enumerate(all_gather_values([float(readable)])) if not ok]
    if missing:
        raise RuntimeError(
            f"rank(s) {missing} cannot read the checkpoint {directory / tag} that rank 0 resumes from; the "
            "checkpoint folder must be on storage every node mounts at the same path"
        )
    _use_safe_loading(engine)
    try:
        path, state = engine.load_checkpoint(
            str(directory), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise ValueError(
            f"the checkpoint in {directory} was written for a different model than this config "
            "describes; train into another folder (--out) or set train.resume=false"
        ) from e
    if path is None:
        raise RuntimeError(f"could not load the checkpoint {directory / tag}")
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state
