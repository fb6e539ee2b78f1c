"""tokenmill.training.planner: memory per ZeRO stage, activations, Chinchilla budget and wall time, by hand."""

from __future__ import annotations

import argparse

import pytest

from tokenmill.core.config import ModelConfig
from tokenmill.training import planner
from tokenmill.training.planner import GiB, activation_bytes, model_state_bytes, plan

# GPT-2 small, all parameters (what memory is sized by), by hand:
# wte 50257·768 = 38,597,376 (tied with the output projection: stored once); wpe 1024·768 = 786,432;
# per layer: matmul weights 7,077,888 + biases (2304 + 768 + 3072 + 768 = 6,912) + 2 LayerNorms
# (2·1,536 = 3,072) = 7,087,872, times 12 = 85,054,464; final LayerNorm 1,536.
PSI = 124_439_808
assert 38_597_376 + 786_432 + 12 * (7_077_888 + 6_912 + 3_072) + 1_536 == PSI
FPT = 854_438_400  # 6·123,532,032 + 12·12·12·64·1024, see test_flops.py
GPUS = 8

# Model states per GPU, mixed-precision Adam (2 + 2 + 12 bytes per parameter), over 8 GPUs:
ZERO_BYTES = {
    0: 16 * PSI,  # 1,991,036,928
    1: 4 * PSI + 12 * PSI / GPUS,  # 497,759,232 + 186,659,712 = 684,418,944
    2: 2 * PSI + 14 * PSI / GPUS,  # 248,879,616 + 217,769,664 = 466,649,280
    3: 16 * PSI / GPUS,  # 248,879,616
}


def gpt2(**kw):
    args = dict(gpus=GPUS, zero=2)
    args.update(kw)
    return plan(ModelConfig(flavor="gpt2-small"), **args)


def test_parameters_and_flops_per_token():
    p = gpt2()
    assert p.params == PSI
    assert p.matmul_params == 123_532_032
    assert p.flops_per_token == FPT
    assert p.seq_len == 1024 and p.target_len is None


def test_zero_stage_memory_by_hand():
    assert ZERO_BYTES == {0: 1_991_036_928, 1: 684_418_944, 2: 466_649_280, 3: 248_879_616}
    p = gpt2()
    for stage, expected in ZERO_BYTES.items():
        row = p.stages[stage]
        assert row.stage == stage and row.cpu == 0
        assert row.states == pytest.approx(expected)
        assert row.total == pytest.approx(expected + p.activations)
    assert p.chosen is p.stages[2]


def test_model_state_split_and_offload():
    # stage 2 over 4 GPUs: params 2Ψ whole, grads 2Ψ/4, optimizer 12Ψ/4
    assert model_state_bytes(1000, 2, 4) == (2000, 500, 3000, 0)
    # offload moves the optimizer share to the host
    assert model_state_bytes(1000, 2, 4, offload=True) == (2000, 500, 0, 3000)
    # stage 3 offload also moves the parameter share
    assert model_state_bytes(1000, 3, 4, offload=True) == (0, 500, 0, 3000 + 500)
    # fp32 training: 4 + 4 + 8 bytes per parameter (no separate master copy)
    assert model_state_bytes(1000, 0, 4, dtype="fp32") == (4000, 4000, 8000, 0)
    assert model_state_bytes(1000, 1, 4, dtype="fp32") == (4000, 4000, 2000, 0)
    with pytest.raises(ValueError, match="stage 1, 2 or 3"):
        model_state_bytes(1000, 0, 4, offload=True)
    with pytest.raises(ValueError, match="0, 1, 2 or 3"):
        model_state_bytes(1000, 4, 4)


def test_plan_offload_rows():
    p = gpt2(zero=3, offload=True)
    assert not p.stages[0].offloaded and p.stages[0].cpu == 0  # stage 0 cannot offload: shown without
    assert p.stages[1].optimizer == 0 and p.stages[1].cpu == pytest.approx(12 * PSI / GPUS)
    assert p.chosen.params == 0 and p.chosen.cpu == pytest.approx(12 * PSI / GPUS + 2 * PSI / GPUS)
    assert p.chosen.states == pytest.approx(2 * PSI / GPUS)
    with pytest.raises(ValueError, match="offload"):
        gpt2(zero=0, offload=True)


def test_activation_memory_by_hand():
    # Korthikanti et al.: s·b·h·34 per layer with fused attention (no s×s scores), 16-bit.
    # s = 1024, b = 8, h = 768: 8,192·768·34 = 213,909,504 per layer; 12 layers = 2,566,914,048.
    # fp32 logits for the loss: 4·s·b·V = 4·1024·8·50257 = 1,646,821,376.
    layer, logits = 213_909_504, 1_646_821_376
    assert 1024 * 8 * 768 * 34 == layer
    p = gpt2(micro_batch=8)
    assert p.activations == 12 * layer + logits
    # eager attention also keeps 5·a·s²·b = 5·12·1024²·8 = 503,316,480 bytes per layer
    assert p.activations_eager == 12 * (layer + 503_316_480) + logits
    # full checkpointing: each layer keeps its 2·s·b·h input (12,582,912), plus one layer recomputed
    ckpt = gpt2(micro_batch=8, activation_checkpointing=True)
    assert ckpt.activations == 12 * 2 * 1024 * 8 * 768 + layer + logits
    # fp32 doubles the 16-bit activations (the logits are fp32 already)
    fp32 = gpt2(micro_batch=8, dtype="fp32")
    assert fp32.activations == 2 * 12 * layer + logits


def test_activations_scale_with_micro_batch_and_encoder_decoder():
    from tokenmill.training.models import architecture

    arch = architecture(ModelConfig(flavor="t5-small"))
    one = activation_bytes(arch, 1, 512, 114)
    assert activation_bytes(arch, 4, 512, 114) == pytest.approx(4 * one)
    assert activation_bytes(arch, 1, 512, 114, eager=True) > one
    assert activation_bytes(arch, 1, 512, 114, checkpointing=True) < one


def test_chinchilla_budget_and_wall_time_by_hand():
    p = gpt2()
    assert p.chinchilla_tokens == 20 * PSI == 2_488_796_160
    assert p.tokens == p.chinchilla_tokens and p.tokens_from_chinchilla
    # wall time = FLOPs per token · tokens / (peak · GPUs · MFU), H100 SXM dense bf16 = 989e12
    seconds = 854_438_400 * 2_488_796_160 / (989e12 * 8 * 0.4)
    assert seconds == pytest.approx(671.9, abs=0.1)  # 11.2 min
    assert p.peak_flops == 989e12
    assert p.total_flops == pytest.approx(854_438_400 * 2_488_796_160)
    assert p.wall_seconds == pytest.approx(seconds)
    # given tokens, another GPU and MFU
    q = gpt2(tokens=10e9, gpu="A100", mfu=0.5)
    assert not q.tokens_from_chinchilla
    assert q.wall_seconds == pytest.approx(854_438_400 * 10e9 / (312e12 * 8 * 0.5))


def test_unknown_gpu_has_no_wall_time_unless_peak_given():
    p = gpt2(gpu="cpu")
    assert p.peak_flops is None and p.wall_seconds is None and p.gpu_memory is None
    assert "--peak-tflops" in p.render()
    q = gpt2(gpu="cpu", peak=100e12)
    assert q.wall_seconds == pytest.approx(FPT * 20 * PSI / (100e12 * 8 * 0.4))


def test_gpu_memory_table():
    assert planner.gpu_memory_bytes("H100 SXM") == 80 * GiB
    assert planner.gpu_memory_bytes("NVIDIA H200") == 141 * GiB
    assert planner.gpu_memory_bytes("NVIDIA A100-SXM4-40GB") == 40 * GiB
    assert planner.gpu_memory_bytes("NVIDIA A100 80GB PCIe") == 80 * GiB
    assert planner.gpu_memory_bytes("NVIDIA L4") == 24 * GiB
    assert planner.gpu_memory_bytes("cpu") is None


def test_fits_marks():
    # gpt3-2.7b, 8 × A100 40GB, micro-batch 4: ZeRO-0 needs ~62 GiB (no), ZeRO-1 ~36 GiB (tight, > 90%),
    # ZeRO-2 and 3 fit.
    p = plan(ModelConfig(flavor="gpt3-2.7b"), gpus=8, zero=0, micro_batch=4, gpu="A100 40GB")
    assert [p.fits(r) for r in p.stages] == ["no", "tight", "yes", "yes"]
    assert "lowest stage that fits: ZeRO-2" in p.render()
    one = plan(ModelConfig(flavor="gpt3-2.7b"), gpus=1, zero=0, micro_batch=4, gpu="NVIDIA L4")
    assert all(one.fits(r) == "no" for r in one.stages)
    assert "no stage fits" in one.render() and "--offload" in one.render()


def test_render_contains_the_key_numbers():
    p = gpt2()
    text = p.render()
    for needle in [
        "gpt2-small",
        "124.44M",
        "123.53M",
        "854 MFLOP",
        "113 MFLOP",
        "80 GiB",
        "2.49B",
        "989.0 TFLOP/s",
        "11.2 min",
        "ZeRO-2",
    ]:
        assert needle in text, needle
    for _stage, expected in ZERO_BYTES.items():
        assert f"{(expected + p.activations) / GiB:.2f}" in text
    chosen = [line for line in text.splitlines() if line.startswith("*")]
    assert len(chosen) == 1 and chosen[0].split()[1] == "2"


def test_encoder_decoder_plan():
    p = plan(ModelConfig(flavor="t5-small"), gpus=2, zero=1)
    assert p.family == "t5" and p.seq_len == 512 and 0 < p.target_len < 512
    assert "input + " in p.render() and "target tokens" in p.render()
    q = plan(ModelConfig(flavor="transformer-base"), gpus=1, zero=0, seq_len=128, target_len=128)
    assert q.target_len == 128


def test_plan_validates():
    with pytest.raises(ValueError, match="gpt2-small"):  # the flavour list comes with the error
        plan(ModelConfig(flavor="gpt9"), gpus=1, zero=0)
    with pytest.raises(ValueError, match="mfu"):
        gpt2(mfu=1.5)
    with pytest.raises(ValueError, match="gpus"):
        gpt2(gpus=0)
    with pytest.raises(ValueError, match="target_len"):
        gpt2(target_len=10)


def test_parse_count():
    assert planner.parse_count("10B") == 10e9
    assert planner.parse_count("300m") == 300e6
    assert planner.parse_count("1.4T") == 1.4e12
    assert planner.parse_count("2.5e9") == 2.5e9
    with pytest.raises(argparse.ArgumentTypeError):
        planner.parse_count("lots")


def test_main_runs(capsys):
    assert planner.main(["--model", "gpt2-small", "--gpus", "8", "--zero", "2"]) == 0
    out = capsys.readouterr().out
    assert "854 MFLOP" in out and "11.2 min" in out
    assert (
        planner.main(
            [
                "--model",
                "debug",
                "--family",
                "bert",
                "--gpus",
                "2",
                "--zero",
                "3",
                "--offload",
                "--micro-batch",
                "4",
                "--seq-len",
                "32",
                "--gpu",
                "NVIDIA L4",
                "--mfu",
                "0.3",
                "--tokens",
                "1M",
                "--activation-checkpointing",
                "--dtype",
                "fp16",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "debug (bert)" in out and "1.00M (given)" in out


def test_main_bad_flavour(capsys):
    assert planner.main(["--model", "gpt9"]) == 2
    err = capsys.readouterr().err
    assert "gpt9" in err and "gpt2-small" in err and "t5-base" in err


def test_main_bad_combination(capsys):
    assert planner.main(["--model", "gpt2-small", "--zero", "0", "--offload"]) == 2
    assert "offload" in capsys.readouterr().err


def test_add_arguments_and_run_for_the_cli(capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    planner.add_arguments(sub.add_parser("plan"))
    args = parser.parse_args(["plan", "--model", "bert-base", "--gpus", "4", "--zero", "1"])
    assert planner.run(args) == 0
    assert "bert-base (bert)" in capsys.readouterr().out
