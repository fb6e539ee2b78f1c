"""Exact resume after every way a run stops: the whole run killed (SIGKILL), a signal to the CLI (SIGTERM,
SIGINT), one rank killed (torchrun restarts the group). Each continues bit for bit into the same MLflow run,
logging each step once; and a checkpoint is only ever read with ``torch.load(weights_only=True)``."""

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


STEPS = 60


def command(tokens: str, out: Path, steps: int = STEPS, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [
        *extra,
        f"run.output_dir={out.parent}",
        f"train.max_steps={steps}",
        "train.log_every=7",  # stops land inside a logging window, which must survive them
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


ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def read_until(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never came:\n" + "".join(seen[-30:]))


def ranks_of(proc: subprocess.Popen) -> list[psutil.Process]:
    """The training ranks under ``proc``: the processes torchrun gave a ``LOCAL_RANK``."""
    return [p for p in psutil.Process(proc.pid).children(recursive=True) if "LOCAL_RANK" in p.environ()]


def training_processes(out: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]


@pytest.fixture(scope="module")
def whole(pipeline_run, tmp_path_factory):
    """The uninterrupted run every stopped one must equal."""
    out = tmp_path_factory.mktemp("whole") / "train"
    run(command(pipeline_run["tokens_manifest"], out))
    return read_manifest(out / "manifest.json", stage="train")


def assert_same_run(resumed: dict, whole: dict, tracking_uri: str) -> None:
    """Bit-identical losses and learning rates, the same tokens, and each step logged to MLflow once."""
    from mlflow.tracking import MlflowClient

    losses = lambda m: [(h["step"], h["train/loss"]) for h in m["history"]]  # noqa: E731
    # CPU (fp32 or bf16), gloo, the same data for each step and restored RNG/optimizer/schedule: identical floats.
    assert losses(resumed) == losses(whole)
    assert [h["train/lr"] for h in resumed["history"]] == [h["train/lr"] for h in whole["history"]]
    assert [h["train/tokens_seen"] for h in resumed["history"]] == [h["train/tokens_seen"] for h in whole["history"]]
    assert resumed["val_loss"] == whole["val_loss"]
    assert resumed["tokens_seen"] == whole["tokens_seen"]
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = resumed["mlflow_run_id"]
    run_info = client.get_run(run_id)
    assert run_info.info.status == "FINISHED"
    assert not {"error", "tokenmill.stopped"} & set(run_info.data.tags), run_info.data.tags
    for key in ("train/loss", "train/tokens_seen"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert sorted(logged) == [(h["step"], h[key]) for h in whole["history"]], key  # once each, same values


def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(pipeline_run, whole, tmp_path):
    tokens = pipeline_run["tokens_manifest"]
    # Start the run and kill every process of it right after its step-10 checkpoint.
    killed = tmp_path / "killed" / "train"
    proc, seen = start(command(tokens, killed)), []
    read_until(proc, "checkpoint: saved step 10", seen)
    # The CLI, torchrun and every rank (torchrun starts ranks in sessions of their own).
    tree = psutil.Process(proc.pid)
    for p in [tree, *tree.children(recursive=True)]:
        p.kill()
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert not (killed / "manifest.json").exists()
    assert not training_processes(killed)
    run_id = json.loads((killed / "checkpoints" / "run.json").read_text())["mlflow_run_id"]

    run(command(tokens, killed))  # the same command resumes
    resumed = read_manifest(killed / "manifest.json", stage="train")
    start_step = resumed["resumed_at_step"]
    assert start_step in range(10, STEPS, 10), start_step  # killed before the end, resumed from a checkpoint
    assert resumed["mlflow_run_id"] == run_id
    tracking_uri = f"sqlite:///{killed.parent}/mlflow.db"
    assert_same_run(resumed, whole, tracking_uri)
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    assert tags["tokenmill.resumed_at_step"] == str(start_step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_cli_stops_every_process_with_a_checkpoint_and_a_resumable_run(
    pipeline_run, whole, tmp_path, signum
):
    """``kill``, ``timeout``, a container stop (SIGTERM) or Ctrl-C (SIGINT) to ``tokenmill train``: the ranks
    checkpoint at a step boundary, nothing outlives the CLI, which exits 128 + signal; the run is KILLED and the
    same command finishes it as if it had never stopped."""
    from mlflow.tracking import MlflowClient

    tokens = pipeline_run["tokens_manifest"]
    out = tmp_path / "stopped" / "train"
    proc, seen = start(command(tokens, out)), []
    read_until(proc, "checkpoint: saved step 10", seen)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(ranks_of(proc)) == 2  # both ranks, among the processes that must be gone
    proc.send_signal(signum)
    seen += proc.stdout.readlines()
    proc.wait(timeout=300)
    assert proc.returncode == 128 + signum, "".join(seen[-30:])
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not training_processes(out)
    stopped_at = json.loads((out / "checkpoints" / "run.json").read_text())
    assert 10 < stopped_at["step"] < STEPS and stopped_at["step"] % 10, stopped_at  # a step boundary of its own
    tracking_uri = f"sqlite:///{out.parent}/mlflow.db"
    stopped = MlflowClient(tracking_uri=tracking_uri).get_run(stopped_at["mlflow_run_id"])
    assert stopped.info.status == "KILLED"
    assert stopped.data.tags["tokenmill.stopped"] == f"stopped by {signal.Signals(signum).name}"

    run(command(tokens, out))
    resumed = read_manifest(out / "manifest.json", stage="train")
    assert resumed["resumed_at_step"] == stopped_at["step"] and resumed["mlflow_run_id"] == stopped_at["mlflow_run_id"]
    assert_same_run(resumed, whole, tracking_uri)


def test_a_rank_killed_mid_run_is_restarted_by_torchrun_and_resumes_into_the_same_run(pipeline_run, whole, tmp_path):
    """One rank dies (SIGKILL: no checkpoint, no goodbye); torchrun restarts the group (train.max_restarts),
    which resumes from the last checkpoint; one command, one MLflow run, the same losses."""
    tokens = pipeline_run["tokens_manifest"]
    out = tmp_path / "restarted" / "train"
    proc, seen = start(command(tokens, out)), []
    read_until(proc, "checkpoint: saved step 20", seen)
    ranks = ranks_of(proc)
    assert len(ranks) == 2
    ranks[-1].kill()
    seen += proc.stdout.readlines()
    proc.wait(timeout=600)
    assert proc.returncode == 0, "".join(seen[-40:])
    resumed = read_manifest(out / "manifest.json", stage="train")
    assert resumed["resumed_at_step"] in (20, 30), resumed["resumed_at_step"]
    assert_same_run(resumed, whole, f"sqlite:///{out.parent}/mlflow.db")


class Planted:
    """An object whose unpickling runs a command: what a tampered checkpoint could hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_checkpoint_holding_arbitrary_objects(pipeline_run, tmp_path):
    import torch

    out = tmp_path / "ckpt"
    # No restarts: a refused checkpoint fails the same way every time.
    refused = command(pipeline_run["tokens_manifest"], out, steps=10, extra=("train.max_restarts=0",))
    run(refused)
    (states,) = (out / "checkpoints" / "step-0000010").glob("*model_states.pt")
    data = torch.load(states, weights_only=False)  # our own file, trusted here to plant the object
    marker = tmp_path / "executed"
    data["planted"] = Planted(marker)
    torch.save(data, states)

    done = subprocess.run(refused, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "Weights only load failed" in done.stdout + done.stderr or "UnpicklingError" in done.stdout + done.stderr
    assert not marker.exists()


def test_a_checkpoint_resumes_in_the_precision_it_was_trained_in(pipeline_run, tmp_path):
    """precision auto keeps a resumed run's precision, though the nodes it resumes on answer auto otherwise (a rank
    started here with ``native_bf16`` patched); a precision written out that contradicts the checkpoint is refused,
    naming the fix. Ranks are started directly: the CLI starts over when the config changes."""
    from tokenmill.core.config import dump_config, load_config

    rank = tmp_path / "rank.py"
    rank.write_text(
        "import sys\n"
        "from tokenmill.training import distributed, train\n"
        "native = sys.argv.pop(1) == 'bf16'\n"
        "distributed.native_bf16 = lambda dev=None: native\n"
        "sys.exit(train.main(sys.argv[1:]))\n"
    )
    out = tmp_path / "train"
    out.mkdir()

    def train(device: str, steps: int, precision: str = "auto") -> subprocess.CompletedProcess:
        cfg = load_config(
            REPO_ROOT / "conf" / "tiny.yaml",
            [f"train.max_steps={steps}", f"train.precision={precision}", "train.nproc=1", "train.eval_max_blocks=4"],
        )
        dump_config(cfg, out / "config.yaml")
        args = ["--run-config", str(out / "config.yaml"), "--tokens-manifest", pipeline_run["tokens_manifest"]]
        env = {**ENV, "MASTER_PORT": str(29400 + os.getpid() % 500)}
        cmd = [sys.executable, str(rank), device, *args, "--out-dir", str(out)]
        return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    def ran_bf16() -> bool:
        return json.loads((out / "deepspeed_config.json").read_text())["bf16"]["enabled"]

    first = train("bf16", steps=4)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert ran_bf16() and (out / "checkpoints" / "step-0000004" / "precision").read_text() == "bf16\n"

    resumed = train("none", steps=6)  # auto would be fp32 on this "device"
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert read_manifest(out / "manifest.json", stage="train")["resumed_at_step"] == 4
    assert ran_bf16() and "bf16" in (out / "checkpoints" / "step-0000006" / "precision").read_text()

    refused = train("bf16", steps=8, precision="fp32")
    assert refused.returncode != 0
    assert "trained in bf16, and train.precision is fp32: set train.precision=bf16" in refused.stdout + refused.stderr
