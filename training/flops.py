"""Training FLOPs per token, the peak FLOP/s of common GPUs, and model FLOPs utilisation (MFU).

FLOPs are counted the way PaLM (Chowdhery et al. 2022, appendix B) counts "model FLOPs": the
matrix multiplies of the forward pass (2 FLOPs per multiply-add), times 3 for forward + backward
(the backward pass computes gradients for both the inputs and the weights of every matmul, about
twice the forward's work). Recomputation under activation checkpointing is *not* counted: MFU
measures useful work, not what the hardware happened to do.

**N, the parameters in the 6·N term**, are the weights of the matrix multiplies a token goes
through: every ``nn.Linear`` weight of the layers, plus the output (vocabulary) projection,
counted once whether or not it is tied to the input embedding. Left out: embedding lookups
(token, position, segment and T5's relative-bias tables: a lookup multiplies nothing), and
biases and norm weights (O(d) FLOPs per token against O(d²) for the matmuls). This is the
same N nanoGPT's PaLM-style MFU uses up to those biases and norms. ``matmul_parameters``
returns it by part; ``count_parameters`` (all parameters) is what memory is sized by.

The attention term ``12·L·H·Q·T``: per layer, the scores ``QKᵀ`` and the weighted values ``AV``
each cost ``2·H·Q`` FLOPs per (query, key) pair forward, so ``4·H·Q·T`` per query over ``T`` keys
and ``12·H·Q·T`` with the backward. Like PaLM we count every key for every query, even under a
causal mask that makes half of them unused (a dense kernel computes them; flash attention skips
them, so a causal model's attention share is an upper bound).

Peak FLOP/s are the vendors' *dense* numbers. Datasheets quote tensor-core throughput "with
sparsity" (2:4 structured sparsity, which dense training never uses); those are 2x the dense
figure and would halve every MFU.
"""

from __future__ import annotations

import os
import re

from tokenmill.training.families import encoder_decoders, spec_of

# --- FLOPs per token ----------------------------------------------------------------------------


def _dims(arch) -> tuple[int, int, int, int, int, bool]:
    """``(d_model, n_head, d_head, d_ff, vocab, gated)`` of a family config."""
    C, H = arch.n_embd, arch.n_head
    Q = getattr(arch, "d_head", None) or C // H
    F = arch.d_ff or 4 * C
    gated = str(getattr(arch, "activation", "")).startswith("gated")
    return C, H, Q, F, arch.vocab_size, gated


def matmul_parameters(arch) -> dict[str, int]:
    """The matmul weights (the N of ``6·N``) of a family config, by part.

    Keys: ``layers`` (decoder-only / encoder-only stacks) or ``encoder``, ``decoder`` and
    ``cross_kv`` (the cross-attention key/value projections, which run on the *encoder's*
    positions), plus ``head`` (the output projection; BERT's also has the MLM transform ``d×d``)
    and ``total``.
    """
    spec = spec_of(arch)
    C, H, Q, F, V, gated = _dims(arch)
    inner = H * Q
    self_attn = 4 * C * inner  # fused q, k, v (3·C·inner) and the output projection (inner·C)
    mlp = (3 if gated else 2) * C * F  # fc (+ gate) and proj
    parts: dict[str, int] = {}
    if not spec.encoder_decoder:
        parts["layers"] = arch.n_layer * (self_attn + mlp)
        # BERT: the MLM head's d×d transform before the vocabulary projection. Its pooler and NSP
        # classifier run once per sequence on the [CLS] position: left out (< 0.01% of the FLOPs).
        parts["head"] = V * C + (C * C if spec.head_transform else 0)
    else:
        n_dec = arch.n_decoder_layer or arch.n_layer
        parts["encoder"] = arch.n_layer * (self_attn + mlp)
        parts["decoder"] = n_dec * (self_attn + 2 * C * inner + mlp)  # + cross-attention q and out
        parts["cross_kv"] = n_dec * 2 * C * inner
        parts["head"] = V * C
    parts["total"] = sum(parts.values())
    return parts


def _encoder_decoder_lengths(arch, input_len: int | None, target_len: int | None) -> tuple[int, int]:
    S = input_len or arch.block_size
    if target_len is None:
        from tokenmill.training.objectives import span_corruption_lengths

        target_len = span_corruption_lengths(S)[1]
    return S, target_len


def flops_per_example(arch, input_len: int | None = None, target_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) of one encoder-decoder example: ``input_len`` source
    tokens (default ``block_size``) and ``target_len`` target tokens (default: the span-corruption
    target length that goes with ``input_len``, as training uses).

    With ``S`` = input_len, ``U`` = target_len, ``H·Q`` = heads × head dim::

        encoder   6·N_enc·S                     + 12·L_enc·H·Q·S²
        decoder   6·(N_dec + N_head)·U          + 12·L_dec·H·Q·(U² + U·S)   (self + cross attention)
        cross K/V 6·N_cross_kv·S                 (projections of the encoder output, per source token)

    ``N_dec`` holds the decoder's self-attention, cross-attention query/output and MLP weights;
    the cross-attention key/value projections act on the S encoder positions, so they are charged
    per source token, not per target token.
    """
    spec = spec_of(arch)
    if not spec.encoder_decoder:
        raise ValueError(
            f"flops_per_example is for encoder-decoder families ({', '.join(encoder_decoders())}), "
            f"not {spec.name}: use flops_per_token"
        )
    S, U = _encoder_decoder_lengths(arch, input_len, target_len)
    if S <= 0 or U <= 0:
        raise ValueError(f"input_len and target_len must be positive, got {S} and {U}")
    n = matmul_parameters(arch)
    C, H, Q, *_ = _dims(arch)
    n_dec_layers = arch.n_decoder_layer or arch.n_layer
    dense = 6 * ((n["encoder"] + n["cross_kv"]) * S + (n["decoder"] + n["head"]) * U)
    attention = 12 * H * Q * (arch.n_layer * S * S + n_dec_layers * (U * U + U * S))
    return float(dense + attention)


def flops_per_token(arch, seq_len: int | None = None, target_len: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token for a family config ``arch``.

    * decoder (GPT), PaLM appendix B: ``6·N + 12·L·H·Q·T`` with N from ``matmul_parameters``
      (layers + output projection), L layers, H heads, Q head dim, T = ``seq_len`` (default
      ``block_size``). The full T×T score matrix is counted, causal mask or not.
    * encoder (BERT): the same form, ``6·N + 12·L·H·Q·T``, attention over the whole sequence
      (bidirectional: nothing to halve). N includes the MLM head (d×d transform and the
      vocabulary projection), which this model computes at every position, masked or not.
    * encoder-decoder (T5, Transformer): ``flops_per_example(arch, S, U) / (S + U)``, i.e. per
      token of the encoder input and decoder target *combined*, the tokens the training loop
      counts for tokens/s (``Objective.tokens``). ``seq_len`` is the input length S (default
      ``block_size``), ``target_len`` U (default: its span-corruption target length).

    Per-token FLOPs assume full rows; padding does work that the token count does not see.
    """
    spec = spec_of(arch)
    if spec.encoder_decoder:
        S, U = _encoder_decoder_lengths(arch, seq_len, target_len)
        return flops_per_example(arch, S, U) / (S + U)
    if target_len is not None:
        raise ValueError(f"target_len applies to encoder-decoder families, not {spec.name}")
    T = seq_len or arch.block_size
    if T <= 0:
        raise ValueError(f"seq_len must be positive, got {T}")
    _, H, Q, *_ = _dims(arch)
    return float(6 * matmul_parameters(arch)["total"] + 12 * arch.n_layer * H * Q * T)


# --- peak FLOP/s ----------------------------------------------------------------------------------

# Dense peak FLOP/s per GPU by precision: bf16/fp16 on tensor cores (fp32 accumulate), tf32 on
# tensor cores, fp32 on the CUDA cores (what PyTorch uses for fp32 matmuls unless TF32 is allowed,
# e.g. torch.set_float32_matmul_precision("high")). A precision the GPU lacks is absent (V100 and
# T4 have no bf16): its MFU is "not applicable", never a borrowed number.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # H100 SXM5 datasheet: bf16/fp16 1979 TFLOPS and tf32 989 "with sparsity" -> dense 989 / 494.5;
    # fp32 67 (CUDA cores). 989 is the usual rounding of 1979 / 2.
    "H100 SXM": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    # H100 PCIe datasheet: bf16/fp16 1513 and tf32 756 with sparsity -> 756 / 378 dense; fp32 51.
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    # H200 SXM datasheet: the H100 SXM's compute (bf16 1979 sparse -> 989 dense, tf32 494.5, fp32 67)
    # with more and faster memory.
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494.5e12, "fp32": 67e12},
    # A100 datasheet (SXM4 and PCIe, 40 and 80 GB alike): bf16/fp16 312, tf32 156 dense; fp32 19.5.
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    # L40S datasheet: bf16/fp16 362.05 dense (733 sparse), tf32 183 dense, fp32 91.6.
    "L40S": {"bf16": 362.05e12, "fp16": 362.05e12, "tf32": 183e12, "fp32": 91.6e12},
    # L40 datasheet: bf16/fp16 181.05 dense (362.1 sparse), tf32 90.5 dense, fp32 90.5.
    "L40": {"bf16": 181.05e12, "fp16": 181.05e12, "tf32": 90.5e12, "fp32": 90.5e12},
    # L4 datasheet: bf16/fp16 242 and tf32 120 with sparsity -> 121 / 60 dense; fp32 30.3.
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    # A10 datasheet: bf16/fp16 125 dense (250 sparse), tf32 62.5 dense, fp32 31.2. AWS's A10G has no
    # NVIDIA datasheet and is not matched by this entry: pass its peak explicitly.
    "A10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    # Ada (AD102) whitepaper, GeForce RTX 4090: fp16/bf16 tensor with fp32 accumulate (what training
    # uses) 165.2 dense; fp16 accumulate would be 330.3. tf32 82.6 dense; fp32 82.6.
    "RTX 4090": {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12},
    # V100 SXM2 datasheet: fp16 tensor 125, fp32 15.7. No bf16 or tf32 (Volta).
    "V100 SXM2": {"fp16": 125e12, "fp32": 15.7e12},
    # V100 PCIe datasheet: fp16 tensor 112, fp32 14.
    "V100 PCIe": {"fp16": 112e12, "fp32": 14e12},
    # T4 datasheet: fp16 (mixed precision) tensor 65, fp32 8.1. No bf16 or tf32 (Turing).
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}

# Device-name patterns (searched, case-insensitively, in e.g. torch.cuda.get_device_name()) → key
# of PEAK_FLOPS, or None for a GPU we know but hold no datasheet number for. First match wins, so
# the specific variants come before the generic name.
GPU_PATTERNS: list[tuple[str, str | None]] = [
    (r"h100.*pcie", "H100 PCIe"),
    (r"h[12]00.*nvl", None),  # the NVL parts run at lower clocks than the SXM ones: no number here
    (r"h100", "H100 SXM"),  # "NVIDIA H100 80GB HBM3", "H100 SXM5 ..."
    (r"h200", "H200"),  # "NVIDIA H200"
    (r"a100", "A100"),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-PCIE-40GB"
    (r"l40s", "L40S"),
    (r"l40\b", "L40"),
    (r"\bl4\b", "L4"),
    (r"a10g", None),  # AWS A10G: no NVIDIA datasheet
    (r"\ba10\b", "A10"),
    (r"4090", "RTX 4090"),
    (r"v100.*pcie", "V100 PCIe"),
    (r"v100", "V100 SXM2"),
    (r"\bt4\b", "T4"),
]

_DTYPES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "tf32": "tf32",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
}


def normalize_dtype(dtype: str) -> str:
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use bf16, fp16, tf32 or fp32")
    return _DTYPES[key]


def gpu_key(device_name: str) -> str | None:
    """The ``PEAK_FLOPS`` key for a device name (``"NVIDIA H100 80GB HBM3"`` → ``"H100 SXM"``), or None."""
    name = device_name.lower()
    if name in (k.lower() for k in PEAK_FLOPS):
        return next(k for k in PEAK_FLOPS if k.lower() == name)
    for pattern, key in GPU_PATTERNS:
        if re.search(pattern, name):
            return key
    return None


def peak_flops(device_name: str, dtype: str, override: float | None = None) -> float | None:
    """Dense peak FLOP/s of one device at ``dtype`` (bf16, fp16, tf32, fp32).

    ``override`` (> 0) wins. A CPU, an unknown GPU, or a precision the GPU lacks gives None: MFU is
    then "not applicable" rather than a made-up number.
    """
    if override is not None:
        if override <= 0:
            raise ValueError(f"peak FLOP/s override must be positive, got {override}")
        return float(override)
    dtype = normalize_dtype(dtype)
    key = gpu_key(device_name)
    if key is None:
        return None
    return PEAK_FLOPS[key].get(dtype)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None, n_devices: int) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of all devices.

    ``tokens_per_s`` is the throughput of the whole job (all devices together) and ``peak`` the
    dense peak of one device. None when the peak is unknown (CPU, unlisted GPU).
    """
    if peak is None or peak <= 0 or n_devices <= 0:
        return None
    return tokens_per_s * flops_per_token / (peak * n_devices)


def detect_device() -> tuple[str, int]:
    """``(torch.cuda.get_device_name(0), torch.cuda.device_count())`` on a GPU machine, else
    ``("cpu", os.cpu_count())``."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0), torch.cuda.device_count()
    return "cpu", os.cpu_count() or 1
