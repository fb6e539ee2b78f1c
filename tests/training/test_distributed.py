"""tokenmill.training.distributed.deepspeed_config (DeepSpeed itself is not started here)."""

from __future__ import annotations

import json

import pytest

from tokenmill.core.config import TrainConfig
from tokenmill.core.env import REPO_ROOT
from tokenmill.training.distributed import deepspeed_config, zero_stage


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.json"
    path.write_text(
        json.dumps(
            {
                "_comment": "dropped",
                "_private": {"x": 1},
                "steps_per_print": 123,
                "zero_optimization": {"overlap_comm": False, "reduce_bucket_size": 1000, "stage": 3},
                "train_batch_size": 999999,  # stale value in the file: must be replaced by the derived one
            }
        )
    )
    return path


@pytest.mark.parametrize("micro,accum,world", [(1, 1, 1), (8, 1, 2), (3, 4, 5)])
def test_batch_sizes_are_derived(micro, accum, world):
    cfg = deepspeed_config(TrainConfig(micro_batch_size=micro, grad_accum_steps=accum), world)
    assert cfg["train_micro_batch_size_per_gpu"] == micro
    assert cfg["gradient_accumulation_steps"] == accum
    assert cfg["train_batch_size"] == micro * accum * world


def test_stage_and_clipping_come_from_train_config():
    cfg = deepspeed_config(TrainConfig(zero_stage=1, grad_clip=0.5), 2)
    assert cfg["zero_optimization"] == {"stage": 1}
    assert cfg["gradient_clipping"] == 0.5


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_one_fp32_rank_runs_zero_1_and_2_as_stage_0(stage):
    """Stages 1 and 2 partition over data-parallel ranks: on one rank there is nothing to partition, so fp32 runs the
    plain optimizer (stage 0); offload, bf16/fp16 (ZeRO's master weights) and stage 3 keep the configured stage."""
    one = deepspeed_config(TrainConfig(zero_stage=stage, precision="fp32"), 1)["zero_optimization"]["stage"]
    assert one == (0 if stage in (1, 2) else stage)
    assert zero_stage(TrainConfig(zero_stage=stage, precision="fp32"), 2) == stage
    for kept in (dict(precision="bf16"), dict(precision="fp16")):
        assert zero_stage(TrainConfig(zero_stage=stage, **kept), 1) == stage
    if stage:
        assert zero_stage(TrainConfig(zero_stage=stage, offload_optimizer=True), 1) == stage


def test_base_file_keys_kept_and_underscore_keys_dropped(base):
    cfg = deepspeed_config(TrainConfig(zero_stage=2, micro_batch_size=2), 2, base)
    assert cfg["steps_per_print"] == 123
    assert not [k for k in cfg if k.startswith("_")]
    assert cfg["zero_optimization"] == {"overlap_comm": False, "reduce_bucket_size": 1000, "stage": 2}
    assert cfg["train_batch_size"] == 2 * 1 * 2


def test_base_file_is_not_modified(base):
    before = base.read_text()
    deepspeed_config(TrainConfig(), 2, base)
    assert base.read_text() == before


def test_shipped_base_config():
    cfg = deepspeed_config(TrainConfig(), 2, REPO_ROOT / "conf" / "deepspeed" / "base.json")
    assert cfg["zero_optimization"]["stage"] == TrainConfig().zero_stage
    assert "_comment" not in cfg
    json.dumps(cfg)  # serialisable for DeepSpeed


@pytest.mark.parametrize("stage", [-1, 4])
def test_bad_stage_raises(stage):
    with pytest.raises(ValueError, match="zero_stage"):
        deepspeed_config(TrainConfig(zero_stage=stage), 1)


@pytest.mark.parametrize("field", ["micro_batch_size", "grad_accum_steps"])
def test_non_positive_batch_settings_raise(field):
    with pytest.raises(ValueError, match=field):
        deepspeed_config(TrainConfig(**{field: 0}), 1)


def test_missing_base_file_raises(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(FileNotFoundError, match="none.json"):
        deepspeed_config(TrainConfig(), 1, missing)


# --- derived values and their validation --------------------------------------------------------


def test_global_batch_derives_accumulation_and_must_divide():
    from tokenmill.training.distributed import batch_sizes

    assert batch_sizes(TrainConfig(micro_batch_size=4, global_batch_size=32), 2) == (4, 4, 32)
    with pytest.raises(ValueError, match="not divisible by micro_batch_size 4 x world size 3 = 12"):
        batch_sizes(TrainConfig(micro_batch_size=4, global_batch_size=32), 3)
    with pytest.raises(ValueError, match="contradicts"):
        batch_sizes(TrainConfig(micro_batch_size=4, global_batch_size=32, grad_accum_steps=2), 2)
    assert (
        deepspeed_config(TrainConfig(micro_batch_size=4, global_batch_size=32), 2)["gradient_accumulation_steps"] == 4
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precision_switches_exactly_one_mode(precision):
    cfg = deepspeed_config(TrainConfig(precision=precision), 1)
    assert cfg["bf16"]["enabled"] == (precision == "bf16")
    assert cfg["fp16"]["enabled"] == (precision == "fp16")
    assert cfg["fp16"]["loss_scale"] == 0  # dynamic loss scaling whenever fp16 is on


def test_auto_precision_is_bf16_exactly_where_the_device_has_native_bf16(monkeypatch):
    from tokenmill.training import distributed

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(distributed, "native_bf16", lambda dev=None, native=native: native)
        assert distributed.resolve_precision(TrainConfig(precision="auto")).precision == expected
        cfg = deepspeed_config(TrainConfig(precision="auto", zero_stage=2), 1)
        assert (cfg["bf16"]["enabled"], cfg["fp16"]["enabled"]) == (native, False)
        assert cfg["zero_optimization"]["stage"] == (2 if native else 0)  # fp32 on one rank runs stage 0
        for fixed in ("fp32", "bf16", "fp16"):  # a precision written out is kept as written
            assert distributed.resolve_precision(TrainConfig(precision=fixed)).precision == fixed


def test_a_resumed_run_keeps_its_checkpoint_precision(monkeypatch):
    from tokenmill.training import distributed

    monkeypatch.setattr(distributed, "native_bf16", lambda dev=None: True)
    for saved in ("fp32", "bf16"):
        for asked in ("auto", saved):
            assert distributed.resolve_precision(TrainConfig(precision=asked), checkpoint=saved).precision == saved
    with pytest.raises(ValueError, match="trained in bf16, and train.precision is fp32: set train.precision=bf16"):
        distributed.resolve_precision(TrainConfig(precision="fp32"), checkpoint="bf16")


def test_the_default_precision_is_auto_and_this_machine_answers_it():
    import torch

    from tokenmill.training.distributed import native_bf16, resolve_precision

    assert TrainConfig().precision == "auto"
    cpu = torch.cpu
    expected = cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
    assert native_bf16(torch.device("cpu")) == expected
    assert resolve_precision(TrainConfig()).precision == ("bf16" if expected else "fp32")


@pytest.mark.slow
def test_the_ranks_agree_on_auto_precision_and_one_without_bf16_makes_it_fp32(tmp_path):
    """A job over unlike nodes runs one precision: every rank takes the least capable rank's answer."""
    import subprocess
    import sys

    script = tmp_path / "rank.py"
    script.write_text(
        "import os, sys, torch.distributed as dist\n"
        "from tokenmill.core.config import TrainConfig\n"
        "from tokenmill.training import distributed\n"
        "dist.init_process_group('gloo')\n"
        "rank = dist.get_rank()\n"
        "distributed.native_bf16 = lambda dev=None: rank != int(sys.argv[1])\n"
        "precision = distributed.resolve_precision(TrainConfig()).precision\n"
        f"open(f'{tmp_path}/rank{{rank}}-{{sys.argv[1]}}', 'w').write(precision)\n"
        "dist.barrier()\n"
        "dist.destroy_process_group()  # a rank that exits with the group up can abort in gloo's teardown\n"
    )
    for without in (-1, 1):  # -1: both ranks have bf16; 1: rank 1 does not
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
        done = subprocess.run([*cmd, str(without)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        answers = [(tmp_path / f"rank{r}-{without}").read_text() for r in (0, 1)]
        assert answers == (["bf16", "bf16"] if without < 0 else ["fp32", "fp32"])


def test_offload_settings_and_their_stage_requirements():
    cfg = deepspeed_config(TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True), 2)
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["optimizer"]["type"] == "AdamW" and cfg["optimizer"]["params"]["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="needs ZeRO stage 1, 2 or 3"):
        deepspeed_config(TrainConfig(zero_stage=0, offload_optimizer=True), 1)
    with pytest.raises(ValueError, match="needs train.zero_stage=3"):
        deepspeed_config(TrainConfig(zero_stage=2, offload_params=True), 1)
    assert "optimizer" not in deepspeed_config(TrainConfig(zero_stage=2), 1)  # torch AdamW, passed in


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(precision="fp8"), "train.precision"),
        (dict(zero_stage=4), "zero_stage"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(micro_batch_size=0), "micro_batch_size"),
    ],
)
def test_invalid_training_settings_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        deepspeed_config(TrainConfig(**bad), 1)


def test_activation_checkpointing_wraps_every_block_and_keeps_the_math():
    import torch

    from tokenmill.core.config import ModelConfig
    from tokenmill.training.distributed import checkpoint_blocks
    from tokenmill.training.models import architecture, build_model

    for family in ("gpt", "bert", "t5", "transformer"):
        torch.manual_seed(0)
        arch = architecture(ModelConfig(family=family, flavor="debug", dropout=0.0), vocab_size=120, pad_id=1)
        plain, ckpt = build_model(arch), build_model(arch)
        ckpt.load_state_dict(plain.state_dict())
        n_blocks = sum(len(m) for name, m in ckpt.named_modules() if name.endswith("blocks"))
        assert checkpoint_blocks(ckpt) == n_blocks > 0
        x = torch.randint(5, 120, (2, 16))
        kw = {"decoder_input_ids": x} if family in ("t5", "transformer") else {}
        grads = []
        for model in (plain, ckpt):
            model.train()
            out = model(x, **kw)
            (out[0] if isinstance(out, tuple) else out).float().pow(2).mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_schedules():
    from tokenmill.training.schedule import learning_rate

    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert learning_rate(4, **kw) == pytest.approx(0.5)
    assert learning_rate(60, schedule="linear", **kw) == pytest.approx(0.55)
    assert learning_rate(60, schedule="cosine", **kw) == pytest.approx(0.55)
    assert learning_rate(35, schedule="cosine", **kw) > learning_rate(35, schedule="linear", **kw)
    assert learning_rate(100, schedule="constant", **kw) == 1.0
    assert learning_rate(500, schedule="linear", **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="train.schedule"):
        learning_rate(1, schedule="step", **kw)
