"""A real multi-node rendezvous on one machine: two ``tokenmill train`` commands, each a torchrun agent with one
rank (``train.nnodes=2``), meet at a c10d rendezvous on 127.0.0.1, as the docs tell a user to start them on two
hosts; they train into one MLflow run, with each node's system metrics, and the same losses as one node with two
processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tokenmill.core.manifest import read_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # DeepSpeed training processes

# One intra-op thread per rank, as torchrun sets when it starts several ranks per node: with one rank per node it
# leaves the default, and two threads sum a matmul in another order (losses then differ in the 8th digit).
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def command(tokens: str, out: Path, *sets: str) -> list[str]:
    sets = (
        f"run.output_dir={out.parent}",
        "train.max_steps=20",
        "train.log_every=5",
        "tracking.register_model=false",
        *sets,
    )
    cmd = [sys.executable, "-m", "tokenmill.cli", "train", "--config", str(REPO_ROOT / "conf" / "tiny.yaml")]
    return [*cmd, *[x for s in sets for x in ("--set", s)], "--tokens", tokens, "--out", str(out)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_node_two_processes(tokens: str, out: Path) -> dict:
    """The reference: torchrun on one node with two ranks; returns its train manifest."""
    done = subprocess.run(
        command(tokens, out, "train.nproc=2", "tracking.system_metrics=false"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_manifest(out / "manifest.json", stage="train")


def test_two_torchrun_agents_as_two_nodes_train_like_one_node_with_two_processes(pipeline_run, tmp_path):
    tokens = pipeline_run["tokens_manifest"]
    single = one_node_two_processes(tokens, tmp_path / "one" / "train")

    two = tmp_path / "two" / "train"  # the folder both "nodes" share, as shared storage would be
    node = command(tokens, two, "train.nproc=1", "train.nnodes=2", f"train.rdzv_endpoint=127.0.0.1:{free_port()}")
    agents = [
        subprocess.Popen(node, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in "ab"
    ]
    outputs = [a.communicate(timeout=600)[0] for a in agents]
    for agent, output in zip(agents, outputs, strict=True):
        assert agent.returncode == 0, output[-3000:]

    assert_two_nodes_trained_like_one(two, single)


def assert_two_nodes_trained_like_one(two, single: dict) -> None:
    """The 2-node run in ``two`` (a train folder) has the 1 node × 2 processes run's losses, bit for bit, in one
    FINISHED MLflow run (both nodes' commands joined it) holding each node's system metrics."""
    from mlflow.tracking import MlflowClient

    multi = read_manifest(two / "manifest.json", stage="train")
    assert multi["world_size"] == 2
    # The same global batch, sliced over the same two ranks, summed by gloo: the same floats.
    assert [(h["step"], h["train/loss"]) for h in multi["history"]] == [
        (h["step"], h["train/loss"]) for h in single["history"]
    ]
    assert multi["val_loss"] == single["val_loss"]
    client = MlflowClient(tracking_uri=f"sqlite:///{two.parent}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.run_id for r in runs] == [multi["mlflow_run_id"]]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.world_size"] == "2"
    # Each node's system metrics, sampled by its own first rank, under its node rank.
    nodes = {k.split("/")[1] for k in runs[0].data.metrics if k.startswith("system/")}
    assert nodes == {"node_0", "node_1"}, sorted(runs[0].data.metrics)
