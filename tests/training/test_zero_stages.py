"""ZeRO stages agree: 2 processes with ZeRO-1, -2 and -3 train like 1 process on the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenmill.core.config import dump_config, load_config
from tokenmill.core.manifest import read_manifest
from tokenmill.training import launch

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS = 20

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # DeepSpeed training processes


def train(tokens: str, out: Path, nproc: int, stage: int, micro: int) -> list[float]:
    cfg = load_config(
        REPO_ROOT / "conf" / "tiny.yaml",
        [
            f"run.output_dir={out.parent}",
            f"train.nproc={nproc}",
            f"train.zero_stage={stage}",
            f"train.micro_batch_size={micro}",
            f"train.max_steps={STEPS}",
            "train.precision=fp32",  # the bound below is about fp32 rounding (bf16 moves the same split by ~2e-2)
            "train.log_every=1",
            "tracking.register_model=false",
            f"train.deepspeed_config={REPO_ROOT / 'conf/deepspeed/base.json'}",
        ],
    )
    out.mkdir(parents=True)
    dump_config(cfg, out / "config.yaml")
    launch.run(launch.command(cfg.train, out / "config.yaml", Path(tokens), out, None), lambda line: None)
    return [h["train/loss"] for h in read_manifest(out / "manifest.json", stage="train")["history"]]


def test_two_processes_under_zero_1_2_3_match_one_process(pipeline_run, tmp_path):
    """Same global batch of 16 sequences per step: one process with 16, or two with 8 each.

    The losses cannot be bit-identical: with two ranks each gradient is the average of two
    half-batch means summed by gloo, a different order of fp32 additions than one mean over 16.
    Those 1e-7-relative differences pass through 20 Adam steps; 2e-3 nats bounds them with a wide
    margin, while a wrong batch split, a missing gradient average or lost optimizer partitions
    shift the loss by 1e-1 or more within these steps.
    """
    tokens = pipeline_run["tokens_manifest"]
    single = train(tokens, tmp_path / "single", nproc=1, stage=0, micro=16)
    assert single[-1] < single[0] - 0.5  # it trains
    for stage in (1, 2, 3):
        two = train(tokens, tmp_path / f"zero{stage}", nproc=2, stage=stage, micro=8)
        assert len(two) == len(single) == STEPS
        assert max(abs(a - b) for a, b in zip(single, two)) < 2e-3, (stage, single, two)
