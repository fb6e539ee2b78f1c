"""``tokenmill plan``: choosing the right options before renting the GPUs.

For a model flavour and a cluster it estimates what the run will need and cost:

* **parameters** (``count_parameters``) and **training FLOPs per token** (``tokenmill.training.flops``);
* **model-state memory per GPU** under each ZeRO stage, using the ZeRO paper's accounting
  (Rajbhandari et al. 2020, section 3.1) for mixed-precision Adam, Ψ parameters:
  ``2Ψ`` bf16/fp16 parameters + ``2Ψ`` bf16/fp16 gradients + ``12Ψ`` optimizer states (fp32
  master parameters, momentum and variance: K = 12) = ``16Ψ`` bytes. Over N_d GPUs, stage 1
  partitions the optimizer states (``4Ψ + 12Ψ/N_d``), stage 2 also the gradients
  (``2Ψ + 14Ψ/N_d``), stage 3 also the parameters (``16Ψ/N_d``). Training in fp32 (no mixed
  precision) is assumed to hold ``4Ψ`` parameters + ``4Ψ`` gradients + ``8Ψ`` Adam moments (no
  separate master copy): also 16Ψ, split 4 + 4 + 8.
  CPU offload (DeepSpeed ``offload_optimizer``, ZeRO 1-3; with ZeRO 3 also ``offload_param``)
  moves each GPU's share of the optimizer states, and at stage 3 its share of the parameters,
  to host memory: the report gives the GPU and the CPU bytes per GPU separately. Not counted:
  the CUDA context, DeepSpeed's communication buckets, the full layer ZeRO-3 gathers while it
  computes, and fragmentation; hence a GPU counts as a comfortable fit only below 90% of its memory.
* **activation memory per GPU** at the micro-batch, after Korthikanti et al. 2022 ("Reducing
  activation recomputation in large transformer models", section 4): per layer, 16-bit,
  without recomputation, ``s·b·h·(34 + 5·a·s/h)`` bytes (s sequence, b micro-batch, h width,
  a heads; 34 = 18 + 4·d_ff/h for d_ff = 4h: the form used here, ``s·b·(18h + 4·d_ff)``, so other
  widths count right; a gated MLP keeps ``6·d_ff`` instead of ``4·d_ff``). The ``5·a·s²·b``
  part is the attention score matrices, which only *eager* attention stores; the fused kernels
  these models use on GPU (``scaled_dot_product_attention``: flash / memory-efficient) keep no
  s×s matrix, so the planner sizes with ``s·b·(18h + 4·d_ff)`` per layer and shows the eager figure beside it.
  With full activation checkpointing (per block, ``train.activation_checkpointing``) each layer
  keeps only its ``2·s·b·h`` input, plus one layer's full activations while it is recomputed.
  The loss's fp32 logits add ``4·s·b·V`` (Korthikanti's ``4sbv``). fp32 training doubles the
  16-bit figures. Encoder-decoders: encoder layers at s = S; decoder layers at s = U plus a
  cross-attention block (``~13·U·b·h``, its key/values ``4·S·b·h``, scores ``5·a·U·S·b`` eager).
* the **compute-optimal token budget**: 20 tokens per parameter (Hoffmann et al. 2022,
  "Chinchilla"), and the **wall time** for ``tokens`` (default: that budget) at the given MFU:
  ``flops_per_token · tokens / (peak · gpus · mfu)``, peak from ``flops.PEAK_FLOPS``.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

from tokenmill.training import flops as F
from tokenmill.training.families import FAMILIES, spec_of

CHINCHILLA_TOKENS_PER_PARAM = 20
FIT_HEADROOM = 0.9  # "fits" below 90% of the GPU's memory; "tight" up to 100%
GiB = 1024**3

# Nominal memory per GPU, GiB (the datasheets' "GB" of HBM/GDDR are binary gigabytes; CUDA shows a
# little less). Keys as in flops.PEAK_FLOPS; the A100 and V100 come in two sizes, told apart by name.
GPU_MEMORY_GIB: dict[str, float] = {
    "H100 SXM": 80,
    "H100 PCIe": 80,
    "H200": 141,
    "A100 40GB": 40,
    "A100 80GB": 80,
    "L40S": 48,
    "L40": 48,
    "L4": 24,
    "A10": 24,
    "RTX 4090": 24,
    "V100 16GB": 16,
    "V100 32GB": 32,
    "T4": 16,
}

# (parameters, gradients, optimizer states) bytes per parameter, before partitioning.
_STATE_BYTES = {"bf16": (2, 2, 12), "fp16": (2, 2, 12), "fp32": (4, 4, 8), "tf32": (4, 4, 8)}


def gpu_memory_bytes(gpu: str) -> int | None:
    """Nominal memory of one GPU named ``gpu`` (``"H100 SXM"``, ``"NVIDIA A100-SXM4-40GB"``...), or None."""
    key = F.gpu_key(gpu)
    if key is None:
        return None
    if key == "A100":
        key = "A100 40GB" if re.search(r"40\s*gb", gpu, re.I) else "A100 80GB"
    elif key.startswith("V100"):
        key = "V100 16GB" if re.search(r"16\s*gb", gpu, re.I) else "V100 32GB"
    gib = GPU_MEMORY_GIB.get(key)
    return None if gib is None else int(gib * GiB)


@dataclass
class StageMemory:
    """Bytes per GPU for one ZeRO stage (model states under the plan's offload setting, then totals)."""

    stage: int
    params: float  # on the GPU
    grads: float
    optimizer: float
    cpu: float  # host memory per GPU (offloaded optimizer states, and stage-3 parameters)
    activations: float
    offloaded: bool  # False for stage 0 even when offload was asked (DeepSpeed needs ZeRO >= 1)

    @property
    def states(self) -> float:
        return self.params + self.grads + self.optimizer

    @property
    def total(self) -> float:
        return self.states + self.activations


def model_state_bytes(
    params: int, stage: int, gpus: int, dtype: str = "bf16", offload: bool = False
) -> tuple[float, float, float, float]:
    """``(params, grads, optimizer, cpu)`` bytes per GPU for ``params`` parameters, ZeRO ``stage``."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")
    if offload and stage == 0:
        raise ValueError("CPU offload needs ZeRO stage 1, 2 or 3 (stage 0 keeps the optimizer whole on every GPU)")
    p, g, o = (b * params for b in _STATE_BYTES[F.normalize_dtype(dtype)])
    n = gpus
    if stage >= 1:
        o /= n
    if stage >= 2:
        g /= n
    if stage >= 3:
        p /= n
    cpu = 0.0
    if offload:
        cpu, o = o, 0.0
        if stage == 3:
            cpu, p = cpu + p, 0.0
    return p, g, o, cpu


def activation_bytes(
    arch,
    micro_batch: int,
    seq_len: int,
    target_len: int | None = None,
    *,
    dtype: str = "bf16",
    checkpointing: bool = False,
    eager: bool = False,
) -> float:
    """Activation bytes per GPU for one micro-batch (see the module docstring for the formulas)."""
    spec = spec_of(arch)
    C, H, Q, D_FF, V, gated = F._dims(arch)
    b = micro_batch
    mlp = (6 if gated else 4) * D_FF  # per position: fc output (+ gate and product) and the proj input

    def layer(s: int) -> float:  # one self-attention + MLP layer, 16-bit, Korthikanti et al.
        return s * b * (18 * C + mlp) + (5 * H * s * s * b if eager else 0)

    def cross(u: int, s_src: int) -> float:  # a decoder's cross-attention block
        return 13 * u * b * C + 4 * s_src * b * C + (5 * H * u * s_src * b if eager else 0)

    if not spec.encoder_decoder:
        s, L = seq_len, arch.n_layer
        full = [layer(s)] * L
        kept = [2 * s * b * C] * L
        logits_len = s
    else:
        S, U = seq_len, target_len
        Ld = arch.n_decoder_layer or arch.n_layer
        full = [layer(S)] * arch.n_layer + [layer(U) + cross(U, S)] * Ld
        kept = [2 * S * b * C] * arch.n_layer + [2 * U * b * C] * Ld
        logits_len = U
    stored = sum(kept) + max(full) if checkpointing else sum(full)
    scale = 2 if F.normalize_dtype(dtype) in ("fp32", "tf32") else 1
    return scale * stored + 4 * logits_len * b * V


@dataclass
class Plan:
    model: str
    family: str
    params: int
    matmul_params: int
    seq_len: int
    target_len: int | None  # encoder-decoders: decoder length; seq_len is then the encoder input length
    flops_per_token: float
    gpus: int
    zero: int
    offload: bool
    micro_batch: int
    dtype: str
    gpu: str
    gpu_memory: int | None  # bytes per GPU, None when the GPU is not in the table
    peak_flops: float | None  # dense FLOP/s of one GPU at dtype
    mfu: float
    activation_checkpointing: bool
    activations: float  # bytes per GPU (fused attention), what the stage rows use
    activations_eager: float  # the same with eager attention's s×s score matrices
    stages: list[StageMemory] = field(default_factory=list)
    chinchilla_tokens: float = 0.0
    tokens: float = 0.0
    tokens_from_chinchilla: bool = True

    @property
    def chosen(self) -> StageMemory:
        return self.stages[self.zero]

    @property
    def total_flops(self) -> float:
        return self.flops_per_token * self.tokens

    @property
    def tokens_per_s(self) -> float | None:
        if self.peak_flops is None:
            return None
        return self.peak_flops * self.gpus * self.mfu / self.flops_per_token

    @property
    def wall_seconds(self) -> float | None:
        rate = self.tokens_per_s
        return None if rate is None else self.tokens / rate

    def fits(self, row: StageMemory) -> str:
        """``yes`` below 90% of the GPU's memory, ``tight`` up to 100%, ``no`` above; ``?`` if unknown."""
        if self.gpu_memory is None:
            return "?"
        if row.total <= FIT_HEADROOM * self.gpu_memory:
            return "yes"
        return "tight" if row.total <= self.gpu_memory else "no"

    def render(self) -> str:
        mem = f"{self.gpu_memory / GiB:.0f} GiB" if self.gpu_memory else "memory unknown"
        lengths = (
            f"{self.seq_len} input + {self.target_len} target tokens per example"
            if self.target_len is not None
            else f"{self.seq_len} tokens per sequence"
        )
        n = self.matmul_params
        if self.target_len is None:
            attention = self.flops_per_token - 6 * n
            split = f" = 6N {_flop(6 * n)} + attention {_flop(attention)}"
        else:
            split = " (per input+target token)"
        offload = ", CPU offload" if self.offload else ""
        lines = [
            f"plan: {self.model} ({self.family}) on {self.gpus} x {self.gpu} ({mem}), ZeRO-{self.zero}{offload}, "
            f"{self.dtype}",
            f"  parameters        {_count(self.params)} (N in matmuls: {_count(n)})",
            f"  sequence          {lengths}, micro-batch {self.micro_batch} per GPU"
            + (", activation checkpointing" if self.activation_checkpointing else ""),
            f"  FLOPs per token   {_flop(self.flops_per_token)}{split}",
            "",
            f"memory per GPU (GiB; ZeRO paper accounting, {self._state_note()}; "
            f"activations {'with' if self.activation_checkpointing else 'without'} checkpointing)",
            f"  {'ZeRO':<6}{'params':>9}{'grads':>9}{'optim':>9}{'activ':>9}{'total':>9}{'CPU':>9}  fits {mem}",
        ]
        for row in self.stages:
            mark = "*" if row.stage == self.zero else " "
            note = "  (offload needs ZeRO >= 1)" if self.offload and not row.offloaded else ""
            lines.append(
                f"{mark} {row.stage:<6}{_gib(row.params):>9}{_gib(row.grads):>9}{_gib(row.optimizer):>9}"
                f"{_gib(row.activations):>9}{_gib(row.total):>9}{_gib(row.cpu):>9}  {self.fits(row)}{note}"
            )
        lines.append(
            f"  activations: {_gib(self.activations)} GiB with fused attention (SDPA), "
            f"{_gib(self.activations_eager)} GiB if the s x s scores are stored (eager)"
        )
        lines.append(
            f"  CPU column: host memory per GPU; x {self.gpus} GPUs = {_gib(self.chosen.cpu * self.gpus)} "
            f"GiB for ZeRO-{self.zero}. Not counted: CUDA context, communication buffers, fragmentation"
            + (", the layer ZeRO-3 gathers." if self.zero == 3 else ".")
        )
        lines.append(f"  {self.advice()}")
        lines += ["", "compute"]
        lines.append(
            f"  Chinchilla budget {_count(self.chinchilla_tokens)} tokens "
            f"({CHINCHILLA_TOKENS_PER_PARAM} per parameter, Hoffmann et al. 2022)"
        )
        source = "the Chinchilla budget" if self.tokens_from_chinchilla else "given"
        lines.append(f"  tokens            {_count(self.tokens)} ({source})")
        lines.append(f"  total             {_flop(self.total_flops)} ({self.total_flops:.3g} FLOP)")
        if self.peak_flops is None:
            lines.append(
                f"  peak              unknown for {self.gpu!r} at {self.dtype}: pass --peak-tflops "
                "for a wall-time estimate"
            )
        else:
            lines.append(
                f"  peak              {self.peak_flops / 1e12:.1f} TFLOP/s dense per GPU x {self.gpus} "
                f"at MFU {self.mfu:.0%} = {self.peak_flops * self.gpus * self.mfu / 1e12:.1f} TFLOP/s"
            )
            lines.append(f"  throughput        {self.tokens_per_s:,.0f} tokens/s")
            lines.append(f"  wall time         {_duration(self.wall_seconds)}")
        return "\n".join(lines)

    def advice(self) -> str:
        """One line on which stages fit and what to change when none does."""
        if self.gpu_memory is None:
            return f"GPU memory of {self.gpu!r} unknown: compare the totals with its memory yourself."
        fitting = [row.stage for row in self.stages if self.fits(row) == "yes"]
        if fitting:
            text = f"lowest stage that fits: ZeRO-{fitting[0]} (less partitioning, less communication)"
            if self.fits(self.chosen) != "yes":
                text += f"; ZeRO-{self.zero} does not"
            return text
        hints = []
        if self.gpus == 1:
            hints.append("more GPUs (with one GPU ZeRO partitions nothing)")
        else:
            hints.append("more GPUs")
        if not self.offload:
            hints.append("--offload")
        if not self.activation_checkpointing:
            hints.append("--activation-checkpointing")
        if self.micro_batch > 1:
            hints.append("a smaller --micro-batch (with more gradient accumulation)")
        return "no stage fits: try " + ", ".join(hints)

    def _state_note(self) -> str:
        p, g, o = _STATE_BYTES[self.dtype]
        what = "bf16/fp16 params + grads, fp32 Adam" if p == 2 else "fp32 params + grads + Adam moments"
        return f"{p}+{g}+{o} = {p + g + o} bytes/param: {what}"


def plan(
    model_cfg,
    *,
    gpus: int,
    zero: int,
    offload: bool = False,
    micro_batch: int = 1,
    seq_len: int | None = None,
    dtype: str = "bf16",
    gpu: str = "H100 SXM",
    mfu: float = 0.4,
    tokens: float | None = None,
    activation_checkpointing: bool = False,
    target_len: int | None = None,
    peak: float | None = None,
) -> Plan:
    """Estimate parameters, FLOPs, memory per GPU for each ZeRO stage and wall time for ``model_cfg``
    (a ``ModelConfig``) on ``gpus`` x ``gpu``. ``peak`` overrides the table's FLOP/s per GPU."""
    from tokenmill.training.models import architecture, count_parameters

    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu must be in (0, 1], got {mfu}")
    if tokens is not None and tokens <= 0:
        raise ValueError(f"tokens must be positive, got {tokens}")
    dtype = F.normalize_dtype(dtype)
    model_state_bytes(1, zero, gpus, dtype, offload)  # validates zero and offload
    arch = architecture(model_cfg)
    spec = spec_of(arch)
    family = spec.name
    seq = seq_len or arch.block_size
    if spec.encoder_decoder:
        seq, target = F._encoder_decoder_lengths(arch, seq, target_len)
    elif target_len is not None:
        raise ValueError(f"target_len applies to encoder-decoder families, not {family}")
    else:
        target = None
    params = count_parameters(arch)
    act = activation_bytes(arch, micro_batch, seq, target, dtype=dtype, checkpointing=activation_checkpointing)
    act_eager = activation_bytes(
        arch, micro_batch, seq, target, dtype=dtype, checkpointing=activation_checkpointing, eager=True
    )
    stages = []
    for stage in range(4):
        off = offload and stage > 0
        p, g, o, cpu = model_state_bytes(params, stage, gpus, dtype, off)
        stages.append(StageMemory(stage, p, g, o, cpu, act, off))
    chinchilla = float(CHINCHILLA_TOKENS_PER_PARAM * params)
    return Plan(
        model=model_cfg.flavor or family,
        family=family,
        params=params,
        matmul_params=F.matmul_parameters(arch)["total"],
        seq_len=seq,
        target_len=target,
        flops_per_token=F.flops_per_token(arch, seq, target),
        gpus=gpus,
        zero=zero,
        offload=offload,
        micro_batch=micro_batch,
        dtype=dtype,
        gpu=gpu,
        gpu_memory=gpu_memory_bytes(gpu),
        peak_flops=F.peak_flops(gpu, dtype, override=peak),
        mfu=mfu,
        activation_checkpointing=activation_checkpointing,
        activations=act,
        activations_eager=act_eager,
        stages=stages,
        chinchilla_tokens=chinchilla,
        tokens=float(tokens) if tokens else chinchilla,
        tokens_from_chinchilla=tokens is None,
    )


# --- formatting ---------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / GiB:.2f}"


def _count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _flop(n: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days ({seconds / 3600:,.0f} hours)"


def parse_count(text: str) -> float:
    """``"2.5e9"``, ``"300M"``, ``"10B"``, ``"1.4T"`` → a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbt]?)\s*", str(text), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 2.5e9, 300M, 10B, 1.4T)")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]


# --- command line -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tokenmill plan`` options."""
    from tokenmill.training.models.flavors import FLAVORS

    parser.add_argument("--model", required=True, metavar="FLAVOUR", help=f"a model flavour ({', '.join(FLAVORS)})")
    parser.add_argument("--family", choices=list(FAMILIES), help="the family, for flavours that fit several (debug)")
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs in total (default 1)")
    parser.add_argument("--zero", type=int, choices=[0, 1, 2, 3], default=2, help="ZeRO stage (default 2)")
    parser.add_argument(
        "--offload", action="store_true", help="CPU offload: optimizer states (ZeRO 1-3), and parameters with ZeRO 3"
    )
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per forward (default 1)")
    parser.add_argument(
        "--seq-len", type=int, help="sequence length (encoder-decoders: input length); default the flavour's block_size"
    )
    parser.add_argument(
        "--target-len", type=int, help="encoder-decoders: target length (default: span corruption's for --seq-len)"
    )
    parser.add_argument(
        "--dtype", default="bf16", choices=["bf16", "fp16", "tf32", "fp32"], help="training precision (default bf16)"
    )
    parser.add_argument("--gpu", default="H100 SXM", help=f"GPU model ({', '.join(F.PEAK_FLOPS)}; default H100 SXM)")
    parser.add_argument("--peak-tflops", type=float, help="dense peak TFLOP/s per GPU, overriding the table")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to assume (default 0.4)")
    parser.add_argument(
        "--tokens",
        type=parse_count,
        help="training tokens, e.g. 10B (default: the Chinchilla budget, 20 per parameter)",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in the backward pass",
    )


def run(args: argparse.Namespace) -> int:
    """Print the plan for parsed ``args``; 0 on success, 2 with a message on stderr for bad options."""
    from tokenmill.core.config import ModelConfig

    try:
        result = plan(
            ModelConfig(family=args.family, flavor=args.model),
            gpus=args.gpus,
            zero=args.zero,
            offload=args.offload,
            micro_batch=args.micro_batch,
            seq_len=args.seq_len,
            dtype=args.dtype,
            gpu=args.gpu,
            mfu=args.mfu,
            tokens=args.tokens,
            activation_checkpointing=args.activation_checkpointing,
            target_len=args.target_len,
            peak=args.peak_tflops * 1e12 if args.peak_tflops else None,
        )
    except ValueError as e:
        print(f"tokenmill plan: {e}", file=sys.stderr)
        return 2
    print(result.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tokenmill plan", description="memory, FLOPs and wall time of a training run before you start it"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
