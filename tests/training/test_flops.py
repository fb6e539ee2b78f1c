"""tokenmill.training.flops: FLOPs per token against hand arithmetic, the peak table, MFU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tokenmill.core.config import ModelConfig
from tokenmill.training import flops as F
from tokenmill.training.models import architecture, build_model, family_of_architecture
from tokenmill.training.models.flavors import FLAVORS


def arch_of(flavor: str, family: str | None = None):
    return architecture(ModelConfig(flavor=flavor, family=family))


# --- GPT-2 small by hand -------------------------------------------------------------------------
# d = 768, L = 12, H = 12, Q = 64, d_ff = 3072, V = 50257, T = 1024.
# Matmul weights per layer: qkv 768·2304 = 1,769,472; out 768·768 = 589,824;
# fc 768·3072 = 2,359,296; proj 3072·768 = 2,359,296  → 7,077,888 (= 12·768²).
# Layers: 12 · 7,077,888 = 84,934,656. Output projection (tied to wte, counted once): 50257·768 = 38,597,376.
GPT2_LAYERS = 12 * 7_077_888
GPT2_HEAD = 50_257 * 768
GPT2_N = 123_532_032
GPT2_6N = 741_192_192  # 6 · 123,532,032
GPT2_ATTN = 113_246_208  # 12·L·H·Q·T = 12·12·12·64·1024
GPT2_FPT = 854_438_400  # 741,192,192 + 113,246,208


def test_gpt2_small_matmul_parameters_by_hand():
    n = F.matmul_parameters(arch_of("gpt2-small"))
    assert GPT2_LAYERS == 84_934_656 and GPT2_HEAD == 38_597_376
    assert n == {"layers": GPT2_LAYERS, "head": GPT2_HEAD, "total": GPT2_N}
    assert GPT2_LAYERS + GPT2_HEAD == GPT2_N and 6 * GPT2_N == GPT2_6N


def test_gpt2_small_flops_per_token_by_hand():
    assert 12 * 12 * 12 * 64 * 1024 == GPT2_ATTN
    arch = arch_of("gpt2-small")
    assert F.flops_per_token(arch) == GPT2_FPT  # default T = block_size = 1024
    assert F.flops_per_token(arch, 1024) == GPT2_6N + GPT2_ATTN
    # The attention term is linear in T per token: at T = 512 it halves.
    assert F.flops_per_token(arch, 512) == GPT2_6N + GPT2_ATTN // 2


def test_bert_base_flops_per_token_by_hand():
    # Layers as GPT-2 small (d 768, d_ff 3072, 12 layers): 84,934,656; MLM transform 768² = 589,824;
    # vocabulary projection 30522·768 = 23,440,896 → N = 108,965,376.
    # 6N = 653,792,256; attention over the full sequence (no causal halving) 12·12·12·64·512 = 56,623,104.
    arch = arch_of("bert-base")
    assert F.matmul_parameters(arch)["total"] == 108_965_376
    assert F.flops_per_token(arch) == 653_792_256 + 56_623_104


def _linear_weights_by_part(arch) -> dict[str, int]:
    """Independent count: walk the real model (on the meta device) and sum every Linear's weight."""
    family = family_of_architecture(arch)
    with torch.device("meta"):
        model = build_model(arch)
    parts: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if name in ("pooler", "nsp_head"):  # BERT's once-per-sequence NSP path is left out on purpose
            continue
        if name == "lm_head" or name == "mlm_dense":
            part = "head"
        elif family in ("gpt", "bert"):
            part = "layers"
        elif name.startswith("decoder.") and name.endswith("cross.kv"):
            part = "cross_kv"
        else:
            part = name.split(".")[0]
        parts[part] = parts.get(part, 0) + module.weight.numel()
    parts["total"] = sum(parts.values())
    return parts


@pytest.mark.parametrize(
    "flavor,family",
    [
        (name, fam)
        for name, fl in FLAVORS.items()
        for fam in ([fl.family] if fl.family else ["gpt", "bert", "t5", "transformer"])
    ],
)
def test_matmul_parameters_match_the_models_linear_layers(flavor, family):
    arch = arch_of(flavor, family)
    assert F.matmul_parameters(arch) == _linear_weights_by_part(arch)


def test_gated_mlp_counts_the_gate():
    plain = arch_of("debug", "t5")
    gated = architecture(ModelConfig(flavor="debug", family="t5", activation="gated-gelu"))
    extra = (plain.n_layer + plain.n_decoder_layer) * plain.n_embd * plain.d_ff
    assert F.matmul_parameters(gated)["total"] - F.matmul_parameters(plain)["total"] == extra
    assert F.matmul_parameters(gated) == _linear_weights_by_part(gated)


# --- encoder-decoder -------------------------------------------------------------------------------


def test_encoder_decoder_flops_per_example_by_hand():
    # debug transformer: d 64, H 2, Q 32 (inner 64), d_ff 256, V 8192, 2 + 2 layers; S = 64, U = 16.
    # self-attention 4·64·64 = 16,384; MLP 2·64·256 = 32,768
    # encoder 2·(16,384 + 32,768) = 98,304; decoder 2·(16,384 + 2·64·64 + 32,768) = 114,688;
    # cross K/V 2·2·64·64 = 16,384; head 8192·64 = 524,288.
    # dense 6·((98,304 + 16,384)·64 + (114,688 + 524,288)·16) = 6·17,563,648 = 105,381,888
    # attention 12·64·(2·64² + 2·(16² + 16·64)) = 768·10,752 = 8,257,536
    arch = arch_of("debug", "transformer")
    assert F.matmul_parameters(arch) == {
        "encoder": 98_304,
        "decoder": 114_688,
        "cross_kv": 16_384,
        "head": 524_288,
        "total": 753_664,
    }
    assert F.flops_per_example(arch, 64, 16) == 105_381_888 + 8_257_536
    # per token = per example / (input + target tokens)
    assert F.flops_per_token(arch, 64, target_len=16) == pytest.approx((105_381_888 + 8_257_536) / 80)


def test_encoder_decoder_defaults_to_span_corruption_target_length():
    from tokenmill.training.objectives import span_corruption_lengths

    arch = arch_of("t5-small")
    S = arch.block_size
    U = span_corruption_lengths(S)[1]
    assert 0 < U < S
    assert F.flops_per_token(arch) == pytest.approx(F.flops_per_example(arch, S, U) / (S + U))


def test_encoder_decoder_attention_term_is_quadratic():
    arch = arch_of("t5-small")
    H, Q, L = arch.n_head, arch.d_head, arch.n_layer
    S, U = 128, 32
    # Dense FLOPs are linear in (S, U), attention quadratic: f(2S, 2U) - 2 f(S, U) = 2 · attention(S, U).
    attention = 12 * H * Q * (L * S * S + L * (U * U + U * S))
    assert F.flops_per_example(arch, 2 * S, 2 * U) - 2 * F.flops_per_example(arch, S, U) == 2 * attention
    assert F.flops_per_example(arch, 4 * S, 4 * U) > 4 * F.flops_per_example(arch, S, U)


def test_flops_scale_with_parameters_at_short_sequences():
    # At T = 8 the attention term is negligible: FLOPs per token ≈ 6N (for an encoder-decoder with
    # S = U, each token passes through half the model: 6·(N_enc + N_cross_kv + N_dec + N_head) / 2).
    for small, large in [
        ("bert-base", "bert-large"),
        ("gpt2-small", "gpt2-medium"),
        ("t5-small", "t5-base"),
        ("transformer-base", "transformer-big"),
    ]:
        a, b = arch_of(small), arch_of(large)
        enc_dec = family_of_architecture(a) in ("t5", "transformer")
        kw = {"target_len": 8} if enc_dec else {}
        fa, fb = F.flops_per_token(a, 8, **kw), F.flops_per_token(b, 8, **kw)
        na, nb = (F.matmul_parameters(x)["total"] / (2 if enc_dec else 1) for x in (a, b))
        assert 0 < fa < fb
        assert fa == pytest.approx(6 * na, rel=0.01) and fb == pytest.approx(6 * nb, rel=0.01)
        assert fb / fa == pytest.approx(nb / na, rel=0.01)


def test_encoder_attention_grows_with_sequence_length():
    arch = arch_of("bert-base")
    step = F.flops_per_token(arch, 512) - F.flops_per_token(arch, 256)
    assert step == 12 * 12 * 12 * 64 * 256


def test_flops_per_example_rejects_decoder_only():
    with pytest.raises(ValueError, match="encoder-decoder"):
        F.flops_per_example(arch_of("gpt2-small"), 64, 16)
    with pytest.raises(ValueError, match="target_len"):
        F.flops_per_token(arch_of("gpt2-small"), 64, target_len=16)


# --- peak FLOP/s -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,dtype,expected",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),  # SXM: dense, not the 1979e12 "with sparsity"
        ("H100 SXM", "fp16", 989e12),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.5e12),
        ("NVIDIA H100 80GB HBM3", "fp32", 67e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100-PCIE-40GB", "tf32", 156e12),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA L40S", "bf16", 362.05e12),
        ("NVIDIA A10", "bf16", 125e12),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12),
        ("Tesla V100-SXM2-16GB", "fp16", 125e12),
        ("Tesla V100-PCIE-32GB", "fp16", 112e12),
        ("Tesla T4", "fp16", 65e12),
        ("nvidia h100 80gb hbm3", "bfloat16", 989e12),  # case and dtype spelling do not matter
    ],
)
def test_peak_flops_table(name, dtype, expected):
    assert F.peak_flops(name, dtype) == expected


def test_peak_flops_is_dense():
    for gpu, peaks in F.PEAK_FLOPS.items():
        assert peaks.get("bf16", 0) < 1e15, gpu  # no sparse 1979e12 anywhere
    assert F.peak_flops("NVIDIA H100 80GB HBM3", "bf16") != 1979e12


@pytest.mark.parametrize(
    "name,dtype",
    [
        ("cpu", "bf16"),
        ("cpu", "fp32"),
        ("Some Future GPU", "bf16"),
        ("Tesla V100-SXM2-16GB", "bf16"),  # Volta has no bf16
        ("Tesla T4", "bf16"),
        ("NVIDIA A10G", "bf16"),  # no NVIDIA datasheet: not guessed from the A10
        ("NVIDIA H100 NVL", "bf16"),  # lower clocks than SXM: not borrowed
    ],
)
def test_peak_flops_unknown_is_none(name, dtype):
    assert F.peak_flops(name, dtype) is None


def test_peak_flops_override_wins():
    assert F.peak_flops("cpu", "bf16", override=1e12) == 1e12
    assert F.peak_flops("NVIDIA H100 80GB HBM3", "bf16", override=500e12) == 500e12
    with pytest.raises(ValueError):
        F.peak_flops("cpu", "bf16", override=0)
    with pytest.raises(ValueError, match="dtype"):
        F.peak_flops("NVIDIA H100", "int8")


def test_gpu_key_specific_variants_first():
    assert F.gpu_key("NVIDIA H100 PCIe") == "H100 PCIe"
    assert F.gpu_key("NVIDIA H100 80GB HBM3") == "H100 SXM"
    assert F.gpu_key("NVIDIA L40S") == "L40S" and F.gpu_key("NVIDIA L40") == "L40" and F.gpu_key("NVIDIA L4") == "L4"
    assert F.gpu_key("NVIDIA A100-SXM4-40GB") == "A100"
    assert F.gpu_key("cpu") is None


# --- MFU -------------------------------------------------------------------------------------------


def test_mfu_arithmetic():
    # 100,000 tokens/s over 8 H100s at GPT-2 small's 854,438,400 FLOPs per token:
    # 8.544384e13 FLOP/s / (8 · 989e12) = 0.010799...
    value = F.mfu(100_000, GPT2_FPT, 989e12, 8)
    assert value == pytest.approx(100_000 * 854_438_400 / (8 * 989e12))
    assert value == pytest.approx(0.0107997, rel=1e-4)
    assert F.mfu(1e6, 1e9, 1e15, 1) == pytest.approx(1.0)


def test_mfu_not_applicable_without_peak():
    assert F.mfu(1e5, GPT2_FPT, None, 8) is None
    assert F.mfu(1e5, GPT2_FPT, F.peak_flops("cpu", "fp32"), 2) is None
    assert F.mfu(1e5, GPT2_FPT, 989e12, 0) is None


def test_detect_device():
    name, count = F.detect_device()
    assert isinstance(name, str) and isinstance(count, int) and count >= 1
    if not torch.cuda.is_available():
        assert name == "cpu"


def test_detect_device_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    name, count = F.detect_device()
    assert name == "cpu" and count >= 1
