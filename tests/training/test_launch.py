"""tokenmill.training.launch: the launcher command for one node, several nodes, and DeepSpeed's hostfile launcher;
training.slurm's submit/follow/cancel against stand-in Slurm commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenmill.core.config import TrainConfig
from tokenmill.training.launch import command, root_cause

ARGS = (Path("c.yaml"), Path("tokens.json"), Path("out"), "run123", "demo")


def test_single_node_is_standalone_torchrun():
    cmd = command(TrainConfig(nproc=4), *ARGS)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node=4", "--max-restarts=3"]
    assert "--max-restarts=0" in command(TrainConfig(max_restarts=0), *ARGS)
    assert "--standalone" in cmd and not any(a.startswith("--rdzv") for a in cmd)
    assert cmd[cmd.index("-m", 3) :][:2] == ["-m", "tokenmill.training.train"]
    assert cmd[-2:] == ["--mlflow-run-id", "run123"]


def test_multi_node_torchrun_meets_at_the_rendezvous():
    cmd = command(TrainConfig(nproc=8, nnodes=4, rdzv_endpoint="head:29400"), *ARGS)
    assert {"--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=head:29400", "--rdzv-id=demo"} <= set(cmd)
    assert "--standalone" not in cmd
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        command(TrainConfig(nnodes=2), *ARGS)


def test_deepspeed_launcher_uses_the_hostfile(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-0 slots=8\nnode-1 slots=8\n")
    cmd = command(TrainConfig(launcher="deepspeed", hostfile=str(hostfile), nproc=8), *ARGS)
    assert Path(cmd[0]).name == "deepspeed"
    assert cmd[1:8] == [
        "--hostfile",
        str(hostfile),
        "--num_gpus",
        "8",
        "--no_local_rank",
        "--module",
        "tokenmill.training.train",
    ]
    with pytest.raises(ValueError, match="needs train.hostfile"):
        command(TrainConfig(launcher="deepspeed"), *ARGS)
    with pytest.raises(FileNotFoundError):
        command(TrainConfig(launcher="deepspeed", hostfile=str(tmp_path / "missing")), *ARGS)
    with pytest.raises(ValueError, match="torchrun or deepspeed"):
        command(TrainConfig(launcher="mpirun"), *ARGS)


def test_the_training_script_accepts_what_the_launchers_pass():
    from tokenmill.training.train import parse_args

    cmd = command(TrainConfig(), *ARGS)
    args = parse_args(cmd[cmd.index("tokenmill.training.train") + 1 :])
    assert (args.run_config, args.tokens_manifest, args.out_dir, args.mlflow_run_id) == (
        "c.yaml",
        "tokens.json",
        "out",
        "run123",
    )


def test_root_cause_is_the_last_exception_line():
    lines = [
        "[rank 1] ValueError: first",
        "torch.distributed.elastic.ChildFailedError: x",
        "  RuntimeError: the real one",
        "noise",
    ]
    assert root_cause(lines) == "RuntimeError: the real one"
    assert root_cause(["all fine"]) == "no exception message found"


# --- train.launcher=slurm against stand-in Slurm commands (tests/training/test_slurm.py runs a real one) ---


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch``, ``scontrol``, ``squeue`` and ``scancel`` stand-ins: the job's state is the file ``state``
    (``JobState ExitCode``), each call is appended to ``calls``; ``scancel`` without --signal ends the job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state, calls = tmp_path / "state", tmp_path / "calls"
    state.write_text("RUNNING 0:0")
    scripts = {
        "sbatch": 'echo "sbatch $* RUN_CONFIG=$RUN_CONFIG TOKENS=$TOKENS OUT_DIR=$OUT_DIR '
        'MLFLOW_RUN_ID=$MLFLOW_RUN_ID GPUS_PER_NODE=$GPUS_PER_NODE" >> "$CALLS"; echo "42;cluster"',
        "scontrol": 'read s c < "$STATE"; echo "JobId=$4 JobName=x JobState=$s Reason=None ExitCode=$c"',
        "squeue": 'read s c < "$STATE"; case $s in PENDING|RUNNING|COMPLETING) echo "$s";; esac',
        "scancel": 'echo "scancel $*" >> "$CALLS"; '
        'case $1 in --signal=*) ;; *) echo "CANCELLED 0:15" > "$STATE";; esac',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STATE", str(state))
    monkeypatch.setenv("CALLS", str(calls))
    return state, calls


def test_slurm_submit_passes_the_run_to_the_sbatch_script(fake_slurm, tmp_path):
    from tokenmill.training import slurm

    _, calls = fake_slurm
    train = TrainConfig(launcher="slurm", nnodes=2, nproc=4, slurm_args=["--partition=gpu", "--time=1:00:00"])
    assert slurm.submit(train, Path("/r/config.yaml"), Path("/r/tokens.json"), tmp_path, "run123", "demo") == "42"
    words = calls.read_text().split()
    script = words.index(str(slurm.SBATCH_SCRIPT))
    assert {"--parsable", "--nodes=2", f"--output={tmp_path}/slurm-%j.out", "--job-name=tokenmill-demo"} <= set(
        words[:script]
    )
    assert words[script - 2 : script] == ["--partition=gpu", "--time=1:00:00"]  # last: they win
    env = dict(w.split("=", 1) for w in words[script + 1 :])
    assert env == {
        "RUN_CONFIG": "/r/config.yaml",
        "TOKENS": "/r/tokens.json",
        "OUT_DIR": str(tmp_path),
        "MLFLOW_RUN_ID": "run123",
        "GPUS_PER_NODE": "4",
    }


def test_slurm_follow_streams_the_output_and_names_a_failed_job(fake_slurm, tmp_path):
    from tokenmill.training import slurm

    state, _ = fake_slurm
    (tmp_path / "slurm-7.out").write_text("[rank 0] step 1/9\nRuntimeError: boom\n")
    state.write_text("FAILED 3:0")
    lines: list[str] = []
    with pytest.raises(slurm.SlurmError) as e:
        slurm.follow("7", tmp_path, lines.append, poll_seconds=0.01)
    assert lines == ["[rank 0] step 1/9", "RuntimeError: boom"]
    message = str(e.value)
    assert "Slurm job 7 ended FAILED (exit code 3:0): RuntimeError: boom" in message
    state.write_text("COMPLETED 0:0")
    slurm.follow("7", tmp_path, lines.append, poll_seconds=0.01)  # returns


def test_slurm_cancel_asks_the_ranks_first_then_cancels(fake_slurm):
    from tokenmill.training import slurm

    state, calls = fake_slurm
    slurm.cancel("7", grace_seconds=0.2, poll_seconds=0.05)  # the stand-in ignores TERM: still running
    assert calls.read_text().splitlines() == ["scancel --signal=TERM 7", "scancel 7"]
    assert not slurm.in_queue("7")
    calls.write_text("")
    state.write_text("PENDING 0:0")  # nothing runs yet to checkpoint
    slurm.cancel("7", grace_seconds=0.2, poll_seconds=0.05)
    assert calls.read_text().splitlines() == ["scancel 7"]


def test_launch_dispatches_slurm_and_stopped_carries_the_shell_status(monkeypatch):
    import signal

    from tokenmill.core.config import Config
    from tokenmill.training import launch, slurm

    seen = []
    monkeypatch.setattr(slurm, "run", lambda cfg, *args: seen.append(cfg.train.launcher))
    cfg = Config()
    cfg.train.launcher = "slurm"
    launch.launch(cfg, *ARGS[:4], print)
    assert seen == ["slurm"]
    stopped = launch.Stopped(signal.SIGTERM)
    assert (stopped.code, str(stopped)) == (143, "stopped by SIGTERM")
