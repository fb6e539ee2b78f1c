"""Exact resume: a training run killed with SIGKILL and started again continues bit for bit, into the
same MLflow run; and a checkpoint is only ever read with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # DeepSpeed training processes


def command(tokens: str, out: Path, steps: int = 120) -> list[str]:
    sets = [
        f"run.output_dir={out.parent}",
        f"train.max_steps={steps}",
        "train.log_every=1",
        "train.checkpoint_every=10",
        "tracking.register_model=false",
        "tracking.system_metrics=false",
    ]
    return [
        sys.executable,
        "-m",
        "tokenmill.cli",
        "train",
        "--config",
        str(REPO_ROOT / "conf" / "tiny.yaml"),
        *[x for s in sets for x in ("--set", s)],
        "--tokens",
        tokens,
        "--out",
        str(out),
    ]


def run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(pipeline_run, tmp_path):
    from mlflow.tracking import MlflowClient

    tokens = pipeline_run["tokens_manifest"]
    run(command(tokens, tmp_path / "whole"))

    # Start the same run elsewhere and kill every process of it right after its step-10 checkpoint.
    killed = tmp_path / "killed" / "train"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        command(tokens, killed),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "checkpoint: saved step 10" in line:
            # The CLI, torchrun and every rank (torchrun starts ranks in sessions of their own).
            tree = psutil.Process(proc.pid)
            for p in [tree, *tree.children(recursive=True)]:
                p.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert not (killed / "manifest.json").exists()
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(killed) in " ".join(p.info["cmdline"] or [])]
    run_id = json.loads((killed / "checkpoints" / "run.json").read_text())["mlflow_run_id"]

    run(command(tokens, killed))  # the same command resumes
    whole = read_manifest(tmp_path / "whole" / "manifest.json", stage="train")
    resumed = read_manifest(killed / "manifest.json", stage="train")
    start = resumed["resumed_at_step"]
    assert start in range(10, 120, 10), start  # killed before the end, resumed from a checkpoint
    losses = lambda m: [(h["step"], h["train/loss"]) for h in m["history"]]  # noqa: E731
    # CPU fp32, gloo, the same data for each step and restored RNG/optimizer/schedule: identical floats.
    assert losses(resumed) == losses(whole)
    assert [h["train/lr"] for h in resumed["history"]] == [h["train/lr"] for h in whole["history"]]
    assert resumed["val_loss"] == whole["val_loss"]
    assert resumed["tokens_seen"] == whole["tokens_seen"]

    client = MlflowClient(tracking_uri=f"sqlite:///{killed.parent}/mlflow.db")
    assert resumed["mlflow_run_id"] == run_id
    run_info = client.get_run(run_id)
    assert run_info.info.status == "FINISHED" and run_info.data.tags["tokenmill.resumed_at_step"] == str(start)
    logged = {m.step for m in client.get_metric_history(run_id, "train/loss")}
    assert logged == set(range(1, 121))


class Planted:
    """An object whose unpickling runs a command: what a tampered checkpoint could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_checkpoint_holding_arbitrary_objects(pipeline_run, tmp_path):
    import torch

    out = tmp_path / "ckpt"
    run(command(pipeline_run["tokens_manifest"], out, steps=10))
    (states,) = (out / "checkpoints" / "step-0000010").glob("*model_states.pt")
    data = torch.load(states, weights_only=False)  # our own file, trusted here to plant the object
    marker = tmp_path / "executed"
    data["planted"] = Planted(marker)
    torch.save(data, states)

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        command(pipeline_run["tokens_manifest"], out, steps=10), env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0
    assert "Weights only load failed" in done.stdout + done.stderr or "UnpicklingError" in done.stdout + done.stderr
    assert not marker.exists()
