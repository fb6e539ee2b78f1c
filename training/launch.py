"""Start ``tokenmill.training.train`` on ``train.nproc`` processes with torchrun and follow its output.

Shared by the pipeline flow's train task and ``tokenmill train``. ``train.launcher: slurm`` submits a Slurm
job instead (``training.slurm``); :func:`launch` chooses.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tokenmill.core.env import REPO_ROOT

log = logging.getLogger("tokenmill.train")

LAUNCHERS = ("torchrun", "deepspeed", "slurm")


class Stopped(Exception):
    """Training was stopped by a signal forwarded to it; ``code`` is the shell's exit status for it (128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.code = signum, 128 + signum


def launch(cfg, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str | None, on_line) -> None:
    """Train ``cfg`` (a ``Config``) with its ``train.launcher``: here (torchrun, deepspeed) or as a Slurm job."""
    if cfg.train.launcher == "slurm":
        from tokenmill.training import slurm

        slurm.run(cfg, config_file, tokens_manifest, out_dir, run_id, on_line)
        return
    cmd = command(cfg.train, config_file, tokens_manifest, out_dir, run_id, cfg.run.name)
    log.info("launching: %s", " ".join(cmd))
    run(cmd, on_line)


def command(
    train, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str | None, run_name: str = "tokenmill"
) -> list[str]:
    """The launcher command line for ``train`` (a ``TrainConfig``):

    - one node: ``torchrun --standalone --nproc-per-node N``;
    - several nodes with torchrun: the same command on every node, meeting at ``train.rdzv_endpoint``
      (c10d rendezvous; ``infra/slurm/train.sbatch`` does this under Slurm);
    - ``train.launcher=deepspeed``: DeepSpeed's launcher, which starts every node of ``train.hostfile`` over ssh.
    """
    script = ["--run-config", str(config_file), "--tokens-manifest", str(tokens_manifest), "--out-dir", str(out_dir)]
    script += ["--mlflow-run-id", run_id] if run_id else []
    if train.launcher == "deepspeed":
        if not train.hostfile:
            raise ValueError("train.launcher=deepspeed needs train.hostfile (see infra/deepspeed/hostfile.example)")
        if not Path(train.hostfile).is_file():
            raise FileNotFoundError(f"train.hostfile {train.hostfile} does not exist")
        deepspeed = Path(sys.executable).with_name("deepspeed")
        return [
            str(deepspeed),
            "--hostfile",
            str(train.hostfile),
            "--num_gpus",
            str(train.nproc),
            "--no_local_rank",
            "--module",
            "tokenmill.training.train",
            *script,
        ]
    if train.launcher != "torchrun":
        raise ValueError(f"train.launcher must be torchrun or deepspeed, got {train.launcher!r}")
    run = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={train.nproc}"]
    if train.nnodes > 1:
        if not train.rdzv_endpoint:
            raise ValueError(
                f"train.nnodes={train.nnodes} needs train.rdzv_endpoint=host:port (a node all of them "
                "reach); start the same command on every node"
            )
        run += [
            f"--nnodes={train.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={train.rdzv_endpoint}",
            f"--rdzv-id={run_name}",
        ]
    else:
        run += ["--standalone"]
    return [*run, "-m", "tokenmill.training.train", *script]


def run(cmd: list[str], on_line: Callable[[str], None]) -> None:
    """Run ``cmd``, passing rank log lines and errors to ``on_line``; raise with the root cause on failure."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT
    ) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if "[rank " in line or "Error" in line:
                on_line(line)
    if proc.returncode != 0:
        raise RuntimeError(
            f"training exited with code {proc.returncode}: {root_cause(tail)}\nlast output:\n" + "\n".join(tail)
        )


_EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Interrupt|Exit)\b.*)$")


def root_cause(lines) -> str:
    """The last exception line a rank printed (torchrun repeats the root cause's traceback last)."""
    causes = [m.group(1) for m in map(_EXCEPTION_LINE.match, lines) if m and "ChildFailedError" not in m.group(1)]
    return causes[-1] if causes else "no exception message found"
