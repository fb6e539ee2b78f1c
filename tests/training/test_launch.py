"""tokenmill.training.launch: the launcher command for one node, several nodes, and DeepSpeed's hostfile launcher."""

from __future__ import annotations

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
