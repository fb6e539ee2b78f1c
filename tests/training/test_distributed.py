"""training.distributed.deepspeed_config (DeepSpeed itself is not started here)."""

from __future__ import annotations

import json

import pytest

from tokenmill.config import TrainConfig
from tokenmill.env import REPO_ROOT
from training.distributed import deepspeed_config


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.json"
    path.write_text(json.dumps({
        "_comment": "dropped",
        "_private": {"x": 1},
        "steps_per_print": 123,
        "zero_optimization": {"overlap_comm": False, "reduce_bucket_size": 1000, "stage": 3},
        "train_batch_size": 999999,  # stale value in the file: must be replaced by the derived one
    }))
    return path


@pytest.mark.parametrize("micro,accum,world", [(1, 1, 1), (8, 1, 2), (3, 4, 5)])
def test_batch_sizes_are_derived(micro, accum, world):
    cfg = deepspeed_config(TrainConfig(micro_batch_size=micro, grad_accum_steps=accum), world)
    assert cfg["train_micro_batch_size_per_gpu"] == micro
    assert cfg["gradient_accumulation_steps"] == accum
    assert cfg["train_batch_size"] == micro * accum * world


def test_stage_and_clipping_come_from_train_config():
    cfg = deepspeed_config(TrainConfig(zero_stage=1, grad_clip=0.5), 1)
    assert cfg["zero_optimization"] == {"stage": 1}
    assert cfg["gradient_clipping"] == 0.5


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
