"""``train.launcher: deepspeed`` for real: one ``tokenmill train`` starts DeepSpeed's launcher, which starts two "nodes"
with pdsh over ssh, as on a cluster; here both are this machine, an sshd of its own on 127.0.0.1 reached as
local-node-0 and local-node-1 (``infra/deepspeed/local-ssh.sh``, brought up here; as root it installs openssh-server
and pdsh with apt-get when they are missing). Two nodes with one rank each train into the stage's MLflow run, with
each node's system metrics, and reach the same losses as one node with two processes under torchrun.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from test_multinode import ENV, REPO_ROOT, assert_two_nodes_trained_like_one, command, one_node_two_processes

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # an sshd, pdsh and DeepSpeed training processes

SSH = REPO_ROOT / "infra" / "deepspeed" / "local-ssh.sh"


def _local_ssh(action: str, state) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENMILL_SSH_DIR": str(state)}
    return subprocess.run(["bash", SSH, action], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def local_ssh(tmp_path_factory):
    """The two ssh "nodes", in a folder of this test session's own (keys, configs, hostfile); stopped after."""
    state = tmp_path_factory.mktemp("ssh")
    up = _local_ssh("up", state)
    if up.returncode != 0:
        _local_ssh("down", state)
        pytest.fail(f"infra/deepspeed/local-ssh.sh up failed (exit {up.returncode}):\n{up.stdout}{up.stderr}")
    yield state
    down = _local_ssh("down", state)
    assert down.returncode == 0, down.stdout + down.stderr


def test_the_deepspeed_launcher_over_ssh_trains_two_nodes_like_one_node_with_two_processes(
    local_ssh, pipeline_run, tmp_path
):
    tokens = pipeline_run["tokens_manifest"]
    single = one_node_two_processes(tokens, tmp_path / "one" / "train")

    # The ranks' environment on the other nodes is what the launcher forwards (PYTHON*, MLFLOW*, ...) and the
    # DeepSpeed env file: one intra-op thread, as ENV gives torchrun's ranks here (see test_multinode).
    ds_env = tmp_path / "deepspeed_env"
    ds_env.write_text("OMP_NUM_THREADS=1\n")
    env = {**ENV, "PATH": f"{local_ssh}/bin{os.pathsep}{os.environ['PATH']}", "DS_ENV_FILE": str(ds_env)}
    logins_before = (local_ssh / "sshd.log").read_text().count("Accepted publickey")

    two = tmp_path / "two" / "train"
    sets = ("train.launcher=deepspeed", f"train.hostfile={local_ssh}/hostfile", "train.nproc=1")
    done = subprocess.run(command(tokens, two, *sets), env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    # pdsh prefixes a node's output with its name (tokenmill shows rank 0's lines only). sshd logged four logins:
    # DeepSpeed's check and `hostname -I` on the first node, then pdsh's session on each node.
    assert "local-node-0: " in output and "[rank 0] step 20/20" in output, output[-5000:]
    assert (local_ssh / "sshd.log").read_text().count("Accepted publickey") - logins_before == 4

    assert_two_nodes_trained_like_one(two, single)
