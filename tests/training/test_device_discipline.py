"""Every tensor that enters one of tokenmill's collectives lives on the engine's device: two ranks train,
evaluate, checkpoint and resume under ``accelerator_only.py``, whose collectives refuse host tensors as NCCL
does (the stop-flag all-reduce on a host tensor crashed the first GPU step)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill.core.config import dump_config, load_config
from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # DeepSpeed training processes


def train(tokens: str, out: Path, steps: int) -> subprocess.CompletedProcess:
    cfg = load_config(
        REPO_ROOT / "conf" / "tiny.yaml",
        [
            f"train.max_steps={steps}",
            "train.log_every=3",
            "train.eval_every=2",
            "train.checkpoint_every=0",
            "train.checkpoint_minutes=0.0001",  # due at every step, by the clock
            "train.eval_max_blocks=8",
            "train.sample_tokens=4",
            "tracking.system_metrics=false",
        ],
    )
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    rank = REPO_ROOT / "tests" / "training" / "accelerator_only.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(rank)]
    cmd += ["--run-config", str(out / "config.yaml"), "--tokens-manifest", tokens, "--out-dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_collectives_take_only_tensors_on_the_engine_device(pipeline_run, tmp_path):
    out = tmp_path / "train"
    first = train(pipeline_run["tokens_manifest"], out, steps=4)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    resumed = train(pipeline_run["tokens_manifest"], out, steps=6)  # from the step-4 checkpoint
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    manifest = read_manifest(out / "manifest.json", stage="train")
    assert manifest["resumed_at_step"] == 4 and manifest["world_size"] == 2
    assert [h["step"] for h in manifest["history"]] == [3, 4, 6]
    assert all(f"checkpoint: saved step {n} " in first.stdout for n in (1, 2, 3, 4)), first.stdout[-3000:]


def test_the_check_catches_a_host_tensor_in_a_collective(tmp_path):
    """The harness itself: a collective on a tensor made without naming the device fails under it."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        f"sys.path.insert(0, {str(REPO_ROOT / 'tests' / 'training')!r})\n"
        "import accelerator_only as a\n"
        "dist.init_process_group('gloo')\n"
        "dist.all_reduce = a.accelerator_only(dist.all_reduce, checked_caller=lambda path: True)\n"
        "with a.TrackPlacement():\n"
        "    on_device = torch.ones(2, device=a.ACCELERATOR) * 2\n"
        "    dist.all_reduce(on_device)\n"
        "    print('reduced:', on_device.tolist())\n"
        "    try:\n"
        "        dist.all_reduce(torch.tensor([1.0]))\n"
        "    except RuntimeError as e:\n"
        "        print('refused:', e)\n"
        "dist.destroy_process_group()  # exiting with the group up can abort in gloo's teardown\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", str(script)]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "reduced: [2.0, 2.0]" in done.stdout
    assert done.stdout.count("refused: No backend type associated with device type cpu") == 1, done.stdout
