"""Start ``training.train`` on ``train.nproc`` processes with torchrun and follow its output.

Shared by the pipeline flow's train task and ``tokenmill train``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

from tokenmill.env import REPO_ROOT


def command(nproc: int, config_file: Path, tokens_manifest: Path, out_dir: Path, run_id: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "training.train", "--run-config", str(config_file), "--tokens-manifest", str(tokens_manifest),
           "--out-dir", str(out_dir)]
    return cmd + (["--mlflow-run-id", run_id] if run_id else [])


def run(cmd: list[str], on_line: Callable[[str], None]) -> None:
    """Run ``cmd``, passing rank log lines and errors to ``on_line``; raise with the root cause on failure."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    tail: deque[str] = deque(maxlen=60)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          cwd=REPO_ROOT) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if "[rank " in line or "Error" in line:
                on_line(line)
    if proc.returncode != 0:
        raise RuntimeError(f"training exited with code {proc.returncode}: {root_cause(tail)}\n"
                           "last output:\n" + "\n".join(tail))


_EXCEPTION_LINE = re.compile(r"^\s*([\w.]+(Error|Exception|Interrupt|Exit)\b.*)$")


def root_cause(lines) -> str:
    """The last exception line a rank printed (torchrun repeats the root cause's traceback last)."""
    causes = [m.group(1) for m in map(_EXCEPTION_LINE.match, lines) if m and "ChildFailedError" not in m.group(1)]
    return causes[-1] if causes else "no exception message found"
